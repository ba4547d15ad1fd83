"""Accuracy and the information-theory quantities of section 3.4.3.

Distributions are arrays whose last axis sums to one; logarithms are natural (nats)."""
from __future__ import annotations

import numpy as np

from . import _checks as C

__all__ = ["accuracy", "entropy", "cross_entropy_between", "kl_divergence"]


def accuracy(y_hat, y) -> float:
    """The number of correct predictions (a count, as in the book): `y_hat` holds class scores
    (n, classes) -- argmax is the prediction -- or predicted labels (n,); `y` the true labels,
    one per prediction (compared as values)."""
    P = C.as_array("y_hat", y_hat, dtypes=None)
    if P.ndim > 2:  # flattened, its values would be taken for that many predictions
        raise ValueError(f"y_hat must be class scores (n, classes) or labels (n,), got shape "
                         f"{P.shape}")
    if P.ndim == 2 and P.shape[1] > 1:
        pred = P.argmax(axis=1)
    else:
        pred = P.reshape(-1)
    truth = C.as_array("y", y, dtypes=None)
    if not C.one_per_row(truth.shape):
        raise ValueError(f"y must hold one label per row, shape (n,) or (n, 1), got shape "
                         f"{truth.shape}")
    truth = truth.reshape(-1)
    if truth.shape[0] != pred.shape[0]:
        raise ValueError(f"y must have one label per prediction ({pred.shape[0]}), "
                         f"got {truth.shape[0]}")
    # Compared as values: casting predictions to the labels' integer dtype would count a
    # predicted 1.9 as a hit for label 1.
    return float((pred == truth).sum())


def _dist(name: str, p) -> np.ndarray:
    P = C.as_array(name, p, dtype=np.float64, finite=True, allow_empty=False)
    if P.ndim == 0:
        raise ValueError(f"{name} must be a distribution (a vector of probabilities, or an "
                         f"array of them along its last axis), got the scalar {P}")
    if (P < 0).any():
        raise ValueError(f"{name} must hold probabilities >= 0")
    s = P.sum(axis=-1)
    if not np.allclose(s, 1.0, rtol=0, atol=1e-6 * P.shape[-1]):
        raise ValueError(f"{name} must sum to 1 along its last axis, sums are {s}")
    return P


def entropy(p) -> np.ndarray:
    """H(p) = -sum_j p_j log p_j (0 log 0 taken as 0)."""
    P = _dist("p", p)
    with np.errstate(divide="ignore", invalid="ignore"):
        # + 0.0: a certain outcome's terms sum to 0.0, whose negation is -0.0
        return -np.where(P > 0, P * np.log(P), 0.0).sum(axis=-1) + 0.0


def cross_entropy_between(p, q) -> np.ndarray:
    """H(p, q) = -sum_j p_j log q_j: the expected surprisal of q's model under the true p (inf
    where q gives zero probability to an outcome p allows)."""
    P, Q = _dist("p", p), _dist("q", q)
    if P.shape != Q.shape:
        raise ValueError(f"p and q must have the same shape, got {P.shape} and {Q.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(P > 0, P * np.log(Q), 0.0).sum(axis=-1)


def kl_divergence(p, q) -> np.ndarray:
    """D_KL(p || q) = H(p, q) - H(p) >= 0, zero exactly when p == q."""
    P, Q = _dist("p", p), _dist("q", q)
    if P.shape != Q.shape:
        raise ValueError(f"p and q must have the same shape, got {P.shape} and {Q.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(P > 0, P * (np.log(P) - np.log(Q)), 0.0).sum(axis=-1)
    # The terms' rounding can leave a sum of about -1e-17 for q within rounding of p, where
    # the true value is >= 0 (Gibbs' inequality)
    return np.maximum(d, 0.0)
