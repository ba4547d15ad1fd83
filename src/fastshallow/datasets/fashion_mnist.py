"""The Fashion-MNIST dataset (section 3.5 of the book): the dataset object, text labels, and the
two minibatch loaders of ``load_data_fashion_mnist``.

Minibatches are built whole: a dataset made by ``FashionMNIST(...).transform_first(ToTensor())``
(optionally with a Resize) implements ``get_batch(indices)``, which gathers the rows and converts
uint8 -> float32 in [0, 1] in one compiled call instead of converting 256 images one by one in
Python and stacking them.  ``as_arrays()`` exposes the raw uint8 rows, so that the fused trainer can
do the conversion inside its own minibatch step.
"""
from __future__ import annotations

import numbers
import os
from typing import Callable, List, NamedTuple, Optional, Tuple

import numpy as np

from .. import _checks as C
from .._config import resolve_threads
from .._ext import kernels as _k
from ..data import BatchBuffers, BatchDataset, DataLoader, batch_array
from ..kernels import gather_rows
from . import _download
from ._idx import DataFileError
from .transforms import PIXEL_SCALE, Compose, Resize, ToTensor, _check_size, resize_bilinear

__all__ = ["FashionMNIST", "TransformedDataset", "get_fashion_mnist_labels",
           "load_data_fashion_mnist", "TEXT_LABELS"]

#: The class names of labels 0..9.
TEXT_LABELS: Tuple[str, ...] = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal",
                                "shirt", "sneaker", "bag", "ankle boot")

_SPLITS = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
           False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


_check_bool = C.boolean


def _check_root(root):
    if root is None:
        return None
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be None or a folder path (str or os.PathLike), got "
                        f"{type(root).__name__} {root!r}"[:200])
    if os.fspath(root) in ("", b""):
        raise ValueError("root must be a folder path, got an empty string (use None to search "
                         "the default places)")
    # Checked here too, so that load_data_fashion_mnist reports it before anything is read.
    _download.check_folder("root", root, _download.ROOT_HINT)
    return root


def _load_split(train: bool, root, download: bool):
    """Verified images (N, 28, 28) uint8, labels (N,) int64 and where they came from."""
    img_name, lab_name = _SPLITS[train]
    arrays, sources = _download.load_files([img_name, lab_name], root, download)
    images, labels = arrays[img_name], arrays[lab_name]
    # The checksums already pin the real files down; these checks guard other tables (tests,
    # future variants) against pairing files that do not belong together.
    if len(images) != len(labels):
        raise DataFileError(sources[lab_name], f"holds {len(labels)} labels but "
                                               f"{sources[img_name]} holds {len(images)} images")
    if labels.size and int(labels.max()) >= len(TEXT_LABELS):
        raise DataFileError(sources[lab_name], f"holds label {int(labels.max())}, but "
                                               f"Fashion-MNIST has {len(TEXT_LABELS)} classes")
    # The images are copied out of the decoded cache's file mapping into the process's own
    # memory (read-only, as the files are): NumPy asks for 2 MB pages for an array this large,
    # and a shuffled minibatch reads rows at random, which on the mapping's 4 KB pages missed
    # the TLB on nearly every row.  From the mapping, a Fashion-MNIST epoch took 1.08x (one
    # thread) and 1.13x (two) as long (AMD EPYC, AVX2; epochs of each taken in turns); the copy
    # costs 15-60 ms a load.  A plain ndarray, too, not np.memmap (whose Python-level
    # __getitem__ costs time on every batch and whose type would surprise users).
    images = np.array(images)
    images.flags.writeable = False
    return images, np.asarray(labels).astype(np.int64), sources


