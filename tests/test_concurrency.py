"""Python threads and the compiled kernels.

1. The kernels release the GIL.  Timing two kernels against one is not robust on a shared
   2-core machine, so this measures the property itself: while one thread is inside a long
   kernel call (num_threads=1), a second thread runs a pure-Python loop that needs the GIL and
   timestamps every iteration.  Released GIL: the ticks keep coming during the call, with gaps
   of a scheduler quantum at most.  Held GIL: no tick at all between entering and leaving the
   kernel, one gap as long as the call.  The test asserts the largest gap inside the call is a
   small fraction of it, whatever the machine's speed or load.
2. Several threads training separate models at once (fused and per-batch paths, one and two
   OpenMP threads each) give bit-identical results to training them one at a time.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import fastshallow as fs
from fastshallow import kernels as K
from fastshallow import losses, nn, optim

from conftest import assert_bits_equal


def _calls_with_ticks(call, repeats):
    """Run `call()` `repeats` times in a worker thread while this thread ticks in a Python
    loop (every iteration needs the GIL).  Returns (the fraction of calls during whose middle
    half at least one tick happened, the shortest call)."""
    ticks = []
    calls = []
    go = threading.Event()

    def worker():
        go.wait()
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            calls.append((t0, time.perf_counter()))

    th = threading.Thread(target=worker)
    th.start()
    go.set()
    while th.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(2e-4)  # leave the CPU to the kernel on a busy machine; needs the GIL back
    th.join()
    ticks = np.array(ticks)
    hit = 0
    for t0, t1 in calls:
        # The middle half: a held GIL can still let a tick in just after t0 (before the
        # compiled code starts) or just before t1, never in the middle.
        lo, hi = t0 + 0.25 * (t1 - t0), t1 - 0.25 * (t1 - t0)
        hit += bool(((ticks > lo) & (ticks < hi)).any())
    return hit / len(calls), min(t1 - t0 for t0, t1 in calls)


def _long_call(name):
    """One kernel call of roughly 0.1 - 0.3 s on one thread here (longer in debug builds);
    the inputs are made only for the kernel asked for."""
    rng = np.random.default_rng(0)
    if name in ("matmul_bias", "matmul_bias_backward"):
        X = rng.standard_normal((3000, 2000)).astype(np.float32)
        if name == "matmul_bias":
            W = rng.standard_normal((2000, 256)).astype(np.float32)
            return lambda: K.matmul_bias(X, W, None, num_threads=1)
        G = rng.standard_normal((3000, 128)).astype(np.float32)
        return lambda: K.matmul_bias_backward(X, G, num_threads=1)
    if name in ("softmax_cross_entropy", "log_softmax"):
        Z = rng.standard_normal((30000, 200))
        y = rng.integers(0, 200, 30000)
        if name == "log_softmax":
            return lambda: K.log_softmax(Z, num_threads=1)
        return lambda: K.softmax_cross_entropy(Z, y, num_threads=1)
    if name == "gather_rows":
        src = rng.integers(0, 256, (60000, 784), dtype=np.uint8)
        idx = rng.integers(0, 60000, 30000)
        return lambda: K.gather_rows(src, idx, scale=1 / 255, num_threads=1)
    assert name == "sgd_update"
    p, g, v = (np.ones(16_000_000, np.float32) for _ in range(3))
    return lambda: K.sgd_update(p, g, 1e-9, 1, 0.5, 1e-4, velocity=v, num_threads=1)


KERNELS = ["matmul_bias", "matmul_bias_backward", "softmax_cross_entropy", "log_softmax",
           "gather_rows", "sgd_update"]


def _assert_gil_free(what, call):
    t0 = time.perf_counter()
    call()
    one = time.perf_counter() - t0
    repeats = int(min(12, max(6, 0.3 / one)))
    frac, shortest = _calls_with_ticks(call, repeats)
    assert shortest > 0.005, f"{what}: a call took {shortest * 1e3:.1f} ms, too short to tell"
    # Held GIL: no tick in the middle of any call.  Released: a tick in nearly every call;
    # half leaves room for a busy machine that starves the ticking thread now and then.
    assert frac >= 0.5, f"{what}: Python ran during only {frac:.0%} of {repeats} calls"


def test_the_measurement_sees_a_held_gil():
    """Control: a C call that keeps the GIL (the builtin sum over a range never lets go) is
    recognised as such by the same measurement."""
    n = 1_000_000
    while True:
        t0 = time.perf_counter()
        sum(range(n))
        if time.perf_counter() - t0 > 0.1:
            break
        n *= 2
    frac, _ = _calls_with_ticks(lambda: sum(range(n)), 8)
    # At most one call may let a tick in (the thread switch just before the C call starts
    # can be delayed by the OS); kernels must show ticks in at least half.
    assert frac <= 1 / 8


@pytest.mark.parametrize("name", KERNELS)
def test_kernels_release_the_gil(name):
    _assert_gil_free(name, _long_call(name))


def test_fused_training_releases_the_gil():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 256, (30000, 784), dtype=np.uint8)
    ds = fs.ArrayDataset(X, rng.integers(0, 10, 30000))
    loader = fs.DataLoader(ds, 30000, shuffle=True, seed=0)   # one batch: one compiled call
    net = nn.Dense(10, in_units=784, rng=0)
    trainer = optim.SGD(net.parameters(), lr=1e-3)
    loss = losses.SoftmaxCrossEntropyLoss()
    _assert_gil_free("fused training", lambda: fs.train_epoch(net, loader, loss, trainer,
                                                              fused=True, num_threads=1))


# ---- separate models trained at the same time --------------------------------------------------

def _job(seed: int, fused, num_threads: int, classify: bool):
    """Build and train one model; returns its final parameters and history."""
    rng = np.random.default_rng(seed)
    if classify:
        X = rng.integers(0, 256, (1500, 64), dtype=np.uint8) if seed % 2 else \
            rng.standard_normal((1500, 64)).astype(np.float32)
        y = rng.integers(0, 7, 1500)
        net = nn.Sequential(nn.Flatten(), nn.Dense(7, in_units=64, rng=seed))
        loss = losses.SoftmaxCrossEntropyLoss(label_smoothing=0.05 * (seed % 3))
    else:
        X = rng.standard_normal((1500, 20))
        y = X @ rng.standard_normal(20) + 0.1 * rng.standard_normal(1500)
        net = nn.Dense(1, in_units=20, dtype=np.float64, rng=seed)
        loss = losses.HuberLoss(1.0) if seed % 2 else losses.L2Loss()
    trainer = optim.SGD(net.parameters(), lr=0.01 if classify else 0.05,
                        momentum=0.5 * (seed % 2), weight_decay=1e-4 * (seed % 3))
    loader = fs.load_array((X, y), 64, seed=seed)
    test = fs.load_array((X[:500], y[:500]), 256, is_train=False)
    h = fs.train(net, loader, test if classify else None, loss, 3, trainer, fused=fused,
                 verbose=False, progress=False, num_threads=num_threads)
    return [p.data.copy() for p in net.parameters()], h


@pytest.mark.parametrize("num_threads", [1, 2])
@pytest.mark.parametrize("fused", [None, False], ids=["fused", "loop"])
def test_models_trained_in_parallel_threads_match_sequential_bits(fused, num_threads):
    jobs = [(seed, classify) for seed in range(3) for classify in (True, False)]
    alone = [_job(s, fused, num_threads, c) for s, c in jobs]
    results = [None] * len(jobs)
    errors = []
    barrier = threading.Barrier(len(jobs))

    def run(i, seed, classify):
        try:
            barrier.wait()
            results[i] = _job(seed, fused, num_threads, classify)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, s, c)) for i, (s, c) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (seed, classify), (p1, h1), (p2, h2) in zip(jobs, alone, results):
        assert h1.fused == h2.fused == (fused is None)
        for a, b in zip(p1, p2):
            assert_bits_equal(a, b, f"seed {seed}, classify {classify}")
        for k in ("train_loss", "train_acc", "test_acc"):
            assert np.array_equal(getattr(h1, k), getattr(h2, k), equal_nan=True), k


def test_kernels_called_from_many_threads_at_once_are_right():
    """The same kernels from 8 threads at once, with OpenMP teams inside each: every result
    equals the one-thread result, bit for bit."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((700, 300))
    W = rng.standard_normal((300, 17))
    b = rng.standard_normal(17)
    Z = rng.standard_normal((3000, 10)) * 50
    y = rng.integers(0, 10, 3000)
    idx = rng.integers(0, 700, 5000)
    ref = (K.matmul_bias(X, W, b, num_threads=1), K.softmax_cross_entropy(Z, y, num_threads=1),
           K.gather_rows(X, idx, num_threads=1))
    out = [None] * 8
    barrier = threading.Barrier(8)

    def run(i):
        barrier.wait()
        res = []
        for _ in range(5):
            res = (K.matmul_bias(X, W, b, num_threads=1 + i % 3),
                   K.softmax_cross_entropy(Z, y, num_threads=1 + i % 2),
                   K.gather_rows(X, idx, num_threads=2))
        out[i] = res

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for res in out:
        assert_bits_equal(res[0], ref[0])
        assert_bits_equal(res[1][0], ref[1][0])
        assert_bits_equal(res[1][1], ref[1][1])
        assert_bits_equal(res[2], ref[2])
