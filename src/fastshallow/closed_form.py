"""The analytic solution of linear regression (section 3.1.1)."""
from __future__ import annotations

import numpy as np

from . import _checks as C

__all__ = ["least_squares"]


def least_squares(X, y, fit_intercept: bool = True):
    """Minimize ``|X w + b - y|^2`` exactly; returns ``(w, b)``.

    Solved with an SVD-based least-squares routine (``numpy.linalg.lstsq``) on centered data,
    never by inverting ``X^T X`` (which squares the condition number).  With linearly dependent
    features (rank-deficient X) the minimum-norm solution among all minimizers is returned: the
    predictions are still optimal but the individual weights are not identifiable.  `y` of shape
    (n,) gives `w` of shape (k,) and a float `b`; `y` of shape (n, m) gives (k, m) and (m,).
    Computed in float64."""
    X = C.as_array("X", X, ndim=2, dtype=np.float64, finite=True)
    Y = C.as_array("y", y, ndim=(1, 2), dtype=np.float64, finite=True)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have {X.shape[0]} rows (one per example), got shape {Y.shape}")
    if X.shape[0] == 0:
        raise ValueError("X must have at least one example")
    if fit_intercept:
        x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
        w, *_ = np.linalg.lstsq(X - x_mean, Y - y_mean, rcond=None)
        b = y_mean - x_mean @ w
    else:
        w, *_ = np.linalg.lstsq(X, Y, rcond=None)
        b = np.zeros(Y.shape[1:]) if Y.ndim == 2 else 0.0
    return w, (float(b) if Y.ndim == 1 else b)
