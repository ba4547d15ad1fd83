"""The compiled kernels behind validated wrappers.

Every function here checks its arguments (dtype, rank, shape, layout, index range, scalar
ranges) and raises a clear TypeError / ValueError before any compiled code runs; the compiled
code then trusts what it gets.  float32 and float64 are both supported; non-contiguous inputs are
copied, outputs must be exact.  NaN and inf in features propagate as they would in NumPy.

Every kernel takes ``num_threads`` (default: :func:`fastshallow.get_num_threads`) and returns
bit-identical results for any thread count.  On the default count a call starts threads only
from about 16 million operations, and on a count given from about 65,000: beside a busy
process, a shorter call on the default count often waited a time slice for its second
thread, where nothing re-times it.
"""
from __future__ import annotations

import numpy as np

from . import _checks as C
from . import _config
from ._config import get_num_threads, resolve_threads
from ._ext import kernels as _k

__all__ = [
    "matmul_bias",
    "matmul_bias_backward",
    "softmax_cross_entropy",
    "softmax",
    "log_softmax",
    "sgd_update",
    "gather_rows",
    "regression_loss",
    "permutation",
]


def _same_dtype(ref_name: str, ref: np.ndarray, name: str, a: np.ndarray) -> None:
    if a.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {a.dtype}")


def matmul_bias(X, W, b=None, out=None, *, num_threads: int | None = None) -> np.ndarray:
    """``X @ W + b``: X is (n, k), W is (k, m), b is (m,) or None; float32 or float64, all alike.

    `out`, when given, must be a C-contiguous writeable (n, m) array of the same dtype that does
    not overlap the inputs."""
    if num_threads is None:
        # Arguments that are already exactly right are recognized in compiled code; anything
        # else goes through the checks below, which say what is wrong.
        Y = _k().matmul_bias_if_plain(X, W, b, out, get_num_threads(),
                                      _config.DEFAULT_SERIAL_WORK)
        if Y is not None:
            return Y
    X = C.as_array("X", X, ndim=2)
    W = C.as_array("W", W, ndim=2)
    _same_dtype("X", X, "W", W)
    n, k = X.shape
    if W.shape[0] != k:
        raise ValueError(f"W must have {k} rows (the columns of X), got shape {W.shape}")
    m = W.shape[1]
    if b is not None:
        b = C.as_array("b", b, ndim=1)
        _same_dtype("X", X, "b", b)
        if b.shape[0] != m:
            raise ValueError(f"b must have {m} entries (the columns of W), got shape {b.shape}")
    if out is None:
        out = np.empty((n, m), X.dtype)
    else:
        out = C.as_out("out", out, (n, m), X.dtype, [("X", X), ("W", W), ("b", b)])
    if n == 0 or m == 0:
        return out
    if k == 0:
        out[...] = 0 if b is None else b
        return out
    _k().matmul_bias(X, W, b, out, resolve_threads(num_threads, n * k * m))
    return out


def matmul_bias_backward(X, G, *, num_threads: int | None = None):
    """The gradients of ``Y = X @ W + b`` given ``G = dL/dY``: returns ``(X.T @ G, G.sum(0))``."""
    if num_threads is None:  # recognized in compiled code when already exactly right
        res = _k().matmul_bias_backward_if_plain(X, G, get_num_threads(),
                                                 _config.DEFAULT_SERIAL_WORK)
        if res is not None:
            return res
    X = C.as_array("X", X, ndim=2)
    G = C.as_array("G", G, ndim=2)
    _same_dtype("X", X, "G", G)
    n, k = X.shape
    if G.shape[0] != n:
        raise ValueError(f"G must have {n} rows (the rows of X), got shape {G.shape}")
    m = G.shape[1]
    dW = np.zeros((k, m), X.dtype)
    db = np.zeros(m, X.dtype)
    if n and k and m:
        _k().matmul_bias_backward(X, G, dW, db, resolve_threads(num_threads, n * k * m))
    elif n and m:
        # No features: dW is empty, but the bias still gets its gradient (rows summed in
        # order, as the kernel does).
        np.add.reduce(G, axis=0, out=db)
    return dW, db


def softmax_cross_entropy(logits, labels, *, label_smoothing: float = 0.0,
                          num_threads: int | None = None):
    """Per-example softmax cross-entropy of `logits` (n, m) against integer `labels` (n,) and its
    gradient with respect to the logits, in one pass: returns ``(loss (n,), grad (n, m))`` with
    ``grad = softmax(logits) - target`` (not divided by n).

    Stable for any finite logits: the row maximum is subtracted before exponentiating.  With
    ``label_smoothing = eps`` the target puts ``1 - eps + eps / m`` on the label and ``eps / m``
    on every other class."""
    Z = C.as_array("logits", logits, ndim=2)
    n, m = Z.shape
    if m == 0:
        raise ValueError("logits must have at least one column (class)")
    y = C.as_labels("labels", labels, n_classes=m, length=n)
    eps = C.label_smoothing(label_smoothing)
    loss = np.empty(n, Z.dtype)
    grad = np.empty((n, m), Z.dtype)
    if n:
        _k().softmax_cross_entropy(Z, y, eps, loss, grad, resolve_threads(num_threads, n * m * 8))
    return loss, grad


