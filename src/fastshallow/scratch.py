"""The from-scratch building blocks of sections 3.2 and 3.6, on the library's parameters.

``linreg(X, w, b)`` and ``squared_loss(y_hat, y)`` return Tensors, so
``squared_loss(linreg(X, w, b), y).backward()`` fills ``w.grad`` and ``b.grad`` and
``sgd([w, b], lr, batch_size)`` updates them, as in the book.  ``softmax`` and the pick-based
``cross_entropy`` are the chapter's teaching versions, naive on purpose: on a Tensor they pass
gradients back, so ``cross_entropy(softmax(linreg(X, W, b)), y)`` trains as in section 3.6, and
it breaks down where the chapter says it does (see
:class:`~fastshallow.losses.SoftmaxCrossEntropyLoss` for the stable one).
"""
from __future__ import annotations

import numpy as np

from . import _checks as C
from . import _config
from ._config import get_num_threads
from ._ext import kernels as _k
from .autograd import Parameter, Tensor, _tensor
from .kernels import matmul_bias, matmul_bias_backward

__all__ = ["linreg", "squared_loss", "sgd", "softmax", "cross_entropy"]


def _param(name: str, p) -> Parameter:
    if not isinstance(p, Parameter):
        raise TypeError(f"{name} must be a fastshallow Parameter (e.g. fs.Parameter(np.zeros("
                        f"(2, 1)))), got {type(p).__name__}")
    return p


def _upstream(a):
    """Where a gradient for `a` goes: its producer's grad_fn, or None for a plain array."""
    return a.grad_fn if isinstance(a, Tensor) else None


def linreg(X, w: Parameter, b: Parameter) -> Tensor:
    """The linear model ``X @ w + b``; `w` is (k, m) or (k,), `b` has m entries or one."""
    w = _param("w", w)
    b = _param("b", b)
    if w.data.ndim == 0:
        raise ValueError("w must have shape (k,) or (k, m) (one row per column of X), got "
                         "shape ()")
    X = C.as_array("X", X, dtype=w.dtype, ndim=2)
    W2 = w.data.reshape(w.data.shape[0], -1)
    if X.shape[1] != W2.shape[0]:
        raise ValueError(f"X must have {W2.shape[0]} columns (the rows of w), got shape {X.shape}")
    m = W2.shape[1]
    if b.data.size not in (1, m):
        raise ValueError(f"b must have 1 or {m} entries, got shape {b.shape}")
    bias = np.broadcast_to(b.data.reshape(-1), (m,)).astype(w.dtype)
    Y = matmul_bias(X, W2, bias)
    out_shape = (X.shape[0],) if w.data.ndim == 1 else Y.shape

    def backward(G):
        G2 = np.ones(Y.shape, w.dtype) if G is None else \
            np.ascontiguousarray(G.reshape(Y.shape), dtype=w.dtype)
        dW, db = matmul_bias_backward(X, G2)
        w.grad[...] = dW.reshape(w.shape)
        b.grad[...] = db.sum() if b.data.size == 1 and m > 1 else db.reshape(b.shape)

    return _tensor(Y.reshape(out_shape), backward)


def squared_loss(y_hat, y) -> Tensor:
    """``(y_hat - y.reshape(y_hat.shape))**2 / 2``, elementwise (the book's form)."""
    P = C.as_array("y_hat", y_hat)
    T = C.as_array("y", y, dtype=P.dtype)
    C.same_rows("y", T.shape, "y_hat", P.shape)
    D = P - T.reshape(P.shape)
    upstream = _upstream(y_hat)

    def backward(g):
        if upstream is None:
            raise RuntimeError("y_hat was not produced by linreg or a layer; nothing to update")
        upstream(D if g is None else D * g)

    return _tensor(0.5 * D * D, backward)


