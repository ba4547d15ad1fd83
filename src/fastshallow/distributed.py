"""Data-parallel training on a Dask cluster: every partition is trained where it lives and the
models are averaged (``pip install 'fastshallow[dask]'``).

Two ways to train :class:`~fastshallow.estimators.SoftmaxRegression` or
:class:`~fastshallow.estimators.LinearRegression` on a Dask array:

- ``dask_ml.wrappers.Incremental(estimator).fit(X, y, classes=...)`` (or ``.partial_fit`` once
  per epoch): the model visits the blocks one after another, each a ``partial_fit`` -- one
  fused SGD epoch over the block -- on the worker that holds it.  Exactly sequential SGD with
  the blocks in random order, so it matches a single-machine fit; but only one worker computes
  at a time.

- :func:`fit_dask`: local SGD with periodic model averaging (also called parameter averaging or
  "FedAvg" with equal rules for every worker).  Every *round*, each partition starts from the
  current global model and trains `local_epochs` epochs of minibatch SGD on its own rows, on its
  worker, all partitions at once; the driver then replaces the global model by the average of
  the partition models, weighted by their numbers of rows (or total sample weight).  Only
  parameters travel (classes x features numbers per partition and round), never the data.

When does averaging match a single machine?  The loss of a linear or softmax model is convex,
and the average of models that each went downhill from the same start is at least as good as
their mean (Jensen); but it moves by the *average* of the partition steps, not their sum.  A
round of one local epoch over P partitions therefore behaves like one epoch of SGD with P times
larger minibatches at the same learning rate: P times fewer steps.  Measured on Fashion-MNIST in
4 partitions of 15000 rows, 10 epochs, batch 256 (test accuracy, mean of random_state 0, 1,
2; 2 workers; benches/bench_estimators.py, tests/test_dask.py):

=========================================  ======================  =========================
path                                       book: lr 0.1, constant  recipe: lr 0.05, momentum
                                                                   0.9, cosine schedule
=========================================  ======================  =========================
single machine, ``fit``                    0.833                   0.843
single machine, minibatches of 1024        0.816                   0.831
``Incremental``, 10 passes                 0.830                   0.843
``fit_dask`` (average every epoch)         0.817                   0.830
``fit_dask(lr_scale=4)``                   0.818                   0.841
``fit_dask(rounds=1, local_epochs=10)``    0.817                   0.831
=========================================  ======================  =========================

The plain average behaves exactly like the single machine with 4x larger minibatches.
``lr_scale=P`` multiplies each partition's learning rate by the number of partitions -- the
"linear scaling rule" of large-minibatch SGD -- so that the averaged model moves as far per
epoch as the sequential one; with a decaying schedule that matches the single machine (within
0.002 above).  With a constant rate it does not help: the larger rate's noise stays in the
last iterate.  So: average every epoch (the defaults ``local_epochs=1``, ``rounds =
epochs``), use ``schedule='cosine'``, and set ``lr_scale`` to the number of partitions as long
as ``lr * lr_scale`` is still a stable learning rate for minibatches P times larger; given
enough epochs every variant converges to the single-machine solution.  One-shot averaging
needs the least communication and relies on every partition holding enough iid data to fit
the model by itself.  The default ``lr_scale=1`` never diverges where the single-machine fit
does not.

Momentum buffers are local to a round (each round starts them at zero); the learning-rate
schedule follows a global step count, so ``schedule='cosine'`` spans all the rounds.
"""
from __future__ import annotations

import copy
import math
import time
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from . import _checks as C
from . import _fitting

if TYPE_CHECKING:  # pragma: no cover - for type checkers only (it imports scikit-learn)
    from .estimators import LinearRegression, SoftmaxRegression

__all__ = ["fit_dask"]

# fit_dask returns the estimator it was given
_Estimator = TypeVar("_Estimator", bound="SoftmaxRegression | LinearRegression")


