"""The Fashion-MNIST data layer: one epoch of minibatches, and loading the files.

    python -m pytest benches/bench_data.py --benchmark-only -q \\
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name

Groups:

- ``fashion-epoch-batch256``: one shuffled epoch over the 60000 training images as (256, 1, 28,
  28) float32 batches in [0, 1] with int64 labels, three ways:
  ``fastshallow-loader`` (``load_data_fashion_mnist(256)``: one compiled gather + scale per
  batch), ``numpy-fancy-index`` (``data[idx] / 255`` per batch), ``book-per-sample`` (a dataset
  whose ``__getitem__`` converts one image, and a loader that stacks 256 of them, as the book's
  Gluon pipeline does).
  ``torch-dataloader-per-sample`` is the same per-example dataset batched by PyTorch's
  ``DataLoader`` (its default collate).  ``book-torchvision-pipeline`` is the book's PyTorch
  pipeline itself: ``torchvision.datasets.FashionMNIST`` with ``transforms.ToTensor()`` in a
  ``DataLoader(batch_size=256, shuffle=True, num_workers=4)`` -- per example, a PIL image made
  from the uint8 array, then ToTensor on it, as torchvision does (re-created here line for line,
  since torchvision's wheels do not import beside the CPU build of PyTorch used here; the book's
  4 worker processes are faster on this machine than none).  Both run only when PyTorch (and,
  for the second, Pillow) is installed.
- ``fashion-epoch-resize64``: the same epoch resized to 64x64 (``resize=64``), for reference.
- ``fashion-load``: building the train and test datasets from the gzip files (the first load:
  decompress, verify the sha256, write the decoded cache) and from the decoded cache.

The real files are needed (Debian's dataset-fashion-mnist or ``$FASTSHALLOW_DATA``); the
benchmarks use a private temporary cache and never reach the network.
"""
from __future__ import annotations

import numpy as np
import pytest

try:  # PyTorch and Pillow are optional: without them only their cases are skipped.
    import torch
except ImportError:
    torch = None
try:
    from PIL import Image
except ImportError:
    Image = None

from fastshallow.datasets import FashionMNIST, ToTensor, load_data_fashion_mnist
from fastshallow.datasets import _download

BATCH = 256
# Fixed round counts: the automatic calibration picks very few rounds when the first one is
# slow (a busy machine), and a median over 5 rounds says little.
ROUNDS = 30


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("bench-fashion")
    mp.setenv("HOME", str(tmp / "home"))
    mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
    mp.setenv("FASTSHALLOW_MIRRORS", "")
    yield tmp
    mp.undo()


@pytest.fixture(scope="module")
def train(private_cache):
    ds = FashionMNIST(train=True)
    np.asarray(ds.data).sum()  # touch every page once, so no implementation pays the faults
    return ds


def _consume(loader):
    n = 0
    for X, y in loader:
        n += len(y)
    return n


# ---- one epoch --------------------------------------------------------------------------------

