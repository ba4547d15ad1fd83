"""Training on data larger than memory: shuffled chunks streamed from a ``numpy.memmap`` (or an
uncompressed IDX file, or any array supporting row slices).

An epoch visits the rows in a random order that a disk can serve quickly: the rows are cut into
*blocks* of consecutive rows (about 1 MB of the file each, read sequentially), the block order is
shuffled every epoch, and consecutive blocks of that order are gathered into a *chunk* (about
64 MB of training-dtype features) whose rows are shuffled again; each chunk is trained with one
``partial_fit`` -- for this library's estimators, one fused compiled pass of minibatch SGD.
Rows of different parts of the file thus meet in every chunk, which matters when the file is
sorted (by class, by time).

Memory stays bounded by a few chunks whatever the size of the file: each block is copied out of
the mapping (converted to the training dtype, optionally scaled, e.g. uint8 pixels by 1/255) and
its pages are then handed back to the kernel with ``madvise(MADV_DONTNEED)``.  Without that,
every page read through a mapping would stay counted in the process's resident memory until the
kernel needed it elsewhere: a 2 GB file read once would show 2 GB resident.  (The pages stay in
the page cache, so a second epoch still reads from RAM when RAM allows; it just is not this
process's memory.)  Only mappings shared with the file are released (``np.memmap`` modes 'r',
'r+', 'w+'); a copy-on-write mapping (mode 'c') keeps its pages, whose private changes would
otherwise be lost.
"""
from __future__ import annotations

import mmap
import os
import time
from typing import Iterator, Optional, Tuple, TypeVar

import numpy as np

from . import _checks as C
from . import _fitting

__all__ = ["open_idx", "iter_chunks", "fit_out_of_core"]

BLOCK_BYTES = 1 << 20     # contiguous bytes read per block
CHUNK_BYTES = 64 << 20    # training-dtype bytes of features per chunk

_Estimator = TypeVar("_Estimator")  # fit_out_of_core returns the estimator it was given


def open_idx(path) -> np.memmap:
    """Memory-map an uncompressed IDX file (the format of MNIST / Fashion-MNIST) read-only,
    without reading it: a uint8 ``np.memmap`` of the header's shape.

    The header is checked against the file size first.  A gzip-compressed file cannot be
    mapped: decompress it (``gunzip -k``) or, for Fashion-MNIST, use
    :class:`fastshallow.datasets.FashionMNIST`, whose decoded cache is memory-mapped too."""
    from .datasets._idx import DataFileError, open_for_reading, parse_idx_header

    path = os.fspath(path)
    with open_for_reading(path) as fh:
        head = fh.read(4)
        if head[:2] == b"\x1f\x8b":
            raise DataFileError(path, "is gzip-compressed and cannot be memory-mapped; "
                                      "decompress it first (gunzip -k)")
        ndim = parse_idx_header(path, head)
        dims = parse_idx_header(path, head, fh.read(4 * ndim))
        size = os.fstat(fh.fileno()).st_size
    offset = 4 + 4 * ndim
    want = offset + int(np.prod(dims, dtype=np.int64))
    if size != want:
        raise DataFileError(path, f"the IDX header says dimensions {dims}, i.e. {want} bytes, "
                                  f"but the file has {size} bytes")
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=dims)