def _local_round(state: dict, X, y, sw, seed: int, step0: int) -> tuple:
    """Train a copy of the global model on one partition; returns (coef, intercept, weight,
    mean loss).  Runs on a worker."""
    est = copy.deepcopy(state["template"])  # threads of one worker process share objects
    est.num_threads = state["threads"]
    est._begin(state["n_features"], state["dtype"], state["total_steps"],
               classes=state.get("classes"), target_shape=state.get("target_shape"))
    est.coef_ = np.array(state["coef"], copy=True)
    est.intercept_ = copy.copy(state["intercept"])
    est._opt.num_steps = int(step0)
    est._rng = np.random.default_rng(seed)
    kw = {"classes": state["classes"]} if state.get("classes") is not None else {}
    est._partial_fit(X, y, sample_weight=sw, epochs=state["local_epochs"],
                     total_steps=state["total_steps"], weight_scale=state["weight_scale"],
                     report_epochs=False, **kw)
    # The weights' total in the units of their divisor (1 unless the raw sum would overflow)
    weight = float(len(X)) if sw is None else float(np.sum(sw / state["weight_scale"][0]))
    return est.coef_, est.intercept_, weight, float(np.mean(est.loss_curve_[-1:]))


def _average(results: Sequence[tuple], dtype):
    w = np.array([r[2] for r in results], dtype=np.float64)
    if not w.sum() > 0:
        raise ValueError("every partition has zero total sample weight")
    w /= w.sum()
    coef = sum(wi * np.asarray(r[0], dtype=np.float64) for wi, r in zip(w, results))
    icpt = sum(wi * np.asarray(r[1], dtype=np.float64) for wi, r in zip(w, results))
    loss = float(sum(wi * r[3] for wi, r in zip(w, results)))
    return np.asarray(coef, dtype=dtype), np.asarray(icpt, dtype=dtype), loss