def sgd(params, lr: float, batch_size: int) -> None:
    """Minibatch SGD: ``param -= lr * param.grad / batch_size`` for each parameter, in place."""
    if isinstance(params, Parameter) or not hasattr(params, "__iter__"):
        raise TypeError(f"params must be a list of fastshallow Parameters, got "
                        f"{type(params).__name__}")
    # Everything is checked before the first update: a refusal after it would leave some
    # parameters stepped and others not.  What is checked here is all the compiled update
    # needs, so it runs without the wrapper's per-call checks (as SGD.step does).
    buffers = []
    for i, p in enumerate(params):
        if type(p) is not Parameter:
            _param(f"params[{i}]", p)
        data, grad = p.data, p.grad  # p.data raises for a deferred parameter
        C.parameter_buffers(p.name, data, grad)
        buffers.append((data, grad))
    # The book's loop calls this on every minibatch: the usual case costs a few tests.
    if type(lr) is not float or not 0 < lr <= C.F32_MAX:
        lr = C.real("lr", lr, low=0.0, low_open=True)
        for data, _ in buffers:
            C.finite_in("lr", lr, data.dtype, "float32 parameters")
    if type(batch_size) is not int or batch_size <= 0:
        batch_size = C.positive_int("batch_size", batch_size)
    update, bs = _k().sgd_update, float(batch_size)
    for data, grad in buffers:
        if data.size:
            update(data, grad, lr, bs, 0.0, 0.0, None,
                   1 if data.size * 4 < _config.DEFAULT_SERIAL_WORK else get_num_threads())


def softmax(X) -> np.ndarray:
    """The chapter's softmax: ``exp(X) / exp(X).sum(1)`` row by row, computed naively on
    purpose -- it overflows for logits above ~88 (float32); :func:`fastshallow.kernels.softmax`
    is the stable one.

    On a Tensor from ``linreg`` or a layer it returns a Tensor whose backward sends the
    softmax's gradient on, so ``cross_entropy(softmax(linreg(X, W, b)), y)`` trains as in
    the book; on anything else, a plain array."""
    upstream = _upstream(X)
    X = C.as_array("X", X, ndim=(1, 2), dtypes=None)
    if X.dtype.kind != "f":
        X = X.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        E = np.exp(X)
        P = E / E.sum(axis=-1, keepdims=True)
    if upstream is None:
        return P

    def backward(G):
        # The softmax's Jacobian diag(p) - p p^T applied row by row, without forming it.
        G = np.ones_like(P) if G is None else G
        with np.errstate(invalid="ignore", over="ignore"):
            upstream(P * (G - (G * P).sum(axis=-1, keepdims=True)))

    out = _tensor(P, backward)
    out._probabilities = True  # what cross_entropy may send a gradient back through
    return out


def cross_entropy(y_hat, y) -> np.ndarray:
    """The chapter's cross-entropy on probabilities: ``-log(y_hat[i, y[i]])`` per example.
    Fragile by design (a probability that underflowed to 0 gives inf, and training on it
    stops with :class:`~fastshallow.TrainingDiverged`); for real work use
    :class:`~fastshallow.losses.SoftmaxCrossEntropyLoss` on the logits instead.

    On a Tensor from :func:`softmax` it returns a Tensor whose backward sends
    ``-g_i / y_hat[i, y_i]`` to the picked probabilities; on anything else, a plain array."""
    # Only softmax's probabilities: on a layer's raw outputs -log(z) is no loss at all, and
    # the plain array returned then is refused by the training loops before any update.
    upstream = _upstream(y_hat) if getattr(y_hat, "_probabilities", False) else None
    P = C.as_array("y_hat", y_hat, ndim=2)
    labels = C.as_labels("y", y, n_classes=P.shape[1], length=P.shape[0])
    rows = np.arange(P.shape[0])
    picked = P[rows, labels]
    with np.errstate(divide="ignore"):
        loss = -np.log(picked)
    if upstream is None:
        return loss

    def backward(g):
        dP = np.zeros_like(P)
        # A probability that underflowed to 0 sends -inf back, as the chapter's version would:
        # the loss is inf already and the training loop stops on it.
        # 0 / 0 too (a zero g), and g / a tiny probability past the largest float
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            dP[rows, labels] = -(1 if g is None else g) / picked
        upstream(dP)

    return _tensor(loss, backward)