def _softmax(name: str, X, log: bool, num_threads):
    Z = C.as_array(name, X, ndim=(1, 2))
    flat = Z.reshape(1, -1) if Z.ndim == 1 else Z
    out = np.empty_like(flat)
    if flat.size:
        _k().softmax(flat, out, log, resolve_threads(num_threads, flat.size * 8))
    return out.reshape(Z.shape)


def softmax(X, *, num_threads: int | None = None) -> np.ndarray:
    """Row-wise softmax of a 2-D array (a 1-D array is one row), stable for any finite input."""
    return _softmax("X", X, False, num_threads)


def log_softmax(X, *, num_threads: int | None = None) -> np.ndarray:
    """Row-wise log-softmax, computed as ``x - max - log(sum(exp(x - max)))`` (never log(0))."""
    return _softmax("X", X, True, num_threads)


def sgd_update(param, grad, lr: float, batch_size: int, momentum: float = 0.0,
               weight_decay: float = 0.0, velocity=None, *, num_threads: int | None = None):
    """Minibatch SGD step, in place on `param` (and `velocity`); returns `param`.

    ``d = grad / batch_size + weight_decay * param``; without momentum ``param -= lr * d``; with
    it ``velocity = momentum * velocity + d`` and ``param -= lr * velocity``.  `grad` is the
    gradient of the *summed* minibatch loss, as in the book's ``sgd``."""
    # Arguments that are already exactly right are recognized (and the update run) in compiled
    # code; anything else goes through the checks below, which say what is wrong.
    if num_threads is None and _k().sgd_update_if_plain(
            param, grad, lr, batch_size, momentum, weight_decay, velocity, get_num_threads(),
            _config.DEFAULT_SERIAL_WORK):
        return param
    param = C.as_writeable("param", param)
    grad = C.as_array("grad", grad)
    _same_dtype("param", param, "grad", grad)
    if grad.shape != param.shape:
        raise ValueError(f"grad must have the shape of param {param.shape}, got {grad.shape}")
    lr = C.finite_in("lr", C.real("lr", lr, low=0.0, low_open=True), param.dtype,
                     "float32 parameters")
    batch_size = C.positive_int("batch_size", batch_size)
    momentum = C.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
    weight_decay = C.finite_in("weight_decay", C.real("weight_decay", weight_decay, low=0.0),
                               param.dtype, "float32 parameters")
    if velocity is not None:
        velocity = C.as_writeable("velocity", velocity)
        _same_dtype("param", param, "velocity", velocity)
        if velocity.shape != param.shape:
            raise ValueError(f"velocity must have the shape of param {param.shape}, "
                             f"got {velocity.shape}")
        if np.may_share_memory(velocity, param) or np.may_share_memory(velocity, grad):
            raise ValueError("velocity must not overlap param or grad")
    elif momentum:
        raise ValueError("momentum > 0 needs a velocity buffer (velocity=np.zeros_like(param))")
    if np.may_share_memory(param, grad):
        raise ValueError("grad must not overlap param")
    if param.size:
        _k().sgd_update(param.reshape(-1), grad.reshape(-1), lr, float(batch_size), momentum,
                        weight_decay, None if velocity is None else velocity.reshape(-1),
                        resolve_threads(num_threads, param.size * 4))
    return param


_GATHER_SOURCES = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))