def _fit_averaged(estimator, blocks: List[tuple], block_rows: Sequence[int], n_features: int,
                  dtype, run: Callable[[list], list], *, classes=None, target_shape=None,
                  rounds: Optional[int], local_epochs: int, local_threads: Optional[int],
                  weight_scale: Optional[Tuple[float, float]], random_state,
                  lr_scale: float = 1.0):
    """The averaging loop, independent of how tasks run: `blocks` are (X, y, sw) per
    partition (arrays or Dask delayed objects), `run(calls)` executes a list of
    ``(function, args)`` and returns their results in order.  `weight_scale`: the (divisor,
    factor) of _fitting.weight_scale for the whole set's weights.

    Everything is checked before the estimator changes; when a round fails (a NaN in some
    block, a partition that diverges) the estimator is put back as it was."""
    from .estimators import LinearRegression, SoftmaxRegression

    if not isinstance(estimator, (SoftmaxRegression, LinearRegression)):
        raise TypeError("fit_dask trains fastshallow's SoftmaxRegression or LinearRegression; "
                        "for other estimators with partial_fit use "
                        "dask_ml.wrappers.Incremental")
    estimator._check_params()
    if getattr(estimator, "solver", "sgd") != "sgd":
        # The closed form is an SVD solve of the whole X (minimum-norm when X is rank
        # deficient); normal equations summed over the partitions would square X's condition
        # number and differ from fit.  An average of per-partition solutions is not it either.
        raise TypeError(f"fit_dask trains by SGD, and LinearRegression(solver="
                        f"{estimator.solver!r}) is not trained by SGD: set_params(solver='sgd'), "
                        f"or fit the closed form in memory (estimator.fit(X.compute(), "
                        f"y.compute())) or solve it with dask.array.linalg.lstsq")
    local_epochs = C.positive_int("local_epochs", local_epochs)
    if rounds is None:
        rounds = max(1, estimator.epochs // local_epochs)
    rounds = C.positive_int("rounds", rounds)
    if local_threads is not None:
        _fitting.check_threads("local_threads", local_threads)
    lr_scale = C.real("lr_scale", lr_scale, low=0.0, low_open=True)
    C.real("lr * lr_scale (the partitions' learning rate)", estimator.lr * lr_scale)
    # A partition without rows (after filtering) has nothing to train and no weight in the
    # average; scikit-learn's checks would refuse it on its worker.
    kept = [(b, int(r)) for b, r in zip(blocks, block_rows) if r > 0]
    blocks, block_rows = [b for b, _ in kept], [r for _, r in kept]
    B = estimator.batch_size
    steps_per_round = local_epochs * max(-(-int(r) // B) for r in block_rows)
    rng = _fitting.run_rng(random_state, estimator.random_state, 2)  # the partitions' seeds
    with _fitting.unchanged_on_error(estimator):
        template = _begin_run(estimator, n_features, dtype, rounds * steps_per_round, classes,
                              target_shape, lr_scale)
        state = {"template": template, "threads": local_threads,
                 "n_features": n_features, "dtype": np.dtype(dtype),
                 "total_steps": rounds * steps_per_round,
                 "classes": classes if classes is None else estimator.classes_,
                 "target_shape": target_shape, "local_epochs": local_epochs,
                 "weight_scale": weight_scale}
        return _rounds(estimator, state, blocks, run, rng, rounds, steps_per_round)


def _begin_run(estimator, n_features: int, dtype, total_steps: int, classes, target_shape,
               lr_scale: float):
    """A fresh global model (warm-starting: the current coefficients in it); returns the
    template every partition copies."""
    warm = estimator.warm_start and hasattr(estimator, "_net")
    if warm:
        estimator._refuse_other_targets(
            classes=classes, y_ndim=None if target_shape is None else 1 + len(target_shape))
        coef0, icpt0 = estimator.coef_, estimator.intercept_
    estimator._begin(n_features, dtype, total_steps, classes=classes,
                     target_shape=target_shape)
    if warm:
        if np.shape(coef0) != np.shape(estimator.coef_):
            raise ValueError(f"warm_start=True, but the model has coef_ of shape "
                             f"{np.shape(coef0)} and these data need {estimator.coef_.shape}")
        estimator.coef_, estimator.intercept_ = coef0, icpt0
    template = copy.deepcopy(estimator)
    template.lr = estimator.lr * lr_scale
    for name in ("_net", "_opt", "_rng", "coef_", "intercept_"):
        template.__dict__.pop(name, None)
    return template


def _rounds(estimator, state: dict, blocks, run, rng, rounds: int, steps_per_round: int):
    """Train every partition from the global model and average, `rounds` times."""
    curve = []
    for r in range(rounds):
        t0 = time.perf_counter()
        state = dict(state, coef=estimator.coef_, intercept=estimator.intercept_)
        seeds = rng.integers(0, 2**63 - 1, size=len(blocks))
        calls = [(_local_round, (state, Xb, yb, swb, int(seeds[i]), r * steps_per_round))
                 for i, (Xb, yb, swb) in enumerate(blocks)]
        coef, icpt, loss = _average(run(calls), state["dtype"])
        estimator.coef_ = coef
        estimator.intercept_ = icpt[()]  # a 0-d average (1-D regression target) -> scalar
        curve.append(loss)
        if estimator.verbose:
            _fitting.report(f"round {r + 1} of {rounds}", loss, time.perf_counter() - t0)
    estimator._load()
    estimator._opt.num_steps = state["total_steps"]
    estimator.n_iter_ = rounds * state["local_epochs"]
    estimator.loss_curve_ = curve
    return estimator


def _relative_weights(sw, n: int, compute) -> Tuple[float, float]:
    """The (divisor, factor) of _fitting.weight_scale for the Dask array of weights, after
    checking them: a bad weight would otherwise show only on some worker, midway through a
    round."""
    import dask.array as da

    finite, low, top, mean = compute([da.isfinite(sw).all(), sw.min(), sw.max(), sw.mean()])
    if not finite:
        raise ValueError("sample_weight must be finite, found NaN or inf")
    if low < 0:
        raise ValueError(f"sample_weight must be >= 0, found {float(low):g}")
    if not top > 0:
        raise ValueError("sample_weight must have a positive sum (all weights are zero)")
    return _fitting.weight_scale(_fitting.ratio(1.0, float(mean)), float(top),
                         lambda m: float(compute([(sw / m).sum()])[0]), n)


def _known_shape(name: str, a):
    """`a` when its chunk sizes are known: with NaN rows (a dask DataFrame's to_dask_array(),
    a boolean mask) its shape could only be compared, and its partitions only sized, wrongly."""
    if any(math.isnan(d) for d in a.shape):
        raise ValueError(f"{name} has unknown chunk sizes (shape {a.shape}, e.g. from a dask "
                         f"DataFrame's to_dask_array() or a boolean mask): call "
                         f"{name}.compute_chunk_sizes() first, or make it with "
                         f"to_dask_array(lengths=True)")
    return a


def fit_dask(estimator: _Estimator, X, y, *, classes=None, sample_weight=None,
             rounds: Optional[int] = None, local_epochs: int = 1, lr_scale: float = 1.0,
             local_threads: Optional[int] = 1, random_state=None, client=None) -> _Estimator:
    """Data-parallel fit of `estimator` on Dask arrays by local SGD and model averaging (see
    the module notes for the algorithm and when it matches a single-machine fit); returns
    the estimator, fitted like ``estimator.fit`` would leave it.

    X: a Dask array (n, features) of known chunk sizes, partitioned along rows (it is
    rechunked to whole rows when needed); y: (n,) or (n, targets) and `sample_weight` (n,) are
    rechunked to X's row blocks.  For LinearRegression, solver='sgd' only.  Each of `rounds`
    rounds (default: ``estimator.epochs // local_epochs``) trains every block (blocks without
    rows are skipped) for `local_epochs` epochs on its worker with learning rate
    ``estimator.lr * lr_scale``, with `local_threads` kernel threads per task (default 1: the
    workers already run in parallel; None: the kernels' default), then averages the models
    weighted by rows (or total sample weight).  `random_state` (None, an int, a numpy
    RandomState or Generator, taken as the estimators take theirs) seeds the partitions'
    shuffling in every round; None derives it from the estimator's `random_state` (fresh
    entropy when that is None).  The initial weights come from the estimator's
    `random_state`, as in ``fit``.  `classes` defaults to the labels in y.  The tasks run on
    `client` (a ``distributed.Client``) when given, else on Dask's current scheduler -- a
    ``distributed.Client`` created earlier becomes the default.  The blocks are persisted
    first, so each round reuses them where they are.

    The arguments (the weights' values included) are checked before the estimator changes;
    when a round fails (a NaN in some block, a partition that diverges) the estimator is put
    back as it was before the call."""
    import dask
    import dask.array as da

    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask array, got {type(X).__name__} "
                        "(use estimator.fit for in-memory data)")
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}")
    _known_shape("X", X)
    if 0 in X.shape:
        raise ValueError(f"X is empty: shape {X.shape}, while at least one row and one feature "
                         "are needed")
    src = C.native(X.dtype)
    if src.kind not in "uif":
        raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
    dtype = src if src in C.FLOAT_DTYPES else np.dtype(np.float64)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    y = _known_shape("y", da.asarray(y))
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have shape ({X.shape[0]},) or ({X.shape[0]}, targets), got "
                         f"{y.shape}")
    y = y.rechunk((X.chunks[0],) + ((y.shape[1],) if y.ndim == 2 else ()))
    sw = None
    weight_scale = None
    if sample_weight is not None:
        sw = _known_shape("sample_weight", da.asarray(sample_weight))
        if C.native(sw.dtype).kind not in "uif":  # astype would drop imaginary parts
            raise TypeError(f"sample_weight must hold real numbers, got dtype {sw.dtype}")
        sw = sw.astype(np.float64)
        if sw.shape != (X.shape[0],):
            raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got {sw.shape}")
        sw = sw.rechunk((X.chunks[0],))
    from sklearn.base import is_classifier

    persist = client.persist if client is not None else (lambda objs: dask.persist(*objs))
    parts = [X, y] + ([sw] if sw is not None else [])
    parts = list(persist(parts))
    X, y = parts[0], parts[1]
    sw = parts[2] if sw is not None else None

    def compute(objs):
        if client is not None:
            return client.gather(client.compute(objs))
        return list(dask.compute(*objs))

    target_shape = None
    if is_classifier(estimator):
        if classes is None:
            classes = compute([da.unique(y)])[0]
        classes = np.asarray(classes)
        classes = np.unique(classes.astype(C.native(classes.dtype), copy=False))
    else:
        target_shape = tuple(int(d) for d in y.shape[1:])
    if sw is not None:
        weight_scale = _relative_weights(sw, X.shape[0], compute)
    xs = X.to_delayed().ravel().tolist()
    ys = y.to_delayed().ravel().tolist()
    ws = sw.to_delayed().ravel().tolist() if sw is not None else [None] * len(xs)
    blocks = list(zip(xs, ys, ws))

    def run(calls):
        tasks = [dask.delayed(fn, pure=False)(*args) for fn, args in calls]
        return compute(tasks)

    return _fit_averaged(estimator, blocks, X.chunks[0], X.shape[1], dtype, run,
                         classes=classes, target_shape=target_shape, rounds=rounds,
                         local_epochs=local_epochs, local_threads=local_threads,
                         weight_scale=weight_scale, random_state=random_state,
                         lr_scale=lr_scale)
