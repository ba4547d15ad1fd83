"""Fashion-MNIST on the real files (marked `fashion`: they fail, not skip, when the data is
missing), the image transforms against independent references, and argument checking."""
from __future__ import annotations

import gzip
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import fastshallow.datasets as fsd
from fastshallow.datasets import (
    Compose,
    FashionMNIST,
    Resize,
    ToTensor,
    get_fashion_mnist_labels,
    load_data_fashion_mnist,
)
from fastshallow.data import ArrayDataset, DataLoader
from fastshallow.data import load_array as fs_load_array
from fastshallow.datasets.transforms import resize_bilinear

SCALE = np.float32(1 / 255)
# Where the `fashion` tests' real files are (see the fashion_cache fixture).
REAL_DATA = os.environ.get("FASTSHALLOW_DATA") or "/usr/share/datasets/fashion-mnist"
REAL_TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# ---- real data ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def train(fashion_cache):
    return FashionMNIST(train=True)


@pytest.fixture(scope="module")
def test(fashion_cache):
    return FashionMNIST(train=False)


@pytest.mark.fashion
def test_sizes_and_class_balance(train, test):
    assert len(train) == 60000 and len(test) == 10000
    assert train.data.shape == (60000, 28, 28) and train.data.dtype == np.uint8
    assert test.data.shape == (10000, 28, 28)
    assert train.targets.dtype == np.int64 and train.targets.shape == (60000,)
    np.testing.assert_array_equal(np.bincount(train.targets, minlength=10), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(test.targets, minlength=10), [1000] * 10)
    assert train.classes == ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal",
                             "shirt", "sneaker", "bag", "ankle boot"]