def gather_rows(src, indices, out=None, scale: float | np.floating | None = None, *, dtype=None,
                num_threads: int | None = None) -> np.ndarray:
    """``src[indices] * scale`` in one pass: the rows of `src` (uint8, float32 or float64, any
    number of trailing dimensions) picked by `indices`, converted to a float output.

    The output dtype is `out`'s, else `dtype`, else float32 for uint8 sources and the source's
    own dtype otherwise.  ``scale=1/255`` turns uint8 pixels into [0, 1] floats."""
    if num_threads is None and dtype is None:  # recognized in compiled code when exactly right
        res = _k().gather_rows_if_plain(src, indices, out, scale, get_num_threads(),
                                        _config.DEFAULT_SERIAL_WORK)
        if res is not None:
            return res
    src = C.as_array("src", src, dtypes=_GATHER_SOURCES)
    if src.ndim < 1:
        raise ValueError(f"src must have at least one dimension, got shape {src.shape}")
    idx = C.as_indices("indices", indices, src.shape[0])
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {C._describe(out)}")
        # native: a byte-swapped float out is then refused by as_out, saying why
        odt = C.float_dtype("out's dtype", C.native(out.dtype))
    elif dtype is not None:
        odt = C.float_dtype("dtype", dtype)
    else:
        odt = np.dtype(np.float32) if src.dtype == np.uint8 else src.dtype
    shape = (idx.shape[0],) + src.shape[1:]
    if out is None:
        out = np.empty(shape, odt)
    else:
        out = C.as_out("out", out, shape, odt, [("src", src), ("indices", idx)])
    if scale is not None:
        scale = C.finite_in("scale", C.real("scale", scale), odt, "a float32 output")
    if out.size == 0:
        return out
    if src.dtype != np.uint8 and src.dtype != odt:
        # Between float types NumPy converts; then scaled in the output type, as the kernel does.
        np.copyto(out, src[idx], casting="unsafe")
        if scale is not None:
            out *= odt.type(scale)
        return out
    _k().gather_rows(src.reshape(src.shape[0], -1), idx, out.reshape(idx.shape[0], -1),
                     1.0 if scale is None else scale, resolve_threads(num_threads, out.size))
    return out


def regression_loss(y_hat, y, *, delta: float | None = None,
                    num_threads: int | None = None):
    """Per-example squared error ``0.5 * (y_hat - y)**2`` -- or, with `delta`, the Huber loss
    (``0.5 * d**2`` where ``|d| <= delta``, ``delta * (|d| - delta / 2)`` beyond) -- averaged
    over each example's outputs, and its gradient with respect to `y_hat`.

    `y_hat` is (n, ...) float32 or float64; `y` holds one target per prediction -- n rows of
    as many values as y_hat's, so (n,) and (n, 1) are alike -- and is read in `y_hat`'s shape
    and dtype.  Returns ``(loss (n,), grad)`` with grad shaped like `y_hat`."""
    if delta is not None:
        delta = C.huber_delta(delta)
    # Before the compiled path, which takes any y of y_hat's size.  The book's loop comes here
    # every minibatch, so the usual fits -- the same shape, or the same rows and size ((n,)
    # against (n, 1)) -- are recognized in a few tests; other inputs are checked below.
    try:
        ys, ps = y.shape, y_hat.shape
    except AttributeError:
        pass
    else:
        if ps and ys != ps and (not ys or ys[0] != ps[0] or y.size != y_hat.size):
            C.same_rows("y", ys, "y_hat", ps)
    if num_threads is None:  # recognized in compiled code when already exactly right
        res = _k().regression_loss_if_plain(y_hat, y, delta is not None,
                                            0.0 if delta is None else delta, get_num_threads(),
                                            _config.DEFAULT_SERIAL_WORK)
        if res is not None:
            return res
    P = C.as_array("y_hat", y_hat)
    if P.ndim == 0:
        raise ValueError("y_hat must have a batch dimension, got a scalar")
    T = y if (type(y) is np.ndarray and y.dtype == P.dtype and y.flags.c_contiguous) else \
        C.as_array("y", y, dtype=P.dtype)
    C.same_rows("y", T.shape, "y_hat", P.shape)
    n = P.shape[0]
    loss = np.zeros(n, P.dtype)
    grad = np.empty(P.shape, P.dtype)
    if P.size:
        P2 = P.reshape(n, -1)
        _k().regression_loss(P2, T.reshape(P2.shape), delta is not None,
                             0.0 if delta is None else delta, loss, grad.reshape(P2.shape),
                             resolve_threads(num_threads, P.size * 4))
    return loss, grad


def permutation(n: int, seed: int, *, num_threads: int | None = None) -> np.ndarray:
    """A random permutation of ``range(n)`` (int64), the same for the same `seed` (an int in
    [0, 2**64)) whatever the thread count: Fisher-Yates driven by SplitMix64, and from 2**19
    rows on a parallel bucketed shuffle (every index to one of 32-256 random buckets, then each
    bucket shuffled); on a million rows 2.3x (one core) to 5x (two) faster than
    ``numpy.random.Generator.permutation``, which matters once an epoch."""
    n = C.positive_int("n", n, allow_zero=True)
    if n > C.INT64_MAX // 8:  # its int64 result could not be allocated
        raise ValueError(f"n must be at most {C.INT64_MAX // 8}, got {n}")
    seed = C.positive_int("seed", seed, allow_zero=True)
    if seed >= 1 << 64:
        raise ValueError(f"seed must be < 2**64, got {seed}")
    # An element costs about as much as 100 multiply-adds (6.5 ns on one core here).
    return _k().permutation(n, seed, resolve_threads(num_threads, 100 * n))