def _normalize_key(key, n: int):
    """An int in [0, n), a slice, or a validated int64 index array."""
    if isinstance(key, slice):
        return key
    if isinstance(key, numbers.Integral) and not isinstance(key, (bool, np.bool_)):
        i = int(key)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a dataset of {n} examples")
        return i + n if i < 0 else i
    arr = np.asarray(key)
    if arr.size == 0 and arr.ndim == 1:
        arr = arr.astype(np.int64)  # [] is float64 to NumPy, yet a valid empty selection
    if arr.dtype == np.bool_:
        if arr.shape != (n,):
            raise IndexError(f"a boolean mask must have shape ({n},), got {arr.shape}")
        return np.flatnonzero(arr)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise TypeError(f"dataset indices must be an int, a slice, or a 1-D array of ints or "
                        f"bools, got {type(key).__name__}"
                        + (f" of dtype {arr.dtype} and shape {arr.shape}"
                           if isinstance(key, np.ndarray) else ""))
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (int(arr.min()) < -n or int(arr.max()) >= n):
        raise IndexError(f"indices must be in [-{n}, {n}) for a dataset of {n} examples")
    return np.where(arr < 0, arr + n, arr)


class FashionMNIST:
    """Fashion-MNIST: 28x28 grayscale images of 10 kinds of clothing, 60000 for training and
    10000 for testing, 6000 / 1000 of each class.

    Where the files (``<name>.gz``, or uncompressed; the ``.gz`` when both are there) are
    read from:

    * a folder you name -- `root`, else ``$FASTSHALLOW_DATA`` -- is the only place read.  It
      must exist and hold good copies of the split's two files: a missing or bad file there is
      an error naming it (DatasetNotFoundError, DataFileError), never a silent switch to another
      copy, and nothing is downloaded (`download` is not used).
    * else the user cache (``~/.cache/fastshallow/fashion-mnist``, following
      ``$XDG_CACHE_HOME``), then Debian's ``dataset-fashion-mnist`` folder; a bad copy there
      is skipped with a warning, and with `download` missing files are downloaded into the
      user cache.

    Every copy is checked against the published content (sha256 of the decompressed bytes).
    The decoded arrays are cached, so loading again takes milliseconds; a named folder's files
    are then only hashed (about 25 ms for the training images) to make sure they are the very
    bytes verified before.

    Attributes: ``data`` (N, 28, 28) uint8 (read-only), ``targets`` (N,) int64, ``classes``
    (the 10 names), ``files`` (where each array came from: a file path, followed by
    " (decoded cache)" -- or for a named folder's file " (same bytes as verified before;
    decoded cache)" -- when the decoded cache served it).  ``ds[i]`` is ``(image (28, 28)
    uint8, label int)``; ``ds[a:b]`` or ``ds[index_array]`` is ``(images (B, 28, 28), labels
    (B,) int64)``."""

    def __init__(self, root=None, train: bool = True, download: bool = True):
        self.root = _check_root(root)
        self.train = _check_bool("train", train)
        download = _check_bool("download", download)
        self.data, self.targets, self.files = _load_split(self.train, self.root, download)

    @property
    def classes(self) -> List[str]:
        """The text labels of classes 0..9."""
        return list(TEXT_LABELS)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, key):
        k = _normalize_key(key, len(self))
        if isinstance(k, int):
            return self.data[k], int(self.targets[k])
        return self.data[k], self.targets[k]

    def get_batch(self, indices) -> Tuple[np.ndarray, np.ndarray]:
        """Images (B, 28, 28) uint8 and labels (B,) int64 at `indices`."""
        idx = C.as_indices("indices", indices, len(self))
        return self.data[idx], self.targets[idx]

    def as_arrays(self) -> None:
        """None: untransformed images are not the float features a trainer expects (see
        :meth:`TransformedDataset.as_arrays`)."""
        return None

    def _pixel_arrays(self) -> Tuple[np.ndarray, np.ndarray]:
        # The fast-path protocol of TransformedDataset: example i is (data[i], targets[i]).
        return self.data, self.targets

    def transform_first(self, fn: Callable) -> "TransformedDataset":
        """This dataset with `fn` applied to the image of each example (the label is kept)."""
        return TransformedDataset(self, fn)

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"FashionMNIST({split}, {len(self)} examples)"


class _Plan(NamedTuple):
    resize: Optional[Tuple[int, int]]


def _flatten(fn) -> list:
    if type(fn) is Compose:
        return [s for t in fn.transforms for s in _flatten(t)]
    return [fn]