@pytest.mark.fashion
def test_first_examples(train):
    np.testing.assert_array_equal(train.targets[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    X, y = train[:18]
    assert X.shape == (18, 28, 28) and X.dtype == np.uint8
    assert y.shape == (18,) and y.dtype == np.int64
    img, label = train[0]
    assert img.shape == (28, 28) and label == 9 and type(label) is int
    assert get_fashion_mnist_labels(y[:3]) == ["ankle boot", "t-shirt", "t-shirt"]


@pytest.mark.fashion
def test_decoded_cache_serves_later_loads(train, fashion_cache):
    assert str(fashion_cache) in FashionMNIST(train=True).files["train-images-idx3-ubyte"]
    again = FashionMNIST(train=True)
    assert all(src.endswith("(decoded cache)") for src in again.files.values())
    np.testing.assert_array_equal(again.data[::997], train.data[::997])


@pytest.mark.fashion
def test_images_are_read_only_arrays_in_the_process_memory(train, test):
    """Copied out of the decoded cache's memory map (where random rows cost a TLB miss each on
    4 KB pages), still read-only as the files are."""
    for images in (train.data, test.data):
        assert type(images) is np.ndarray and images.flags.owndata
        assert not images.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            images[0, 0, 0] = 1


@pytest.mark.fashion
def test_loaders_shapes_and_lengths(fashion_cache):
    train_iter, test_iter = load_data_fashion_mnist(256)
    assert len(train_iter) == 235 and len(test_iter) == 40
    X, y = next(iter(test_iter))
    assert X.shape == (256, 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int64
    train_iter, test_iter = load_data_fashion_mnist(32, resize=64)
    for it in (train_iter, test_iter):
        X, y = next(iter(it))
        assert X.shape == (32, 1, 64, 64) and X.dtype == np.float32
        assert y.shape == (32,) and y.dtype == np.int64
        assert 0 <= X.min() and X.max() <= 1


@pytest.mark.fashion
def test_batches_equal_the_books_per_example_transform(train):
    fast = train.transform_first(ToTensor())
    slow = train.transform_first(lambda img: ToTensor()(img))  # not recognised: per example
    idx = np.array([0, 59999, 123, 123, 40000], np.int64)
    Xf, yf = fast.get_batch(idx)
    Xs, ys = slow.get_batch(idx)
    np.testing.assert_array_equal(Xf, Xs)
    np.testing.assert_array_equal(yf, ys)
    np.testing.assert_array_equal(Xf[1, 0], train.data[59999] * SCALE)


@pytest.mark.fashion
def test_loader_batches_kept_by_the_caller_stay_intact(test, fashion_cache):
    _, test_iter = load_data_fashion_mnist(1000)
    kept = list(test_iter)
    flat = test.data.reshape(len(test), 1, 28, 28).astype(np.float32) * SCALE
    for i, (X, y) in enumerate(kept):
        np.testing.assert_array_equal(X, flat[1000 * i:1000 * (i + 1)])
        np.testing.assert_array_equal(y, test.targets[1000 * i:1000 * (i + 1)])


@pytest.mark.fashion
def test_pixels_shorter_than_labels_give_an_error_not_a_crash(fashion_cache):
    ds = FashionMNIST(train=False)
    ds.data = ds.data[:1000]  # subset the images and forget the labels
    images = ds.transform_first(ToTensor())
    with pytest.raises(ValueError, match=r"indices must be in \[0, 1000\)"):
        images.get_batch([5000])
    with pytest.raises(ValueError, match=r"in \[0, 1000\)"):
        for _ in DataLoader(images, 256):
            pass


@pytest.mark.fashion
def test_an_epoch_keeps_the_arrays_it_started_with(fashion_cache):
    # The loader checks the pixels once an epoch, then gathers unchecked: new, shorter arrays
    # given to the dataset mid-epoch must neither be read past their end nor mix into the epoch.
    ds = FashionMNIST(train=False)
    images = ds.transform_first(ToTensor())
    full = images.get_batch(np.arange(len(ds)))
    loader = DataLoader(images, 1000, shuffle=True, seed=3)
    order = DataLoader(images, 1000, shuffle=True, seed=3).epoch_order()
    seen = 0
    for i, (X, y) in enumerate(loader):
        idx = order[seen:seen + len(y)]
        np.testing.assert_array_equal(X, full[0][idx])
        np.testing.assert_array_equal(y, full[1][idx])
        seen += len(y)
        if i == 0:
            ds.data, ds.targets = ds.data[:100].copy(), ds.targets[:100].copy()
    assert seen == 10000
    assert sum(len(y) for _, y in loader) == 100  # the next epoch sees the new arrays


@pytest.mark.fashion
@pytest.mark.parametrize("how", ["resize", "strided pixels"])
def test_arrays_shrunk_mid_epoch_raise_where_the_epoch_is_not_kept(how, fashion_cache):
    # Epochs that gather batch by batch (a resize, or pixels not C-contiguous at the start)
    # read the dataset's arrays as they are: indices of the old length must raise, not read.
    ds = FashionMNIST(train=False)
    if how == "resize":
        images = ds.transform_first(Compose([Resize(20), ToTensor()]))
    else:
        ds.data = np.repeat(ds.data, 2, axis=2)[:, :, ::2]
        images = ds.transform_first(ToTensor())
    it = iter(DataLoader(images, 500, shuffle=True, seed=1))
    next(it)
    ds.data, ds.targets = ds.data[:100].copy(), ds.targets[:100].copy()
    with pytest.raises(ValueError, match=r"indices must be in \[0, 100\)"):
        for _ in it:
            pass


@pytest.mark.fashion
def test_loader_of_a_transformed_subclass_and_of_no_examples(fashion_cache):
    class Inverted(fsd.TransformedDataset):
        def _take(self, idx, buffers=None):
            X, y = super()._take(idx, buffers)
            return 1 - X, y

    ds = FashionMNIST(train=False)
    inv = Inverted(ds, ToTensor())
    X, y = next(iter(DataLoader(inv, 64)))
    np.testing.assert_array_equal(X, inv.get_batch(np.arange(64))[0])
    np.testing.assert_array_equal(X, 1 - ds.transform_first(ToTensor())[:64][0])
    ds.data, ds.targets = ds.data[:0], ds.targets[:0]
    assert list(DataLoader(ds.transform_first(ToTensor()), 4)) == []


@pytest.mark.fashion
def test_shuffling_values_and_order(test, fashion_cache):
    train_iter, test_iter = load_data_fashion_mnist(1000, seed=7)

    def epoch(it, check_values=False):
        ys = []
        for X, y in it:
            ys.append(y)
            if check_values:
                assert X.shape == (len(y), 1, 28, 28) and X.dtype == np.float32
                assert X.min() >= 0.0 and X.max() <= 1.0
        return np.concatenate(ys)

    order1 = epoch(train_iter, check_values=True)
    order2 = epoch(train_iter)
    assert len(order1) == 60000 and not np.array_equal(order1, order2)
    np.testing.assert_array_equal(np.bincount(order1), [6000] * 10)
    again, _ = load_data_fashion_mnist(1000, seed=7)
    np.testing.assert_array_equal(epoch(again), order1)
    np.testing.assert_array_equal(epoch(again), order2)
    t1, t2 = epoch(test_iter), epoch(test_iter)
    np.testing.assert_array_equal(t1, test.targets)
    np.testing.assert_array_equal(t2, test.targets)


# ---- transforms -----------------------------------------------------------------------------

def test_to_tensor_layouts_dtype_and_range():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    img[0, 0], img[0, 1] = 0, 255
    out = ToTensor()(img)
    assert out.shape == (1, 28, 28) and out.dtype == np.float32
    assert out[0, 0, 0] == 0 and out[0, 0, 1] == np.float32(255) * SCALE
    assert 0 <= out.min() and out.max() <= 1
    # Exactly the constant the compiled gather uses.
    np.testing.assert_array_equal(out[0], img.astype(np.float32) * SCALE)
    hwc = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ToTensor()(hwc), np.transpose(hwc, (2, 0, 1)) * SCALE)
    nhw = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    assert ToTensor()(nhw).shape == (4, 1, 28, 28)
    nhwc = rng.integers(0, 256, (4, 5, 7, 1), dtype=np.uint8)
    np.testing.assert_array_equal(ToTensor()(nhwc)[:, 0], nhwc[..., 0] * SCALE)
    f = rng.random((28, 28)).astype(np.float64)
    np.testing.assert_array_equal(ToTensor()(f)[0], f.astype(np.float32))  # not rescaled
    with pytest.raises(TypeError, match="uint8"):
        ToTensor()(img.astype(np.int16))
    with pytest.raises(TypeError):
        ToTensor()(np.array([["a"]]))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ToTensor()(np.zeros(5, np.uint8))


def pil_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    mode = "F" if img.dtype == np.float32 else "L"
    return np.asarray(Image.fromarray(img, mode=mode).resize((w, h), Image.BILINEAR))


def loop_upsample(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Textbook bilinear interpolation, one output pixel at a time: pixel centres at i + 0.5
    (align_corners=False), source coordinates clamped to the image.  For enlargements this is
    what PIL's BILINEAR computes."""
    H, W = img.shape
    out = np.empty((h, w))
    for i in range(h):
        sy = min(max((i + 0.5) * H / h - 0.5, 0.0), H - 1)
        y0 = int(math.floor(sy))
        y1, fy = min(y0 + 1, H - 1), sy - y0
        for j in range(w):
            sx = min(max((j + 0.5) * W / w - 0.5, 0.0), W - 1)
            x0 = int(math.floor(sx))
            x1, fx = min(x0 + 1, W - 1), sx - x0
            top = (1 - fx) * img[y0, x0] + fx * img[y0, x1]
            bottom = (1 - fx) * img[y1, x0] + fx * img[y1, x1]
            out[i, j] = (1 - fy) * top + fy * bottom
    return out


def direct_triangle(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Each output pixel as a normalised 2-D sum over all input pixels, with the triangle
    filter widened by the shrink factor (PIL's antialiasing), in float64."""
    H, W = img.shape
    sy, sx = H / h, W / w
    ry, rx = max(sy, 1.0), max(sx, 1.0)
    out = np.empty((h, w))
    p, q = np.arange(H)[:, None] + 0.5, np.arange(W)[None, :] + 0.5
    for i in range(h):
        for j in range(w):
            k = (np.clip(1 - np.abs(p - (i + 0.5) * sy) / ry, 0, None)
                 * np.clip(1 - np.abs(q - (j + 0.5) * sx) / rx, 0, None))
            out[i, j] = (k * img).sum() / k.sum()
    return out


SHAPES = [((28, 28), (64, 64)), ((28, 28), (13, 13)), ((28, 28), (40, 17)), ((7, 9), (3, 20)),
          ((5, 6), (1, 1)), ((30, 30), (7, 11)), ((28, 28), (28, 28)), ((3, 4), (8, 9))]


@pytest.mark.parametrize("src, dst", SHAPES)
def test_resize_matches_pil_and_direct_reference(src, dst):
    rng = np.random.default_rng(hash((src, dst)) % 2**32)
    h, w = dst
    x = rng.random(src).astype(np.float32)
    out = Resize(dst)(x)
    assert out.shape == dst and out.dtype == np.float32
    np.testing.assert_allclose(out, pil_resize(x, h, w), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out, direct_triangle(x.astype(np.float64), h, w), rtol=0,
                               atol=1e-6)
    u = rng.integers(0, 256, src, dtype=np.uint8)
    out8 = Resize(dst)(u)
    assert out8.dtype == np.uint8 and out8.shape == dst
    # PIL rounds its intermediate pass to uint8 in fixed point: at most 1 apart.
    assert np.abs(out8.astype(int) - pil_resize(u, h, w).astype(int)).max() <= 1


@pytest.mark.parametrize("src, dst", [s for s in SHAPES if s[1][0] >= s[0][0]
                                      and s[1][1] >= s[0][1]])
def test_resize_enlarging_matches_textbook_bilinear(src, dst):
    x = np.random.default_rng(1).random(src)
    np.testing.assert_allclose(resize_bilinear(x, dst), loop_upsample(x, *dst), rtol=0,
                               atol=1e-12)


def test_resize_layouts_batches_and_arguments():
    rng = np.random.default_rng(2)
    batch = rng.random((5, 28, 28)).astype(np.float32)
    out = resize_bilinear(batch, 64)
    assert out.shape == (5, 64, 64)
    for i in range(5):
        np.testing.assert_allclose(out[i], resize_bilinear(batch[i], 64), rtol=0, atol=1e-7)
    hwc = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
    out = Resize((40, 30))(hwc)
    assert out.shape == (40, 30, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 1], Resize((40, 30))(hwc[..., 1]))
    chw = ToTensor()(hwc)
    assert Resize(64)(chw).shape == (3, 64, 64)
    nhwc = rng.integers(0, 256, (2, 28, 28, 1), dtype=np.uint8)
    assert Resize(14)(nhwc).shape == (2, 14, 14, 1)
    const = np.full((28, 28), 0.25, np.float32)
    np.testing.assert_allclose(Resize((50, 9))(const), 0.25, rtol=1e-6)
    for bad in (0, -3, (4, 0)):
        with pytest.raises(ValueError, match="size"):
            Resize(bad)
    for bad in ("64", 2.5, (1, 2, 3), True, None):
        with pytest.raises(TypeError, match="size"):
            Resize(bad)
    with pytest.raises(TypeError, match="uint8 or float"):
        Resize(4)(np.zeros((8, 8), np.int32))


def test_compose():
    img = np.random.default_rng(3).integers(0, 256, (28, 28), dtype=np.uint8)
    out = Compose([Resize(64), ToTensor()])(img)
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    np.testing.assert_array_equal(out, ToTensor()(Resize(64)(img)))
    other = Compose([ToTensor(), Resize(64)])(img)
    assert other.shape == (1, 64, 64)
    np.testing.assert_allclose(other, out, atol=0.5 / 255 + 1e-6)  # uint8 rounding in between
    calls = []
    Compose([lambda x: calls.append(1) or x + 1, lambda x: calls.append(2) or x * 10])(1)
    assert calls == [1, 2]
    assert Compose([lambda x: x + 1, lambda x: x * 10])(1) == 20
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        Compose([ToTensor(), 3])
    with pytest.raises(TypeError):
        Compose(ToTensor())


# ---- labels and arguments -------------------------------------------------------------------

def test_text_labels():
    assert get_fashion_mnist_labels([0, 9, 3]) == ["t-shirt", "ankle boot", "dress"]
    assert get_fashion_mnist_labels(np.array([[1], [2]])) == ["trouser", "pullover"]
    assert get_fashion_mnist_labels(np.int64(8)) == ["bag"]
    assert get_fashion_mnist_labels(np.arange(10)) == list(fsd.TEXT_LABELS)
    with pytest.raises(ValueError, match="labels"):
        get_fashion_mnist_labels([10])
    with pytest.raises(ValueError, match="labels"):
        get_fashion_mnist_labels([-1])
    with pytest.raises(ValueError, match="labels"):
        get_fashion_mnist_labels([1.5])
    with pytest.raises(TypeError, match="labels"):
        get_fashion_mnist_labels(["a"])


@pytest.mark.parametrize("kwargs, exc, name", [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 2.5}, TypeError, "batch_size"),
    ({"batch_size": "256"}, TypeError, "batch_size"),
    ({"batch_size": 8, "resize": 0}, ValueError, "resize"),
    ({"batch_size": 8, "resize": "64"}, TypeError, "resize"),
    ({"batch_size": 8, "seed": -1}, TypeError, "seed"),
    ({"batch_size": 8, "num_workers": -1}, ValueError, "num_workers"),
    ({"batch_size": 8, "root": 5}, TypeError, "root"),
    ({"batch_size": 8, "root": ""}, ValueError, "root"),
    ({"batch_size": 8, "download": "yes"}, TypeError, "download"),
])
def test_load_data_checks_arguments_before_reading(kwargs, exc, name, monkeypatch, tmp_path):
    # Were a file read, it would fail differently: there is nothing to find here.
    monkeypatch.setattr(fsd._download, "SYSTEM_DIRS", [])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("FASTSHALLOW_MIRRORS", "")
    with pytest.raises(exc, match=name):
        load_data_fashion_mnist(**kwargs)


@pytest.mark.fashion
@pytest.mark.parametrize("load", [lambda root: FashionMNIST(root=root, train=False),
                                  lambda root: load_data_fashion_mnist(8, root=root)],
                         ids=["FashionMNIST", "load_data_fashion_mnist"])
def test_a_root_that_is_no_folder_is_an_error_not_a_reason_to_look_elsewhere(load, tmp_path,
                                                                             fashion_cache):
    # The data are found elsewhere (Debian's folder, the decoded cache): a mistyped root= was
    # passed over for them without a word.
    with pytest.raises(FileNotFoundError, match=r"root: '.*no-such-folder' does not exist"):
        load(tmp_path / "no-such-folder")
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"root: '.*a-file' is not a folder"):
        load(str(tmp_path / "a-file"))
    # A folder without the files is no better: the data was taken from elsewhere, unseen.
    (tmp_path / "empty").mkdir()
    with pytest.raises(fsd.DatasetNotFoundError,
                       match=r"(?s)no good copy of (t10k|train)-images-idx3-ubyte\.gz"
                             r".* in .*empty"):
        load(tmp_path / "empty")


@pytest.mark.fashion
def test_a_root_holding_the_real_files_is_the_one_read_and_a_bad_copy_is_an_error(
        test, tmp_path):
    # `test` came from the default places, so the decoded cache holds the same arrays: it must
    # neither stand in for a bad copy in root= nor hide which files were read.
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    for f in REAL_TEST_FILES:
        shutil.copy(os.path.join(REAL_DATA, f), good / f)  # missing files fail the test
    ds = FashionMNIST(good, train=False)
    assert ds.files == {f[:-3]: str(good / f) for f in REAL_TEST_FILES}
    np.testing.assert_array_equal(ds.data, test.data)
    again = FashionMNIST(good, train=False)
    assert all(again.files[f[:-3]].startswith(str(good / f)) for f in REAL_TEST_FILES)
    np.testing.assert_array_equal(again.targets, test.targets)
    images, labels = REAL_TEST_FILES
    shutil.copy(good / labels, bad / labels)
    gz = (good / images).read_bytes()
    raw = bytearray(gzip.decompress(gz))
    raw[-1] ^= 1  # one pixel of the last image
    for data, match in ((gz[: len(gz) // 2], "truncated gzip"),
                        (gzip.compress(bytes(raw), compresslevel=1), "checksum mismatch")):
        (bad / images).write_bytes(data)
        with pytest.raises(fsd.DataFileError, match=match) as info:
            FashionMNIST(bad, train=False)
        assert info.value.path == str(bad / images)


@pytest.mark.parametrize("make, name", [
    (lambda ds: DataLoader(ds, 3, shuffle="no"), "shuffle"),
    (lambda ds: DataLoader(ds, 3, drop_last="no"), "drop_last"),
    (lambda ds: DataLoader(ds, 3, shuffle=2), "shuffle"),
    (lambda ds: fs_load_array(ds.arrays, 3, is_train="False"), "is_train"),
])
def test_loader_switches_must_be_real_bools(make, name):
    # A string such as "no" is truthy: taking its truth shuffled what was meant not to be.
    ds = ArrayDataset(np.arange(10.0).reshape(10, 1), np.arange(10))
    with pytest.raises(TypeError, match=f"{name} must be True or False, got"):
        make(ds)
    loader = DataLoader(ds, 3, shuffle=np.False_, drop_last=np.True_)  # NumPy's bools are bools
    assert [b[1].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    loader = DataLoader(ds, 3, shuffle=0, drop_last=1)  # and so are 0 and 1 (verbose=1 style)
    assert [b[1].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    for name in ("shuffle", "drop_last"):  # assigned later: checked as by the constructor
        with pytest.raises(TypeError, match=f"{name} must be True or False, got str 'no'"):
            setattr(loader, name, "no")
    assert [b[1].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_dataset_checks_arguments():
    with pytest.raises(TypeError, match="root"):
        FashionMNIST(root=3)
    with pytest.raises(TypeError, match="train"):
        FashionMNIST(train="yes")
    with pytest.raises(TypeError, match="download"):
        FashionMNIST(download=None)
