"""Losses: per-example values as a :class:`~fastshallow.autograd.Tensor` whose ``backward()``
sends the gradient of their sum to the network that produced the predictions.

- :class:`L2Loss`: ``0.5 * (y_hat - y)**2`` per example (averaged over outputs when there are
  several, as Gluon does);
- :class:`HuberLoss`: squared near zero, linear in the tails;
- :class:`SoftmaxCrossEntropyLoss`: from logits and integer labels, fused and stable.
"""
from __future__ import annotations

import numpy as np

from . import _checks as C
from .autograd import Tensor, tensor
from .kernels import softmax_cross_entropy

__all__ = ["Loss", "L2Loss", "HuberLoss", "SoftmaxCrossEntropyLoss"]


def _upstream(y_hat):
    return y_hat.grad_fn if isinstance(y_hat, Tensor) else None


def _finish(loss: np.ndarray, y_hat, grad_of_sum) -> Tensor:
    """Wrap per-example `loss` so that backward(g) sends g[i] * d loss_i / d y_hat upstream."""
    upstream = _upstream(y_hat)

    def backward(g: np.ndarray) -> None:
        if upstream is None:
            raise RuntimeError("the predictions were not produced by a fastshallow layer, so "
                               "there are no parameters to send a gradient to")
        G = grad_of_sum()
        upstream(G * g.reshape((-1,) + (1,) * (G.ndim - 1)).astype(G.dtype, copy=False))

    return tensor(loss, backward)


class Loss:
    """Base class: ``loss(y_hat, y)`` returns per-example losses (shape (batch,))."""

    def __call__(self, y_hat, y) -> Tensor:
        return self.forward(y_hat, y)

    def forward(self, y_hat, y) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _regression_pair(y_hat, y):
    P = C.as_array("y_hat", y_hat)
    if P.ndim == 0:
        raise ValueError("y_hat must have a batch dimension, got a scalar")
    T = C.as_array("y", y, dtype=P.dtype)
    if T.size != P.size:
        raise ValueError(f"y must have one target per prediction: y_hat has shape {P.shape} "
                         f"({P.size} values), y has shape {T.shape} ({T.size} values)")
    return P, T.reshape(P.shape)


class L2Loss(Loss):
    """Squared error ``0.5 * (y_hat - y)**2`` per example; `y` is reshaped to `y_hat`'s shape
    (so (n,) targets match (n, 1) predictions) and several outputs are averaged."""

    def forward(self, y_hat, y) -> Tensor:
        P, T = _regression_pair(y_hat, y)
        D = P - T
        per_out = max(P[0].size, 1) if P.shape[0] else 1
        with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported by train()
            loss = (D * D).reshape(P.shape[0], -1).sum(axis=1) * P.dtype.type(0.5 / per_out) \
                if P.size else np.zeros(P.shape[0], P.dtype)
        return _finish(loss.astype(P.dtype), y_hat, lambda: D / P.dtype.type(per_out))


class HuberLoss(Loss):
    """The Huber loss with threshold `delta`, in its standard form (as in PyTorch's
    ``HuberLoss`` and Huber 1964): ``0.5 * d**2`` where ``|d| <= delta`` and
    ``delta * (|d| - delta / 2)`` beyond, with ``d = y_hat - y``; averaged over outputs.
    (Gluon's ``HuberLoss(rho)`` is this divided by rho.)"""

    def __init__(self, delta: float = 1.0):
        self.delta = C.real("delta", delta, low=0.0, low_open=True)

    def forward(self, y_hat, y) -> Tensor:
        P, T = _regression_pair(y_hat, y)
        D = P - T
        A = np.abs(D)
        d = P.dtype.type(self.delta)
        with np.errstate(over="ignore", invalid="ignore"):
            per = np.where(A <= d, 0.5 * D * D, d * (A - 0.5 * d))
        per_out = max(P[0].size, 1) if P.shape[0] else 1
        loss = per.reshape(P.shape[0], -1).mean(axis=1) if P.size else np.zeros(P.shape[0])
        return _finish(loss.astype(P.dtype), y_hat,
                       lambda: np.clip(D, -d, d) / P.dtype.type(per_out))


class SoftmaxCrossEntropyLoss(Loss):
    """Cross-entropy of softmax(logits) against integer labels, computed from the logits in one
    fused, stable pass (log-sum-exp with the row maximum subtracted), so it stays finite where
    exponentiating first overflows.  ``label_smoothing = eps`` mixes the one-hot target with the
    uniform distribution: ``(1 - eps) * onehot + eps / classes``."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = C.real("label_smoothing", label_smoothing, low=0.0, high=1.0)

    def forward(self, y_hat, y) -> Tensor:
        Z = C.as_array("y_hat", y_hat, ndim=2)
        loss, grad = softmax_cross_entropy(Z, y, label_smoothing=self.label_smoothing)
        return _finish(loss, y_hat, lambda: grad)