class _PageReleaser:
    """Hands the pages of rows already copied back to the kernel (see the module notes)."""

    def __init__(self, a: np.ndarray):
        self._mm = None
        m, obj = None, a
        while obj is not None and m is None:  # np.asarray(memmap) keeps the memmap as .base
            if isinstance(obj, np.memmap) and isinstance(getattr(obj, "_mmap", None), mmap.mmap):
                m = obj
            obj = getattr(obj, "base", None)
        if m is None or m.mode == "c" or not hasattr(mmap, "MADV_DONTNEED"):
            return
        if not (a.flags.c_contiguous and a.ndim >= 1):
            return
        mm = m._mmap
        try:
            base = np.frombuffer(mm, dtype=np.uint8, count=1).ctypes.data
        except (ValueError, TypeError):  # closed or empty mapping
            return
        self._mm = mm
        self._start = a.ctypes.data - base          # byte offset of row 0 within the mapping
        self._row_bytes = a.strides[0] if a.ndim else a.itemsize
        self._len = len(mm)

    def release(self, r0: int, r1: int) -> None:
        if self._mm is None or r1 <= r0:
            return
        page = mmap.PAGESIZE
        lo = self._start + r0 * self._row_bytes
        hi = min(self._start + r1 * self._row_bytes, self._len)
        lo -= lo % page  # whole pages, rounded outward: a page shared with the next block is
        hi = min(-(-hi // page) * page, self._len)  # simply faulted in again when needed
        if hi > lo:
            try:
                self._mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError):  # pragma: no cover - unusual mappings
                self._mm = None


def _rows_of(a, name: str) -> int:
    if not hasattr(a, "shape") or not hasattr(a, "__getitem__") or len(a.shape) < 1:
        raise TypeError(f"{name} must be an array with rows (a numpy array or memmap, an "
                        f"array of open_idx, or anything with a shape, a dtype and row "
                        f"slices, such as an h5py or zarr dataset), got {type(a).__name__}")
    return int(a.shape[0])


def _array(a, name: str):
    """`a` as it is when it reads like a NumPy array (a shape, a NumPy dtype, row slices),
    else -- a pandas DataFrame, which has no single dtype, and is in memory already -- as
    ``np.asarray(a)``."""
    _rows_of(a, name)
    return a if isinstance(getattr(a, "dtype", None), np.dtype) else np.asarray(a)


def _plan(n: int, row_bytes_src: int, row_bytes_out: int, block_rows, chunk_rows):
    if chunk_rows is not None:
        chunk_rows = C.positive_int("chunk_rows", chunk_rows)
    if block_rows is None:
        block_rows = max(1, BLOCK_BYTES // max(row_bytes_src, 1))
        if chunk_rows is not None:  # a chunk is whole blocks: the default block fits in it
            block_rows = min(block_rows, chunk_rows)
    else:
        block_rows = C.positive_int("block_rows", block_rows)
        if chunk_rows is not None and chunk_rows < block_rows:
            raise ValueError(f"chunk_rows ({chunk_rows}) must be at least block_rows "
                             f"({block_rows}): a chunk is made of whole blocks")
    if chunk_rows is None:
        chunk_rows = max(block_rows, CHUNK_BYTES // max(row_bytes_out, 1))
    return block_rows, chunk_rows // block_rows


def _out_dtype(X, dtype) -> np.dtype:
    """The dtype of X's chunks: `dtype`, else X's float dtype in native byte order (a '>f8'
    file holds float64 numbers), else float32."""
    src = C.native(X.dtype)
    if dtype is not None:
        dtype = C.float_dtype("dtype", dtype)
    if src.kind not in "uif":
        raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
    if dtype is None:
        return src if src in C.FLOAT_DTYPES else np.dtype(np.float32)
    return dtype


def _layout(X, others, dtype, block_rows, chunk_rows):
    """Everything iter_chunks checks, done before it reads anything: (n, features, output
    dtype, block_rows, blocks per chunk)."""
    n = _rows_of(X, "X")
    for i, o in enumerate(others):
        if _rows_of(o, f"others[{i}]") != n:
            raise ValueError(f"every array must have {n} rows (those of X), others[{i}] has "
                             f"{o.shape[0]}")
    out = _out_dtype(X, dtype)
    k = int(np.prod(X.shape[1:], dtype=np.int64))
    block_rows, per_chunk = _plan(n, k * np.dtype(X.dtype).itemsize, k * out.itemsize,
                                  block_rows, chunk_rows)
    return n, k, out, block_rows, per_chunk


def iter_chunks(X, *others, chunk_rows: Optional[int] = None, block_rows: Optional[int] = None,
                shuffle: bool = True, shuffle_rows: Optional[bool] = None, random_state=None,
                dtype=None, scale: Optional[float] = None,
                release_pages: bool = True) -> Iterator[Tuple[np.ndarray, ...]]:
    """One epoch over the rows of X (and of each array in `others`, e.g. y and weights) as
    in-memory chunks ``(X_chunk, *other_chunks)``.

    X (n, ...) is read block by block (`block_rows` consecutive rows, default about 1 MB) and
    returned flattened to (rows, features) in `dtype` (default: X's float dtype, float32 for
    anything else), multiplied by `scale` when given.  With `shuffle`, the block order is a
    fresh permutation of `random_state` (an int, a numpy Generator, or None) and, with
    `shuffle_rows` (default: `shuffle`), the rows inside each chunk are permuted too.
    `chunk_rows` (default: about 64 MB of output) is rounded down to whole blocks, so it must
    be at least `block_rows` (whose default is then at most `chunk_rows`).  The chunks are
    new arrays, not views of X; pages of a memory-mapped X are released once copied
    (`release_pages`).  X and `others` may also be pandas objects (converted with
    ``np.asarray``, being in memory already).  The arguments are checked by this call, before
    anything is read."""
    X = _array(X, "X")
    others = tuple(_array(o, f"others[{i}]") for i, o in enumerate(others))
    layout = _layout(X, others, dtype, block_rows, chunk_rows)
    if scale is not None:
        scale = C.real("scale", scale)
    shuffle = bool(shuffle)
    shuffle_rows = shuffle if shuffle_rows is None else bool(shuffle_rows)
    rng = C.seed_or_rng("random_state", random_state)
    return _chunks(X, others, layout, scale, shuffle, shuffle_rows, rng, release_pages)


def _block_order(layout, shuffle: bool, rng) -> np.ndarray:
    """The order in which an epoch visits the blocks."""
    nblocks = -(-layout[0] // layout[3])
    return rng.permutation(nblocks) if shuffle else np.arange(nblocks)


def _minibatches(layout, order: np.ndarray, batch_size: int) -> int:
    """How many minibatches of `batch_size` an epoch over the blocks in `order` takes: each
    chunk of :func:`_chunks` is trained in ceil(rows / batch_size) of them.  Only the last
    block may have fewer rows, so the count depends on which chunk the order puts it in."""
    n, _, _, block_rows, per_chunk = layout
    last = len(order) - 1
    rows = np.where(order == last, n - last * block_rows, block_rows)
    chunk_rows = np.add.reduceat(rows, np.arange(0, len(order), per_chunk))
    return int(np.sum(-(-chunk_rows // batch_size)))


def _chunks(X, others, layout, scale, shuffle, shuffle_rows, rng, release_pages, order=None):
    """The chunks of one epoch (see iter_chunks); `order`: the blocks' order, drawn already."""
    n, k, dtype, block_rows, per_chunk = layout
    nblocks = -(-n // block_rows)
    if order is None:
        order = _block_order(layout, shuffle, rng)
    releasers = [_PageReleaser(a) if release_pages else None for a in (X,) + others]
    sdt = None if scale is None else dtype.type(scale)
    for c0 in range(0, nblocks, per_chunk):
        blocks = order[c0:c0 + per_chunk]
        spans = [(int(b) * block_rows, min(n, (int(b) + 1) * block_rows)) for b in blocks]
        rows = sum(r1 - r0 for r0, r1 in spans)
        Xc = np.empty((rows, k), dtype)
        Oc = [np.empty((rows,) + tuple(o.shape[1:]), C.native(o.dtype)) for o in others]
        at = 0
        for r0, r1 in spans:
            part = np.asarray(X[r0:r1]).reshape(r1 - r0, k)
            dst = Xc[at:at + r1 - r0]
            if sdt is None:
                dst[...] = part
            else:
                np.multiply(part, sdt, out=dst, casting="unsafe")
            for o, oc in zip(others, Oc):
                oc[at:at + r1 - r0] = o[r0:r1]
            for rel in releasers:
                if rel is not None:
                    rel.release(r0, r1)
            at += r1 - r0
        if shuffle_rows and rows > 1:
            perm = rng.permutation(rows)
            Xc = Xc[perm]
            Oc = [oc[perm] for oc in Oc]
        yield (Xc, *Oc)


def _blocks(a, block: int = 1 << 20):
    """(first row, rows as an array) of `a` block by block (it may be memory-mapped too), the
    pages of each block released once it has been used."""
    n = _rows_of(a, "array")
    rel = _PageReleaser(a)
    for s in range(0, n, block):
        yield s, np.asarray(a[s:s + block])
        rel.release(s, min(n, s + block))


def _unique_labels(y) -> np.ndarray:
    """np.unique of y, reading it in blocks."""
    parts = [np.unique(part) for _, part in _blocks(y)]
    if not parts:
        raise ValueError("y must not be empty")
    return np.unique(np.concatenate(parts))


def _classes(y, classes) -> np.ndarray:
    """The classes to train: `classes`, else the labels in y.  y is read either way, so that
    a label outside `classes` is refused before training rather than in some later chunk."""
    labels = _unique_labels(y)
    if classes is None:
        return labels
    classes = np.asarray(classes)
    unknown = labels[~np.isin(labels, classes)]
    if unknown.size:
        raise ValueError(f"y contains labels not in classes {np.unique(classes).tolist()!r}: "
                         f"{unknown[:10].tolist()!r}")
    return classes


def _check_targets(y) -> None:
    """Refuse NaN or inf in float targets before training rather than in some later chunk."""
    if getattr(getattr(y, "dtype", None), "kind", "") != "f":
        return
    for s, part in _blocks(y):
        bad = np.flatnonzero(~np.isfinite(part.reshape(len(part), -1)).all(axis=1))
        if bad.size:
            raise ValueError(f"y must be finite, found NaN or inf in row {s + bad[0]}")


def _weight_column(w, n: int):
    """sample_weight as an array of n rows (a list becomes one)."""
    if w is None:
        return None
    if not (hasattr(w, "shape") and hasattr(w, "__getitem__")):
        w = C.as_array("sample_weight", w, dtype=np.float64)
    if len(w.shape) != 1 or w.shape[0] != n:
        raise ValueError(f"sample_weight must be a 1-D array of {n} weights (one per row of X), "
                         f"got shape {tuple(w.shape)}")
    return w


def _weight_totals(w) -> Tuple[float, float]:
    """(sum, max) of the weights, every block checked to be real, finite and >= 0: a bad
    weight found in the middle of an epoch would stop training halfway."""
    total, top = 0.0, 0.0
    for s, part in _blocks(w):
        part = C.as_array("sample_weight", part, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(part))
        if bad.size:
            raise ValueError(f"sample_weight must be finite, found {part[bad[0]]} in row "
                             f"{s + bad[0]}")
        low = int(np.argmin(part))
        if part[low] < 0:
            raise ValueError(f"sample_weight must be >= 0, found {part[low]:g} in row {s + low}")
        with np.errstate(over="ignore"):
            total += float(np.sum(part))
        top = max(top, float(part.max()))
    if not top > 0:
        raise ValueError("sample_weight must have a positive sum (all weights are zero)")
    return total, top


def _relative_weights(w, n: int) -> Tuple[float, float]:
    """The (divisor, factor) that make the weights relative to their mean over the whole
    file, not per chunk (see _fitting.weight_scale)."""
    total, top = _weight_totals(w)
    # 1 / mean, as it always was when that is finite
    factor = _fitting.ratio(1.0, _fitting.ratio(total, n))
    return _fitting.weight_scale(factor, top, lambda m: _rescaled_sum(w, m), n)


def _rescaled_sum(w, top: float) -> float:
    return sum(float(np.sum(np.asarray(part, np.float64) / top)) for _, part in _blocks(w))


def _chunk_weight(wc: np.ndarray, divisor: float) -> float:
    """The total weight of a chunk, in the units of the relative weights' divisor (summed as
    given when that is 1, to keep the loss curve's bits)."""
    return float(np.sum(wc)) if divisor == 1.0 else float(np.sum(wc / divisor))


def fit_out_of_core(estimator: _Estimator, X, y, *, classes=None,
                    epochs: Optional[int] = None, sample_weight=None,
                    chunk_rows: Optional[int] = None, block_rows: Optional[int] = None,
                    dtype=None, scale: Optional[float] = None, random_state=None,
                    release_pages: bool = True) -> _Estimator:
    """Fit `estimator` on X, y without loading X into memory; returns the estimator.

    X: a ``numpy.memmap`` (or :func:`open_idx`, or any row-sliceable array with a shape and a
    dtype; a pandas DataFrame is converted with ``np.asarray``) of shape (n, ...), y: (n,) or
    (n, targets) (may be memory-mapped too), `sample_weight`: optional (n,).  Each
    of `epochs` epochs (default: the estimator's `epochs`, else 1) streams shuffled chunks
    (see :func:`iter_chunks`: `chunk_rows` and `block_rows` size them; `dtype` and `scale`
    convert X, e.g. ``scale=1/255`` for uint8 pixels; `release_pages` as there) and trains
    each with ``partial_fit``.  `random_state` (None, an int, a numpy RandomState or
    Generator, taken as the estimators take theirs) orders the chunks.

    For :class:`~fastshallow.estimators.SoftmaxRegression` and
    :class:`~fastshallow.estimators.LinearRegression` this starts from a fresh model (unless
    ``warm_start=True``), uses the estimator's `random_state` for the chunk order when
    `random_state` is None, and knows the exact number of steps (every epoch's block order is
    drawn before training: the chunks' sizes depend on it), so ``schedule='cosine'`` spans
    the whole run; afterwards ``n_iter_`` is `epochs` and ``loss_curve_`` holds the
    mean training loss of each epoch.  Any other estimator with ``partial_fit`` (e.g. scikit-learn's
    SGDClassifier) is trained from whatever state it is in.  A classifier's `classes`
    default to the labels found in y.

    Every argument is checked before the estimator changes, y and `sample_weight` in a
    streamed pass each.  What only the chunks of X show (a NaN in row 10**9, a fit that
    diverges) stops the run, and the estimator is then put back as it was before the call --
    unless its attributes cannot be deep-copied (no scikit-learn estimator's): that one is
    left as the failed call left it."""
    from sklearn.base import is_classifier, is_regressor

    from .estimators import LinearRegression, SoftmaxRegression

    if not hasattr(estimator, "partial_fit"):
        if isinstance(estimator, LinearRegression):  # partial_fit exists for solver='sgd'
            raise TypeError(f"fit_out_of_core trains with partial_fit, one chunk at a time, "
                            f"which LinearRegression(solver={estimator.solver!r}) does not "
                            f"have: set_params(solver='sgd') to train it by SGD, or fit the "
                            f"closed form in memory")
        raise TypeError(f"{type(estimator).__name__} has no partial_fit")
    ours = isinstance(estimator, (SoftmaxRegression, LinearRegression))
    if ours:
        estimator._check_params()
    if epochs is None:
        epochs = getattr(estimator, "epochs", 1) if ours else 1
    epochs = C.positive_int("epochs", epochs)
    X, y = _array(X, "X"), _array(y, "y")
    n = _rows_of(X, "X")
    if _rows_of(y, "y") != n:
        raise ValueError(f"y must have {n} rows (those of X), got {y.shape[0]}")
    if n == 0:
        raise ValueError("X must have at least one row")
    sample_weight = _weight_column(sample_weight, n)
    others = (y,) if sample_weight is None else (y, sample_weight)
    layout = _layout(X, others, dtype, block_rows, chunk_rows)
    stream = dict(layout=layout, scale=None if scale is None else C.real("scale", scale),
                  shuffle=True, shuffle_rows=not ours,
                  rng=_fitting.run_rng(random_state, estimator.random_state if ours else None, 1),
                  release_pages=release_pages)  # the chunk order: stream 1
    kw = {}
    if is_classifier(estimator):
        kw["classes"] = _classes(y, classes)
    elif is_regressor(estimator):
        _check_targets(y)
    rel = None if sample_weight is None else _relative_weights(sample_weight, n)
    # For our estimators every epoch's block order is drawn first, to count the steps a
    # schedule spans exactly (they depend on which chunk the shorter last block is in); the
    # chunks' rows are not shuffled, so the orders are all that is drawn for the chunks.
    orders = ([_block_order(layout, stream["shuffle"], stream["rng"]) for _ in range(epochs)]
              if ours else [None] * epochs)
    with _fitting.unchanged_on_error(estimator):
        total_steps = None
        if ours:
            total_steps = _start(estimator, layout, orders, kw.get("classes"), y.ndim)
        curve = []
        for epoch, o in enumerate(orders, 1):
            t0 = time.perf_counter()
            curve.append(_epoch(estimator, X, others, dict(stream, order=o), kw, ours,
                                total_steps, rel))
            if ours and estimator.verbose:
                _fitting.report(f"epoch {epoch}", curve[-1], time.perf_counter() - t0)
        if ours:
            estimator.n_iter_ = epochs
            estimator.loss_curve_ = curve
    return estimator


def _start(estimator, layout, orders, classes, y_ndim: int) -> int:
    """A fresh model (or, warm-starting, the current one with a new optimizer) for a run of
    epochs over the blocks in `orders`; returns its number of minibatches.  `classes`: the
    classifier's (None for the regressor), `y_ndim`: the targets' dimensions."""
    total_steps = sum(_minibatches(layout, o, estimator.batch_size) for o in orders)
    if estimator.warm_start and hasattr(estimator, "_net"):
        if classes is None:
            estimator._refuse_other_targets(y_ndim=y_ndim)
        else:
            estimator._refuse_other_targets(classes=classes)
        estimator._new_optimizer(total_steps)
    else:
        estimator._forget()
    return total_steps


def _epoch(estimator, X, others, stream: dict, kw: dict, ours: bool, total_steps,
           rel) -> Optional[float]:
    """One pass over the chunks, each trained with partial_fit; for our estimators the
    epoch's mean loss, weighted like the training (`rel`: see _relative_weights)."""
    loss_sum = 0.0
    for parts in _chunks(X, others, **stream):
        Xc, yc = parts[0], parts[1]
        if len(parts) > 2:
            kw["sample_weight"] = parts[2]
        if ours:
            estimator._partial_fit(Xc, yc, total_steps=total_steps, weight_scale=rel,
                                   report_epochs=False, **kw)
            loss_sum += estimator.loss_curve_[-1] * (
                len(Xc) if rel is None else _chunk_weight(parts[2], rel[0]))
        else:
            estimator.partial_fit(Xc, yc, **kw)
        del parts, Xc, yc
    if not ours:
        return None
    n = stream["layout"][0]
    return loss_sum / (n if rel is None else n / rel[1])
