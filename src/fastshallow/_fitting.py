"""What the estimators, out-of-core and Dask training share: weights made relative to their mean
(also when their sum overflows), the thread-count and random_state checks made with the other
settings, the generators drawn from a random_state, and the snapshot that puts an estimator
back as it was when a call fails."""
from __future__ import annotations

import contextlib
import copy
import math
import numbers
from typing import Callable, Optional, Tuple

import numpy as np

from . import _checks as C
from ._config import MAX_THREADS

TINY = float(np.finfo(np.float64).tiny)  # the least normal float64


def report(what: str, loss: float, seconds: float) -> None:
    """The line an estimator with `verbose` prints after each epoch (or round) of training."""
    print(f"{what}, loss {loss:.6f}, {seconds:.3f} s", flush=True)


def check_threads(name: str, v) -> int:
    """A thread count the kernels accept, checked with the other settings: the kernel that
    would refuse it runs only after the model has been reset."""
    v = C.positive_int(name, v)
    if v > MAX_THREADS:
        raise ValueError(f"{name} must be at most {MAX_THREADS}, got {v}")
    return v


def check_random_state(random_state) -> None:
    """Refuse what :func:`rng_from` cannot use, without drawing from it."""
    if random_state is None or isinstance(random_state,
                                          (np.random.Generator, np.random.RandomState)):
        return
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return
    raise TypeError(f"random_state must be None, an int, a numpy RandomState or Generator, got "
                    f"{type(random_state).__name__} {random_state!r}"[:200])


def rng_from(random_state, stream: Optional[int] = None) -> np.random.Generator:
    """A numpy Generator from scikit-learn's kinds of `random_state`, the same for every way
    of fitting.

    None: fresh entropy; an int (Python's or NumPy's): that seed; a ``RandomState``: a seed
    drawn from it (so that successive fits differ, as scikit-learn specifies); a
    ``Generator``: used as it is.  `stream` makes a seed give another, independent stream
    (seed sequence ``[seed, stream]``): the chunk order or the partitions' seeds must not
    repeat the draws of the initial weights."""
    check_random_state(random_state)
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(0, 2**31 - 1))
    else:
        seed = int(random_state)
    return np.random.default_rng(seed if stream is None else [seed, stream])


def run_rng(random_state, fallback, stream: int) -> np.random.Generator:
    """The generator of a run's own draws (fit_out_of_core's chunk order, fit_dask's partition
    seeds): `random_state` when given, else one derived from `fallback` (the estimator's own
    random_state) in stream `stream`, so that it does not repeat the initial weights' draws."""
    if random_state is None:
        return rng_from(fallback, stream=stream)
    return rng_from(random_state)


@contextlib.contextmanager
def unchanged_on_error(estimator):
    """Put back every attribute of `estimator` when the block raises: scikit-learn's
    validate_data sets n_features_in_ while it checks, and training changes the layer, the
    optimizer and the generator as it goes, so a refused or failed call would otherwise leave
    a half-changed model.  Hyper-parameters stay the caller's own objects (a Generator given as
    random_state is not rewound).  An estimator whose attributes cannot be deep-copied (not one
    of scikit-learn's) is left as the failed call left it."""
    state = getattr(estimator, "__dict__", None)
    curve = state.get("loss_curve_") if isinstance(state, dict) else None
    kept = len(curve) if isinstance(curve, list) else None
    try:
        params = estimator.get_params(deep=False) if hasattr(estimator, "get_params") else {}
        memo = {id(v): v for v in params.values()}
        if kept is not None:
            # Training only appends to the history: it is put back by cutting it, not copied
            # (a copy at every call made a long stream of partial_fit calls quadratic).
            memo[id(curve)] = curve
        saved = copy.deepcopy(state, memo)
    except Exception:  # documented above: nothing to put back
        saved = None
    try:
        yield
    except BaseException:
        if saved is not None:
            state.clear()
            state.update(saved)
            if kept is not None:
                del curve[kept:]
        raise


def ratio(a: float, b: float) -> float:
    """a / b, inf rather than an exception when it overflows."""
    with np.errstate(over="ignore", divide="ignore"):
        return float(np.float64(a) / np.float64(b))


def weight_scale(factor: float, w_max: float, rescaled_sum: Callable[[float], float],
                  n: int) -> Tuple[float, float]:
    """How the n weights w of a data set are made relative (mean 1): ``w / divisor * factor``,
    returned as (divisor, factor).

    `factor` is the caller's n / sum(w), used with divisor 1 unless the sum overflowed (factor
    0: every weight would become 0 and nothing be learned) or underflowed (subnormal weights:
    factor inf or imprecise).  Then the weights are divided by their maximum first, which puts
    their sum between 1 and n; ``rescaled_sum(w_max)`` must return ``sum(w / w_max)``."""
    if TINY <= factor < math.inf:
        return 1.0, factor
    return w_max, n / rescaled_sum(w_max)