def _fast_plan(fn) -> Optional[_Plan]:
    """The batched equivalent of `fn` when it is ToTensor with at most one Resize (before or
    after it), else None.  Exact types only: a subclass may have changed what they do."""
    steps = _flatten(fn)
    if any(type(s) not in (ToTensor, Resize) for s in steps):
        return None
    resizes = [s for s in steps if type(s) is Resize]
    if len(steps) - len(resizes) != 1 or len(resizes) > 1:
        return None
    return _Plan(resizes[0].size if resizes else None)


class TransformedDataset(BatchDataset):
    """A dataset whose examples are ``(fn(image), label)`` for the examples of another.

    When the base dataset holds uint8 pixel arrays (FashionMNIST) and `fn` is ``ToTensor()``,
    possibly composed with one ``Resize``, minibatches are built whole by :meth:`get_batch`:
    one compiled gather scales uint8 to float32 in [0, 1], then the resize runs on the batch.
    Single examples and slices go through the same path, so they match the batches bit for
    bit.  (Resize and ToTensor commute in this path: the resize sees the scaled floats, with no
    rounding to uint8 in between, whichever order they were composed in.)  Any other `fn` is
    applied example by example."""

    def __init__(self, dataset, fn: Callable):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.dataset = dataset
        self.transform = fn
        pixel_arrays = getattr(dataset, "_pixel_arrays", None)
        self._plan = _fast_plan(fn) if pixel_arrays is not None else None

    @property
    def classes(self):
        return getattr(self.dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        n = len(self)
        k = _normalize_key(key, n)
        if self._plan is not None:
            if isinstance(k, int):
                X, y = self.get_batch(np.array([k], dtype=np.int64))
                return X[0], int(y[0])
            idx = np.arange(n, dtype=np.int64)[k] if isinstance(k, slice) else k
            return self.get_batch(idx)
        if isinstance(k, int):
            img, label = self.dataset[k]
            return self.transform(img), label
        idx = range(n)[k] if isinstance(k, slice) else k.tolist()
        return self._stack([self[int(i)] for i in idx])

    def _pixel_rows(self) -> Optional[Tuple[np.ndarray, tuple, np.ndarray]]:
        """``(pixels as (N, H*W) uint8 rows, (H, W), labels)`` when the compiled gather may read
        the base dataset's pixels unchecked -- uint8, C-contiguous, one row per example, so an
        index checked against len(self) is a row of them -- else None."""
        data, targets = self.dataset._pixel_arrays()
        if (type(data) is np.ndarray and data.dtype == np.uint8 and data.ndim >= 2
                and data.flags.c_contiguous and len(data) == len(self)):
            # Not reshape(n, -1): NumPy cannot infer the -1 of an empty array.
            return (data.reshape(len(data), int(np.prod(data.shape[1:]))), data.shape[1:],
                    targets)
        return None

    def _take(self, idx: np.ndarray,
              buffers: Optional[BatchBuffers] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``get_batch``: the transformed images (B, ...) and labels (B,) int64 at `idx`.

        With the fast plan: images (B, 1, H, W) float32 in [0, 1], made by one compiled gather
        (uint8 -> float32 times ``np.float32(1/255)``) plus a batched resize when asked."""
        if self._plan is None:
            return self._stack([self[int(i)] for i in idx])
        found = self._pixel_rows() if len(idx) else None
        # idx was checked against len(self) (see BatchDataset), but perhaps at the start of an
        # epoch that has since been given shorter arrays: the largest index decides.
        if found is not None and int(idx.max()) < len(found[0]):
            rows, shape, targets = found
            # With a resize the gathered images are an intermediate: a fresh array is fine.
            X = batch_array(None if self._plan.resize else buffers, (len(idx),) + shape,
                            np.float32, len(idx) * rows.shape[1] * 4)
            _k().gather_rows(rows, idx, X, PIXEL_SCALE, resolve_threads(None, X.size))
        else:
            data, targets = self.dataset._pixel_arrays()
            X = gather_rows(data, idx, scale=PIXEL_SCALE)
        if self._plan.resize is not None:
            X = resize_bilinear(X, self._plan.resize)
        B = X.shape[0]
        return X.reshape((B, 1) + X.shape[1:]), targets[idx]

    def _batches(self, order: np.ndarray, batch_size: int, buffers: BatchBuffers):
        """A DataLoader's epoch, checked once rather than every batch as in _take (the Python
        around a 256-image batch took a quarter of the loader's time).  Such an epoch reads the
        arrays it found at its start, even if the dataset is given new ones meanwhile; epochs
        with a resize, over pixels the gather cannot read directly, or of a subclass with its
        own _take go batch by batch through _take, which checks the arrays as they are."""
        found = (self._pixel_rows() if self._plan is not None and self._plan.resize is None
                 and type(self)._take is TransformedDataset._take else None)
        if found is None:
            yield from super()._batches(order, batch_size, buffers)
            return
        rows, shape, targets = found
        gather, k = _k().gather_rows, rows.shape[1]
        nt = resolve_threads(None, batch_size * k)  # a short last batch: same bits any way
        shape = (1,) + shape
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            B = len(idx)
            X = batch_array(buffers, (B,) + shape, np.float32, B * k * 4)
            gather(rows, idx, X, PIXEL_SCALE, nt)  # fills the B * k floats of X in order
            yield X, targets[idx]

    def as_arrays(self):
        """``(X_uint8 (N, H*W), y int64 (N,), scale, (1, H, W))`` when the transform is exactly
        ToTensor (no resize), so a trainer can gather and scale the raw rows itself
        (``X_uint8[i] * scale`` is example i, flattened); else None."""
        if self._plan is None or self._plan.resize is not None:
            return None
        data, targets = self.dataset._pixel_arrays()
        n = data.shape[0]
        return (data.reshape(n, -1), targets, float(PIXEL_SCALE), (1,) + tuple(data.shape[1:]))

    def transform_first(self, fn: Callable) -> "TransformedDataset":
        """This dataset with `fn` applied, in addition, to the image of each example."""
        return TransformedDataset(self, fn)

    @staticmethod
    def _stack(items):
        if not items:
            raise ValueError("cannot build an empty batch")
        images = np.stack([np.asarray(it[0]) for it in items])
        labels = np.asarray([it[1] for it in items], dtype=np.int64)
        return images, labels

    def __repr__(self) -> str:
        return f"TransformedDataset({self.dataset!r}, {self.transform!r})"


def get_fashion_mnist_labels(labels) -> List[str]:
    """The text labels of numeric labels (an int, or a list / array of ints in 0..9)."""
    arr = np.asarray(labels)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    idx = C.as_labels("labels", arr, n_classes=len(TEXT_LABELS))
    return [TEXT_LABELS[i] for i in idx.tolist()]


def load_data_fashion_mnist(batch_size: int, resize=None, root=None, seed=None,
                            num_workers: Optional[int] = None, download: bool = True
                            ) -> Tuple[DataLoader, DataLoader]:
    """Fashion-MNIST as two minibatch loaders ``(train_iter, test_iter)`` of `batch_size`
    examples.

    Batches are ``(X, y)``: X (B, 1, H, W) float32 in [0, 1] (28x28, or `resize` as an int or
    (height, width)), y (B,) int64.  The training loader reshuffles every epoch (reproducibly
    when `seed` is given, or after :func:`fastshallow.seed`); the test loader keeps the file
    order.  The last batch may be smaller.  `root` and `download` choose where the files are
    read from, as for :class:`FashionMNIST`.  `num_workers` is accepted for compatibility with
    the book and ignored: the compiled gather builds a batch faster than worker processes could
    hand one over."""
    batch_size = C.positive_int("batch_size", batch_size)
    size = None if resize is None else _check_size("resize", resize)
    rng = None if seed is None else C.seed_or_rng("seed", seed)  # refused before files are read
    if num_workers is not None:
        C.positive_int("num_workers", num_workers, allow_zero=True)
    root = _check_root(root)
    download = _check_bool("download", download)
    trans = ToTensor() if size is None else Compose([Resize(size), ToTensor()])
    _download.refuse_missing_named(_SPLITS[True] + _SPLITS[False], root)
    train = FashionMNIST(root, train=True, download=download).transform_first(trans)
    test = FashionMNIST(root, train=False, download=download).transform_first(trans)
    return (DataLoader(train, batch_size, shuffle=True, seed=rng),
            DataLoader(test, batch_size, shuffle=False))