@pytest.mark.benchmark(group="fashion-epoch-batch256")
def test_epoch_fastshallow_loader(benchmark, train):
    train_iter, _ = load_data_fashion_mnist(BATCH, seed=0)
    X, y = next(iter(train_iter))
    assert X.shape == (BATCH, 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int64
    assert benchmark.pedantic(_consume, args=(train_iter,), rounds=ROUNDS,
                              warmup_rounds=2) == 60000


class BookDataset:
    """The book's pipeline, per example: ToTensor on one image, then the label."""

    def __init__(self, ds):
        self.data, self.targets = ds.data, ds.targets
        self.to_tensor = ToTensor()

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.to_tensor(self.data[i]), self.targets[i]


def book_epoch(ds, rng):
    order = rng.permutation(len(ds))
    n = 0
    for start in range(0, len(order), BATCH):
        items = [ds[i] for i in order[start:start + BATCH]]
        X = np.stack([it[0] for it in items])
        y = np.array([it[1] for it in items], dtype=np.int64)
        n += len(y)
    return n


@pytest.mark.benchmark(group="fashion-epoch-batch256")
def test_epoch_book_per_sample(benchmark, train):
    ds, rng = BookDataset(train), np.random.default_rng(0)
    X, y = ds[3]
    np.testing.assert_array_equal(X, train.transform_first(ToTensor())[3][0])
    assert benchmark.pedantic(book_epoch, args=(ds, rng), rounds=5, warmup_rounds=1) == 60000


def torch_epoch(loader):
    n = 0
    for X, y in loader:
        n += len(y)
    return n


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
@pytest.mark.benchmark(group="fashion-epoch-batch256")
def test_epoch_torch_dataloader_per_sample(benchmark, train):
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(BookDataset(train), batch_size=BATCH, shuffle=True)
    X, y = next(iter(loader))
    assert X.shape == (BATCH, 1, 28, 28) and X.dtype == torch.float32 and y.dtype == torch.int64
    assert benchmark.pedantic(torch_epoch, args=(loader,), rounds=5, warmup_rounds=1) == 60000


class TorchvisionFashionMNIST(torch.utils.data.Dataset if torch is not None else object):
    """What ``torchvision.datasets.FashionMNIST(..., transform=transforms.ToTensor())`` does
    per example (torchvision 0.28: ``MNIST.__getitem__``, then ``to_tensor`` on a PIL image)."""

    def __init__(self, ds):
        self.data = torch.from_numpy(np.array(ds.data))        # uint8 (N, 28, 28), as torchvision
        self.targets = torch.from_numpy(np.array(ds.targets))  # int64 (N,)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        img, target = self.data[index], int(self.targets[index])
        pic = Image.fromarray(img.numpy())  # mode "L" for a 2-D uint8 array
        # transforms.ToTensor(): copy the PIL pixels, HWC -> CHW, to float, divide by 255.
        t = torch.from_numpy(np.array(pic, np.uint8, copy=True))
        t = t.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
        return t.to(dtype=torch.get_default_dtype()).div(255), target


@pytest.mark.skipif(torch is None or Image is None, reason="PyTorch or Pillow is not installed")
@pytest.mark.filterwarnings("ignore:This DataLoader will create 4 worker processes")
@pytest.mark.benchmark(group="fashion-epoch-batch256")
def test_epoch_book_torchvision_pipeline(benchmark, train):
    ds = TorchvisionFashionMNIST(train)
    X, y = ds[3]
    # Dividing by 255 and multiplying by float32(1/255) differ in the last bit here and there.
    np.testing.assert_allclose(X.numpy(), train.transform_first(ToTensor())[3][0], rtol=1e-6)
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=4)
    assert benchmark.pedantic(torch_epoch, args=(loader,), rounds=5, warmup_rounds=1) == 60000


def numpy_epoch(data, targets, rng):
    order = rng.permutation(len(targets))
    n = 0
    for start in range(0, len(order), BATCH):
        idx = order[start:start + BATCH]
        X = (data[idx] / np.float32(255)).reshape(-1, 1, 28, 28)
        y = targets[idx]
        n += len(y)
    return n


@pytest.mark.benchmark(group="fashion-epoch-batch256")
def test_epoch_numpy_fancy_index(benchmark, train):
    data, targets = np.asarray(train.data), train.targets
    assert benchmark.pedantic(numpy_epoch, args=(data, targets, np.random.default_rng(0)),
                              rounds=ROUNDS, warmup_rounds=2) == 60000


@pytest.mark.benchmark(group="fashion-epoch-resize64")
def test_epoch_fastshallow_loader_resize64(benchmark, train):
    train_iter, _ = load_data_fashion_mnist(BATCH, resize=64, seed=0)
    assert next(iter(train_iter))[0].shape == (BATCH, 1, 64, 64)
    assert benchmark.pedantic(_consume, args=(train_iter,), rounds=5, warmup_rounds=1) == 60000


# ---- loading ----------------------------------------------------------------------------------

def _load_both():
    return FashionMNIST(train=True), FashionMNIST(train=False)


@pytest.mark.benchmark(group="fashion-load")
def test_first_load_from_gz(benchmark, private_cache, monkeypatch):
    counter = iter(range(10**6))

    def fresh_cache():
        # A new empty cache every round: the files come from the gzip copies.
        monkeypatch.setenv("XDG_CACHE_HOME", str(private_cache / f"fresh-{next(counter)}"))
        return (), {}

    tr, te = benchmark.pedantic(_load_both, setup=fresh_cache, rounds=5, warmup_rounds=0)
    assert len(tr) == 60000 and len(te) == 10000
    assert not any(src.endswith("(decoded cache)") for src in tr.files.values())


@pytest.mark.benchmark(group="fashion-load")
def test_cached_load(benchmark, train):
    tr, te = benchmark(_load_both)
    assert all(src.endswith("(decoded cache)") for src in {**tr.files, **te.files}.values())
    assert str(_download.cache_dir()) in tr.files["train-images-idx3-ubyte"]
