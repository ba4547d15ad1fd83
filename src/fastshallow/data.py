"""Synthetic data, array datasets and the shuffling minibatch loader (sections 3.2-3.3).

A dataset that can hand out a whole minibatch at once implements ``get_batch(indices)``; the
DataLoader then builds each batch with one compiled gather per array instead of a Python loop over
examples (the library's own such datasets derive from :class:`BatchDataset`, and their batches
reuse arrays the caller has let go of).  Any other object with ``__len__`` and ``__getitem__``
works too, one example at a time.
"""
from __future__ import annotations

import math
import sys
from typing import Iterator, Sequence, Tuple

import numpy as np

from . import _checks as C
from ._config import resolve_threads
from ._ext import kernels as _k
from .kernels import permutation
from .random import generator

__all__ = ["synthetic_data", "ArrayDataset", "DataLoader", "load_array"]


def synthetic_data(w, b, num_examples: int, noise: float = 0.01, seed=None,
                   dtype=np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """Examples of ``y = X w + b + noise``: X ~ N(0, 1) of shape (num_examples, len(w)), noise ~
    N(0, noise^2).  Returns ``(X, y)`` with y of shape (num_examples,) for a vector `w` and
    (num_examples, m) for a (k, m) matrix `w`.  `seed`: an int, a numpy Generator to draw
    from, or None (a generator from the default stream: see :func:`fastshallow.seed`).
    `dtype`: float32 or float64, that of X and y (drawn and computed in float64 either
    way)."""
    w = C.as_array("w", w, ndim=(1, 2), dtype=np.float64, allow_empty=False, finite=True)
    b = C.as_array("b", b, ndim=(0, 1), dtype=np.float64, finite=True)
    if b.size != 1 and (w.ndim == 1 or b.shape != (w.shape[1],)):
        want = "a scalar" + ("" if w.ndim == 1 else
                             f" or {w.shape[1]} values (one per column of w)")
        raise ValueError(f"b must be {want}, got shape {b.shape}")
    num_examples = C.positive_int("num_examples", num_examples, allow_zero=True)
    dtype = C.float_dtype("dtype", dtype)
    noise = C.real("noise", noise, low=0.0)
    rng = generator("seed", seed)
    X = rng.standard_normal((num_examples, w.shape[0]))
    y = X @ w + (b.reshape(()) if b.size == 1 else b)
    y += rng.normal(0.0, noise, y.shape) if noise else 0.0
    return X.astype(dtype), y.astype(dtype)


def _idle_refcount():
    """What sys.getrefcount reports, in BatchBuffers.empty's loop, for an array nothing but the
    pool refers to -- measured with the same code, as the count depends on the interpreter
    (3.14 borrows references in loops) -- or None where counts cannot be trusted (no
    getrefcount, or a free-threaded build): then the pool keeps nothing."""
    if not hasattr(sys, "getrefcount") or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None
    pool = [np.empty(1)]
    for a in pool:
        return sys.getrefcount(a)
    return None  # pragma: no cover - the loop always runs


_IDLE_REFS = _idle_refcount()


class BatchBuffers:
    """Output arrays for a DataLoader's batches, each reused once nothing else refers to it.

    A fresh array per minibatch is slow for large batches (a 256-image float32 batch is 800 KB:
    the allocator maps new pages, the kernel zeroes them, and the writes miss the caches); a
    reused one is still in the cache.  An array is handed out again only when the pool holds
    the sole reference, so a batch the caller keeps (or any view of it) is never overwritten;
    two iterations over one loader, even in two threads, never get the same idle array (the
    first one's name for it counts as a reference while the second looks).  Arrays over
    MAX_BYTES are not kept: their page faults are small next to filling them."""

    KEEP = 4
    MAX_BYTES = 16 << 20
    # Smaller arrays come from memory the allocator already holds (its threshold for mapping
    # fresh pages is 128 KiB): np.empty is as good and cheaper than looking for an idle one.
    MIN_BYTES = 1 << 17

    def __init__(self):
        self._arrays: list = []

    def empty(self, shape: tuple, dtype) -> np.ndarray:
        for a in self._arrays:
            # An idle array is referred to by the list, the name `a` and getrefcount's argument
            # (3 on CPython 3.9-3.13; see _idle_refcount).
            if sys.getrefcount(a) == _IDLE_REFS and a.shape == shape and a.dtype == dtype:
                return a
        a = np.empty(shape, dtype)
        if a.nbytes <= self.MAX_BYTES and _IDLE_REFS is not None:
            self._arrays = self._arrays[1 - self.KEEP:] + [a]
        return a


def batch_array(buffers: "BatchBuffers | None", shape: tuple, dtype, nbytes: int) -> np.ndarray:
    """An uninitialised array for a batch of `nbytes` bytes: from a DataLoader's `buffers` when
    given and the array is large enough to gain from reuse (BatchBuffers.MIN_BYTES), else new."""
    if buffers is None or nbytes < BatchBuffers.MIN_BYTES:
        return np.empty(shape, dtype)
    return buffers.empty(shape, dtype)


class BatchDataset:
    """Base of the library's datasets that build whole minibatches at once.

    ``get_batch(indices)`` checks the indices, then ``_take`` builds the batch; a DataLoader,
    whose indices are valid by construction, calls ``_take`` directly (for minibatches of a few
    rows the checks would cost as much as the gather), with its BatchBuffers."""

    def get_batch(self, indices) -> tuple:
        """The examples at `indices`, as a tuple of batch arrays."""
        return self._take(C.as_indices("indices", indices, len(self)))

    def _take(self, idx: np.ndarray, buffers: BatchBuffers | None = None) -> tuple:
        raise NotImplementedError  # pragma: no cover - abstract

    def _batches(self, order: np.ndarray, batch_size: int, buffers: BatchBuffers) -> Iterator:
        """A DataLoader's epoch: the batches of `order` (valid indices) cut into `batch_size`
        pieces.  A dataset may override it to check once an epoch what _take checks a batch."""
        for start in range(0, len(order), batch_size):
            yield self._take(order[start:start + batch_size], buffers)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


def _gatherable_rows(a, n: int):
    """`a` as (n, k) rows the compiled gather may read unchecked -- an ndarray of float32 or
    float64 in native byte order, C-contiguous and aligned, with n rows -- else None (float16,
    byte-swapped, integer, 1-D and other arrays are taken by NumPy)."""
    if (type(a) is np.ndarray and a.ndim >= 2 and len(a) == n and a.dtype in C.FLOAT_DTYPES
            and a.flags.c_contiguous and a.flags.aligned):
        # Not reshape(n, -1): NumPy cannot infer the -1 of an empty array.
        return a.reshape(n, math.prod(a.shape[1:]))
    return None


class ArrayDataset(BatchDataset):
    """Arrays of equal length, indexed together along their first axis.

    ``ds[i]`` is the tuple of the i-th rows (a single array's rows come back bare, not in a
    tuple); ``ds.get_batch(indices)`` gathers whole minibatches with the compiled kernel.  Floats
    arrays are kept as they are (float32 stays float32); other numeric arrays are kept too and
    gathered with NumPy."""

    def __init__(self, *arrays, check_finite: bool = True):
        if not arrays:
            raise ValueError("ArrayDataset needs at least one array")
        check_finite = C.boolean("check_finite", check_finite)  # "no" would be truthy
        self.arrays = []
        for i, a in enumerate(arrays):
            arr = C.as_array(f"arrays[{i}]", a, dtypes=None, finite=check_finite)
            if arr.ndim == 0:
                raise ValueError(f"arrays[{i}] must have at least one dimension, got a scalar")
            self.arrays.append(arr)
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays[1:], 1):
            if len(a) != n:
                raise ValueError(f"all arrays must have the same length; arrays[0] has {n}, "
                                 f"arrays[{i}] has {len(a)}")
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        items = tuple(a[i] for a in self.arrays)
        return items[0] if len(items) == 1 else items

    def as_arrays(self):
        """``(X, y, scale, sample_shape)`` with X the features as 2-D rows, when this is a
        (features, targets) pair the fused trainer can read directly; else None."""
        if len(self.arrays) != 2:
            return None
        X, y = self.arrays
        if X.dtype not in (np.uint8, np.float32, np.float64):
            return None
        # Not reshape(len(X), -1): NumPy cannot infer the -1 of an empty array.
        return X.reshape(len(X), math.prod(X.shape[1:])), y, None, X.shape[1:]

    def _plan(self, batch_size: int) -> list:
        """For each array: (array, its rows for the compiled gather or None, the shape of one
        example, values per example, threads for a batch of `batch_size`).  Worked out from
        the arrays as they are now (``ds.arrays`` is a plain list a user may change)."""
        plan = []
        n = len(self)  # what indices are checked against (a subclass may say otherwise)
        for a in self.arrays:
            rows = _gatherable_rows(a, n)
            k = 0 if rows is None else rows.shape[1]
            plan.append((a, rows, a.shape[1:], k, resolve_threads(None, batch_size * k)))
        return plan

    def _gather(self, plan: list, idx: np.ndarray, buffers: BatchBuffers | None) -> tuple:
        # idx is int64, C-contiguous and in range(len(self)) (see BatchDataset), and the rows
        # of the plan are C-contiguous native floats with len(self) rows (_gatherable_rows),
        # whose own shape and dtype the batch takes (an array's dtype can be reassigned in
        # place): the compiled gather needs no further checks.  NumPy takes (and
        # bounds-checks) the rest.
        out = []
        B = len(idx)
        for a, rows, shape, k, nt in plan:
            if rows is None:
                out.append(a[idx])
                continue
            b = batch_array(buffers, (B,) + shape, rows.dtype, B * k * rows.itemsize)
            if B * k:
                _k().gather_rows(rows, idx, b, 1.0, nt)  # fills the B * k values of b in order
            out.append(b)
        return tuple(out)

    def _take(self, idx: np.ndarray, buffers: BatchBuffers | None = None) -> tuple:
        return self._gather(self._plan(len(idx)), idx, buffers)

    def _batches(self, order: np.ndarray, batch_size: int, buffers: BatchBuffers) -> Iterator:
        if type(self)._take is not ArrayDataset._take:  # a subclass's batches are its own
            yield from super()._batches(order, batch_size, buffers)
            return
        # The plan is the same for every batch of the epoch: worked out once (the book's
        # minibatches of 10 rows take less time to gather than the plan to make).  The epoch
        # keeps the arrays it started with.
        plan = self._plan(batch_size)
        for start in range(0, len(order), batch_size):
            yield self._gather(plan, order[start:start + batch_size], buffers)


