"""Whole training runs on the real Fashion-MNIST: fastshallow's fs.train (fused kernels) beside
the same algorithm in NumPy and PyTorch (preloaded tensors; DataLoader), in one run.

    python -m pytest benches/bench_training.py --benchmark-only -q \\
        --benchmark-columns=median,iqr,rounds --benchmark-group-by=group

Groups: ``softmax-10-epochs`` (the book's recipe, 10 epochs with per-epoch train and test
accuracy), ``softmax-1-epoch`` (fastshallow on 1 and 2 threads, NumPy, PyTorch),
``linreg-1e6x100-epoch`` (one epoch of minibatch SGD for linear regression), and
``book-linreg-1000x2`` (the book's first training run, 3 epochs of batch 10: the per-batch
Python loop and fs.train_epoch beside the same loop in NumPy and PyTorch).  Each benchmark
records its final test accuracy (or loss) in ``extra_info``; the accuracy of every contender is
checked to be within 0.01 of fastshallow's (averaged over three seeds).  The implementations live in ``fastshallow.bench``
(``fastshallow bench`` prints the same comparison as a table).
"""
from __future__ import annotations

import numpy as np
import pytest

from fastshallow import bench as B

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


@pytest.fixture(scope="module")
def data():
    return B.fashion_arrays()


@pytest.fixture(scope="module")
def data_f32(data):
    Xtr, ytr, Xte, yte = data
    return Xtr.astype(np.float32) / 255, ytr, Xte.astype(np.float32) / 255, yte


@pytest.fixture(scope="module")
def loaders():
    return B.fashion_loaders()


@pytest.fixture(scope="module")
def reference_accuracy():
    """fastshallow's test accuracy averaged over three seeds: single runs of the book's recipe
    spread by about +-0.007 with the seed, in any framework."""
    return float(np.mean([B.fastshallow_softmax(B.fashion_loaders(s), 10, seed=s)
                          for s in (0, 1, 2)]))


def _record(benchmark, acc, reference=None):
    benchmark.extra_info["test_accuracy"] = acc
    if reference is not None:
        assert abs(acc - reference) <= 0.01, (acc, reference)


@pytest.mark.benchmark(group="softmax-10-epochs")
def test_fastshallow_10_epochs(benchmark, loaders):
    acc = benchmark.pedantic(B.fastshallow_softmax, (loaders, 10), rounds=5, warmup_rounds=1)
    _record(benchmark, acc)
    assert acc >= 0.815


@pytest.mark.benchmark(group="softmax-10-epochs")
def test_numpy_10_epochs(benchmark, data_f32, reference_accuracy):
    acc = benchmark.pedantic(B.numpy_softmax, (data_f32, 10), rounds=5, warmup_rounds=1)
    _record(benchmark, acc, reference_accuracy)


@needs_torch
@pytest.mark.benchmark(group="softmax-10-epochs")
def test_torch_preloaded_10_epochs(benchmark, data_f32, reference_accuracy):
    acc = benchmark.pedantic(B.torch_preloaded_softmax, (data_f32, 10), rounds=5,
                             warmup_rounds=1)
    _record(benchmark, acc, reference_accuracy)


@needs_torch
@pytest.mark.benchmark(group="softmax-1-epoch")
def test_torch_dataloader_1_epoch(benchmark, data_f32):
    acc = benchmark.pedantic(B.torch_dataloader_softmax, (data_f32, 1), rounds=3,
                             warmup_rounds=1)
    _record(benchmark, acc)


@needs_torch
@pytest.mark.benchmark(group="softmax-1-epoch")
def test_torch_preloaded_1_epoch(benchmark, data_f32):
    _record(benchmark, benchmark.pedantic(B.torch_preloaded_softmax, (data_f32, 1), rounds=5,
                                          warmup_rounds=1))


@pytest.mark.benchmark(group="softmax-1-epoch")
def test_numpy_1_epoch(benchmark, data_f32):
    _record(benchmark, benchmark.pedantic(B.numpy_softmax, (data_f32, 1), rounds=5,
                                          warmup_rounds=1))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.benchmark(group="softmax-1-epoch")
def test_fastshallow_1_epoch(benchmark, loaders, threads):
    acc = benchmark.pedantic(B.fastshallow_softmax, (loaders, 1),
                             {"num_threads": threads}, rounds=15, warmup_rounds=1)
    _record(benchmark, acc)


@pytest.fixture(scope="module")
def regression():
    return B.linreg_data()


@pytest.mark.benchmark(group="linreg-1e6x100-epoch")
def test_fastshallow_linreg_epoch(benchmark, regression):
    loss = benchmark.pedantic(B.fastshallow_linreg_epoch, regression, rounds=7, warmup_rounds=1)
    benchmark.extra_info["loss"] = loss


@pytest.mark.benchmark(group="linreg-1e6x100-epoch")
def test_numpy_linreg_epoch(benchmark, regression):
    loss = benchmark.pedantic(B.numpy_linreg_epoch, regression, rounds=5, warmup_rounds=1)
    benchmark.extra_info["loss"] = loss


@pytest.fixture(scope="module")
def book_data():
    return B.book_linreg_data()


def _book(benchmark, fn, book_data, rounds=41, **kw):
    # Fixed rounds: each run takes milliseconds, and the machine's noise comes in bursts.
    loss = benchmark.pedantic(fn, book_data, kw, rounds=rounds, warmup_rounds=3)
    benchmark.extra_info["loss"] = loss
    assert loss < 1e-4  # the noise floor is 0.5 * 0.01**2 = 5e-5


@pytest.mark.benchmark(group="book-linreg-1000x2")
def test_fastshallow_book_loop(benchmark, book_data):
    _book(benchmark, B.fastshallow_book_loop, book_data)


@pytest.mark.benchmark(group="book-linreg-1000x2")
def test_fastshallow_book_fused(benchmark, book_data):
    _book(benchmark, B.fastshallow_book_fused, book_data)


@pytest.mark.benchmark(group="book-linreg-1000x2")
def test_numpy_book_loop(benchmark, book_data):
    _book(benchmark, B.numpy_book_loop, book_data)


@needs_torch
@pytest.mark.benchmark(group="book-linreg-1000x2")
def test_torch_book_loop(benchmark, book_data):
    _book(benchmark, B.torch_book_loop, book_data, rounds=11)
