"""The analytic solution of linear regression (section 3.1.1)."""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np

from . import _checks as C

__all__ = ["least_squares"]


def least_squares(X, y, fit_intercept: bool = True) -> Tuple[np.ndarray, Union[float, np.ndarray]]:
    """Minimize ``|X w + b - y|^2`` exactly; returns ``(w, b)``.

    Solved with an SVD-based least-squares routine (``numpy.linalg.lstsq``) on centered data,
    never by inverting ``X^T X`` (which squares the condition number).  With linearly dependent
    features (rank-deficient X) the minimum-norm solution among all minimizers is returned: the
    predictions are still optimal but the individual weights are not identifiable.  `y` of shape
    (n,) gives `w` of shape (k,) and a float `b`; `y` of shape (n, m) gives (k, m) and (m,).
    With ``fit_intercept=False`` the model has no bias (``|X w - y|^2``) and `b` is zero.
    Computed in float64."""
    X = C.as_array("X", X, ndim=2, dtype=np.float64, finite=True)
    Y = C.as_array("y", y, ndim=(1, 2), dtype=np.float64, finite=True)
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have {X.shape[0]} rows (one per example), got shape {Y.shape}")
    if X.shape[0] == 0:
        raise ValueError("X must have at least one example")
    # Solved for X / sx and y / sy (sy a power of two per target column, so that a small
    # target fitted beside a huge one keeps its precision), so that centering and the SVD
    # cannot overflow on huge (finite) values; powers of two scale exactly, which leaves every
    # other answer's bits as they were.  (One scale for all of X: scaling its columns apart
    # would change which solution has the minimum norm.)
    sx, sy = float(_powers_of_two_near(X)), _powers_of_two_near(Y, axis=0)
    Xs, Ys = X / sx, Y / sy  # the one copy of each, centred in place
    if fit_intercept:
        x_mean, y_mean = Xs.mean(axis=0), Ys.mean(axis=0)
        Xs -= x_mean
        Ys -= y_mean
        ws, *_ = np.linalg.lstsq(Xs, Ys, rcond=None)
        bs = y_mean - x_mean @ ws
    else:
        ws, *_ = np.linalg.lstsq(Xs, Ys, rcond=None)
        bs = np.zeros(Y.shape[1:])
    with np.errstate(over="ignore"):
        w, b = ws * (sy / sx), bs * sy
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise ValueError("the least-squares solution is too large for float64 (y is "
                         f"about {np.max(sy):.3g} where X is about {sx:.3g})")
    return w, (float(b) if Y.ndim == 1 else b)


def _powers_of_two_near(A: np.ndarray, axis=None) -> np.ndarray:
    """The greatest powers of two not above max |A| (over `axis`; 1 where A is all zero): A
    over them lies within (-2, 2), and they are finite floats.  (max and -min rather than
    |A|, which would be another copy of A.)"""
    top = np.maximum(A.max(axis=axis, initial=0.0), -A.min(axis=axis, initial=0.0))
    return np.where(top == 0, 1.0, np.ldexp(1.0, np.frexp(top)[1] - 1))