class DataLoader:
    """Minibatches of a dataset: a new seeded permutation every epoch when `shuffle`.

    `dataset`: one example per index (an :class:`ArrayDataset`, or any object with ``__len__``
    and ``__getitem__``, such as a list of examples); a tuple of arrays such as ``(X, y)`` is
    refused, as :func:`load_array` takes those.  `len()` is the number of batches.  Batches
    come as tuples of arrays (a dataset of one array gives bare arrays).  `seed` makes the
    sequence of permutations reproducible; None takes a generator from the default stream
    (see :func:`fastshallow.seed`).  `num_workers` is accepted for compatibility with the book
    and ignored: the compiled gather is faster than worker processes would be."""

    def __init__(self, dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                 seed=None, num_workers: int = 0):
        if not hasattr(dataset, "__len__") or not (hasattr(dataset, "__getitem__")
                                                   or hasattr(dataset, "get_batch")):
            raise TypeError(f"dataset must have __len__ and __getitem__, "
                            f"got {type(dataset).__name__}")
        if _is_arrays(dataset):
            shapes = ", ".join(str(np.shape(a)) for a in dataset[:4])
            more = ", ..." if len(dataset) > 4 else ""
            raise TypeError(
                f"dataset must be a dataset (one example per index), got a "
                f"{type(dataset).__name__} of {len(dataset)} arrays of shapes {shapes}{more}"
                ": for arrays such as (X, y) use fs.load_array((X, y), batch_size) or "
                "fs.DataLoader(fs.ArrayDataset(X, y), batch_size)")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        C.positive_int("num_workers", num_workers, allow_zero=True)
        # Without a seed the generator comes from the default stream at the first shuffle: a
        # loader that never shuffles leaves the stream (and so initial weights) as it was.
        self._rng = None if seed is None else generator("seed", seed)
        self.epoch = 0
        self._buffers = BatchBuffers()

    # Checked whenever assigned, by the constructor or later: the string "no" is truthy, and
    # len(), epoch_order() and both training paths divide by the batch size.
    shuffle = C.checked_property("shuffle", C.boolean,
                                 "Whether each epoch draws a new order of the examples.")
    drop_last = C.checked_property("drop_last", C.boolean,
                                   "Whether a last, short minibatch is left out.")
    batch_size = C.checked_property("batch_size", C.positive_int,
                                    "Examples per minibatch (> 0); the last may have fewer "
                                    "unless `drop_last`.")

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def epoch_order(self) -> np.ndarray:
        """The example order of the next epoch (advances the loader's random stream), cut to
        whole batches when `drop_last`."""
        n = len(self.dataset)
        if self.shuffle:
            # One draw from the loader's generator seeds the compiled Fisher-Yates shuffle.
            order = permutation(n, int(self._generator().integers(0, 1 << 63)))
        else:
            order = np.arange(n, dtype=np.int64)
        if self.drop_last:
            order = order[: (n // self.batch_size) * self.batch_size]
        self.epoch += 1
        return np.ascontiguousarray(order, dtype=np.int64)

    def _generator(self) -> np.random.Generator:
        """The loader's generator, taken from the default stream now if it has none yet.  A
        training path calls this before it builds a deferred layer, whose weights come from
        that stream too, so that under fs.seed both paths draw in the same order: the loader's
        generator, then the weights at the first minibatch."""
        if self._rng is None:
            self._rng = generator("seed", None)
        return self._rng

    def __iter__(self) -> Iterator:
        order = self.epoch_order()
        ds = self.dataset
        # The epoch's indices are valid by construction: the library's batch datasets take
        # them unchecked (unless a subclass has its own get_batch).
        if isinstance(ds, BatchDataset) and type(ds).get_batch is BatchDataset.get_batch:
            batches = ds._batches(order, self.batch_size, self._buffers)
        else:
            batches = self._checked_batches(order)
        for batch in batches:
            yield batch[0] if isinstance(batch, tuple) and len(batch) == 1 else batch

    def _checked_batches(self, order: np.ndarray) -> Iterator:
        get_batch = getattr(self.dataset, "get_batch", None)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            if get_batch is not None:
                yield get_batch(idx)
            else:
                yield _collate([self.dataset[int(i)] for i in idx])


def _is_arrays(dataset) -> bool:
    """Whether `dataset` is a tuple of arrays (things with a shape of at least one axis): the
    likely mistake of passing a dataset's arrays, (X, y) as load_array takes them, for the
    dataset, which indexed would give whole arrays as examples.  A list -- of examples, such
    as images or (x, y) pairs -- is a dataset."""
    return (isinstance(dataset, tuple) and len(dataset) > 0
            and all(len(getattr(a, "shape", ())) > 0 for a in dataset))


def _collate(items: Sequence):
    """Stack per-example items (arrays or tuples of arrays) into batch arrays."""
    first = items[0]
    if isinstance(first, tuple):
        return tuple(np.stack([np.asarray(it[j]) for it in items]) for j in range(len(first)))
    return np.stack([np.asarray(it) for it in items])


def load_array(data_arrays, batch_size: int, is_train: bool = True, seed=None) -> DataLoader:
    """A DataLoader over ``ArrayDataset(*data_arrays)`` (a tuple or list of arrays of equal
    length, such as ``(X, y)``) giving minibatches of `batch_size`, shuffled anew every epoch
    when `is_train`.  `seed` makes the sequence of shuffles reproducible: an int, or a numpy
    Generator to draw from; None takes a generator from the default stream (see
    :func:`fastshallow.seed`)."""
    if not isinstance(data_arrays, (tuple, list)):
        raise TypeError(f"data_arrays must be a tuple or list of arrays, got "
                        f"{type(data_arrays).__name__}")
    C.boolean("is_train", is_train)  # named as the caller knows it, not as DataLoader's shuffle
    return DataLoader(ArrayDataset(*data_arrays), batch_size, shuffle=is_train, seed=seed)
