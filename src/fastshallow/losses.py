"""Losses: per-example values as a :class:`~fastshallow.autograd.Tensor` whose ``backward()``
sends the gradient of their sum to the network that produced the predictions.

- :class:`L2Loss`: ``0.5 * (y_hat - y)**2`` per example (averaged over outputs when there are
  several, as Gluon does);
- :class:`HuberLoss`: squared near zero, linear in the tails;
- :class:`SoftmaxCrossEntropyLoss`: from logits and integer labels, fused and stable.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _checks as C
from .autograd import Tensor, _tensor
from .kernels import regression_loss, softmax_cross_entropy

__all__ = ["Loss", "L2Loss", "HuberLoss", "SoftmaxCrossEntropyLoss"]


def _upstream(y_hat):
    return y_hat.grad_fn if isinstance(y_hat, Tensor) else None


def _finish(loss: np.ndarray, y_hat, grad_of_sum) -> Tensor:
    """Wrap per-example `loss` so that backward(g) sends g[i] * d loss_i / d y_hat upstream."""
    upstream = _upstream(y_hat)

    def backward(g: Optional[np.ndarray]) -> None:
        if upstream is None:
            raise RuntimeError("the predictions were not produced by a fastshallow layer, so "
                               "there are no parameters to send a gradient to")
        G = grad_of_sum()
        if g is not None:  # None: the plain sum, whose gradient is G itself
            G = G * g.reshape((-1,) + (1,) * (G.ndim - 1)).astype(G.dtype, copy=False)
        upstream(G)

    return _tensor(loss, backward)


class Loss:
    """Base class: ``loss(y_hat, y)`` returns per-example losses (shape (batch,))."""

    def __call__(self, y_hat, y) -> Tensor:
        """The per-example losses of predictions `y_hat` (a network's output for a minibatch,
        first axis the examples) against the targets `y`, as a
        :class:`~fastshallow.autograd.Tensor` of shape (batch,).

        Its ``backward()`` sends the gradient of the losses' *sum* back to the layers that
        produced `y_hat`, filling their parameters' ``.grad`` (then step the optimizer with
        the batch size); ``l.mean().backward()`` sends that of their mean instead (then step
        with the default batch size, 1).  When `y_hat` did not come from a fastshallow layer,
        ``backward()`` raises RuntimeError: there are no parameters to send a gradient to."""
        return self.forward(y_hat, y)

    def forward(self, y_hat, y) -> Tensor:  # pragma: no cover - abstract
        """What calling the loss computes: see :meth:`__call__`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class L2Loss(Loss):
    """Squared error ``0.5 * (y_hat - y)**2`` per example; `y` is reshaped to `y_hat`'s shape
    (so (n,) targets match (n, 1) predictions) and several outputs are averaged."""

    def forward(self, y_hat, y) -> Tensor:
        """Per-example ``0.5 * (y_hat - y)**2`` (averaged over outputs) as a Tensor of shape
        (batch,) with ``backward()``: `y_hat` float32 or float64 predictions (batch, ...), `y`
        one target per prediction, read in `y_hat`'s shape and dtype."""
        loss, grad = regression_loss(y_hat, y)
        return _finish(loss, y_hat, lambda: grad)


class HuberLoss(Loss):
    """The Huber loss with threshold `delta`, in its standard form (as in PyTorch's
    ``HuberLoss`` and Huber 1964): ``0.5 * d**2`` where ``|d| <= delta`` and
    ``delta * (|d| - delta / 2)`` beyond, with ``d = y_hat - y``; averaged over outputs.
    (Gluon's ``HuberLoss(rho)`` is this divided by rho.)"""

    def __init__(self, delta: float = 1.0):
        self.delta = C.huber_delta(delta)

    def forward(self, y_hat, y) -> Tensor:
        """Per-example Huber losses (averaged over outputs) as a Tensor of shape (batch,) with
        ``backward()``: `y_hat` float32 or float64 predictions (batch, ...), `y` one target per
        prediction, read in `y_hat`'s shape and dtype."""
        loss, grad = regression_loss(y_hat, y, delta=self.delta)
        return _finish(loss, y_hat, lambda: grad)


class SoftmaxCrossEntropyLoss(Loss):
    """Cross-entropy of softmax(logits) against integer labels, computed from the logits in one
    fused, stable pass (log-sum-exp with the row maximum subtracted), so it stays finite where
    exponentiating first overflows.  ``label_smoothing = eps`` mixes the one-hot target with the
    uniform distribution: ``(1 - eps) * onehot + eps / classes``."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = C.label_smoothing(label_smoothing)

    def forward(self, y_hat, y) -> Tensor:
        """Per-example cross-entropy as a Tensor of shape (batch,) with ``backward()``:
        `y_hat` the raw scores (logits, not probabilities) of shape (batch, classes), `y` the
        class indices (batch,), whole numbers in ``range(classes)``."""
        Z = C.as_array("y_hat", y_hat, ndim=2)
        loss, grad = softmax_cross_entropy(Z, y, label_smoothing=self.label_smoothing)
        return _finish(loss, y_hat, lambda: grad)
