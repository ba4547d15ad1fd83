"""scikit-learn estimators on the fused kernels: :class:`SoftmaxRegression` (a multinomial
logistic-regression classifier) and :class:`LinearRegression` (least squares by minibatch SGD or
in closed form).

Both follow scikit-learn's conventions -- hyper-parameters in ``__init__``, everything learned in
attributes ending in ``_``, ``fit`` / ``partial_fit`` / ``predict`` / ``score``, ``get_params`` /
``set_params``, ``clone`` and pickling -- and pass every check of scikit-learn's
``sklearn.utils.estimator_checks`` (1.9, ``legacy=True``) with no expected failure
(tests/test_estimators.py).  One check, ``check_array_api_input``, is skipped by scikit-learn
itself unless the environment variable ``SCIPY_ARRAY_API=1`` is set before SciPy is imported;
the test suite sets it, and the check passes.  scikit-learn >= 1.6 is needed (``pip install
scikit-learn``); fastshallow itself does not depend on it.

Training is the library's own minibatch SGD: the data become an
:class:`~fastshallow.data.ArrayDataset` and a shuffling :class:`~fastshallow.data.DataLoader`,
the model a single :class:`~fastshallow.nn.Dense` layer, the loss
:class:`~fastshallow.losses.SoftmaxCrossEntropyLoss` or :class:`~fastshallow.losses.L2Loss`, the
optimizer :class:`~fastshallow.optim.SGD`; each epoch is one :func:`fastshallow.train_epoch` with
``fused=True`` (gather, forward, loss, gradient and update of many minibatches per compiled call).
The fused kernels take no per-example weights, so a fit with ``sample_weight`` runs the
per-minibatch loop on the validated kernels of :mod:`fastshallow.kernels` instead, with the
gradient of each example scaled by its (normalized) weight -- the same update rule otherwise.
"""
from __future__ import annotations

import copy
import math
import numbers
import time
from typing import Optional, Tuple, Union

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastshallow.estimators needs scikit-learn >= 1.6 "
                      "(pip install 'scikit-learn>=1.6')") from exc

from . import _checks as C
from ._fitting import TINY, check_threads, ratio, report, unchanged_on_error, weight_scale
from ._fitting import check_random_state as _check_random_state
from ._fitting import rng_from as _rng_from
from ._fused import diverged, parameters_diverged
from .closed_form import least_squares
from .data import ArrayDataset, DataLoader
from .kernels import (gather_rows, log_softmax, matmul_bias, matmul_bias_backward, softmax,
                      softmax_cross_entropy)
from .losses import L2Loss, SoftmaxCrossEntropyLoss
from .nn import Dense
from .optim import SGD, ConstantSchedule, CosineSchedule, Schedule
from .training import train_epoch

__all__ = ["SoftmaxRegression", "LinearRegression"]

# what `random_state` may be (see check_random_state)
_Seed = Union[None, int, np.integer, np.random.RandomState, np.random.Generator]

_FLOATS = [np.float64, np.float32]  # validate_data keeps these, converts anything else to float64


def _native(a):
    """A numpy array in foreign byte order as a native copy (validate_data would turn '>f4' into
    float64, see _checks.native); anything else as it is."""
    if isinstance(a, np.ndarray) and not a.dtype.isnative:
        return a.astype(C.native(a.dtype))
    return a


def _score_weights(sample_weight):
    """Weights for scikit-learn's scores, which are weighted means and so do not change when
    every weight is divided by the largest: done when their sum is not a normal float64 (it
    would make the score NaN or 1.0)."""
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        return sample_weight  # scikit-learn says what is wrong with it
    with np.errstate(over="ignore"):
        if w.size and np.isfinite(w).all() and w.max() > 0 and not TINY <= w.sum() < math.inf:
            return w / w.max()
    return sample_weight


def _sample_weight(sample_weight, n: int, dtype, scale: Optional[Tuple[float, float]] = None):
    """Validated weights relative to their mean (so that they sum to n), or None.  With `scale`
    (the (divisor, factor) of :func:`_weight_scale` for a whole data set streamed in parts)
    they are made relative to the mean of that set instead."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        w = np.full(n, float(sample_weight))
    else:
        w = C.as_array("sample_weight", sample_weight, dtype=np.float64)
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(f"sample_weight must be a 1-D array of {n} weights (one per row "
                             f"of X), got shape {w.shape}")
    if w.size and not np.isfinite(w).all():
        raise ValueError("sample_weight must be finite, found NaN or inf")
    if w.size and w.min() < 0:
        raise ValueError(f"sample_weight must be >= 0, found {w.min():g}")
    if scale is None:
        with np.errstate(over="ignore"):
            total = float(w.sum())
        if not total > 0:
            raise ValueError("sample_weight must have a positive sum (all weights are zero)")
        scale = weight_scale(ratio(n, total), float(w.max()),
                              lambda top: float(np.sum(w / top)), n)
    divisor, factor = scale
    return (w / divisor * factor).astype(dtype)


class _SGDMixin:
    """What the two estimators share: hyper-parameter checks, the optimizer state, the epoch
    loop (fused, or per minibatch with weights) and the coef_/intercept_ bookkeeping.

    State (all private, created by the first fit / partial_fit): ``_net`` (a Dense layer whose
    parameters are kept equal to ``coef_`` / ``intercept_``), ``_opt`` (its SGD: momentum
    buffers and the step count that drives the schedule), ``_schedule_from`` (the `schedule`
    parameter the optimizer's schedule was made from), ``_rng`` (initial weights and the
    shuffling, from `random_state`)."""

    # -- hyper-parameters ------------------------------------------------------------------
    def _check_params(self) -> None:
        C.real("lr", self.lr, low=0.0, low_open=True)
        C.positive_int("batch_size", self.batch_size)
        C.positive_int("epochs", self.epochs)
        C.real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        C.real("weight_decay", self.weight_decay, low=0.0)
        if self.num_threads is not None:
            check_threads("num_threads", self.num_threads)
        _check_random_state(self.random_state)
        if not (self.schedule is None or isinstance(self.schedule, Schedule)
                or self.schedule in ("constant", "cosine")):
            raise ValueError(f"schedule must be None, 'constant', 'cosine' or a "
                             f"fastshallow.optim.Schedule, got {self.schedule!r}")

    def _schedule(self, total_steps: Optional[int]) -> Schedule:
        s = self.schedule
        if s is None or s == "constant":
            return ConstantSchedule()
        if isinstance(s, Schedule):
            return copy.deepcopy(s)
        if total_steps is None:
            raise ValueError("schedule='cosine' needs the length of training, which only fit "
                             "knows; for partial_fit pass "
                             "fastshallow.optim.CosineSchedule(total_steps=...) instead")
        return CosineSchedule(max(int(total_steps), 1))

    # -- model state -----------------------------------------------------------------------
    _STATE = ("_net", "_opt", "_schedule_from", "_rng", "_y_ndim", "coef_", "intercept_",
              "classes_", "n_features_in_", "feature_names_in_", "n_iter_", "loss_curve_")

    def __setstate__(self, state: dict) -> None:
        # Pickled before _schedule_from existed: the optimizer's schedule was made from the
        # `schedule` the estimator was pickled with.
        if "_opt" in state and "_schedule_from" not in state:
            state = dict(state, _schedule_from=state.get("schedule"))
        super().__setstate__(state)

    def _forget(self) -> None:
        """Drop everything learned: the next partial_fit starts a new model."""
        for name in self._STATE:
            self.__dict__.pop(name, None)

    def _fresh_model(self, n_features: int, n_outputs: int, dtype, total_steps) -> None:
        self._rng = _rng_from(self.random_state)
        self._net = Dense(n_outputs, in_units=n_features, dtype=dtype, rng=self._rng)
        self._new_optimizer(total_steps)
        self.n_iter_ = 0
        self.loss_curve_ = []
        self._store()

    def _begin(self, n_features: int, dtype, total_steps=None, *, classes=None,
               target_shape=None) -> None:
        """A fresh model for data described without being seen (the data-parallel fits):
        `classes` for the classifier, `target_shape` (y.shape[1:]) for the regressor."""
        self._forget()
        self.n_features_in_ = int(n_features)
        if is_classifier(self):
            self.classes_ = np.unique(np.asarray(classes))
            n_outputs = len(self.classes_)
        else:
            self._y_ndim = 1 + len(target_shape)
            n_outputs = 1 if not target_shape else int(target_shape[0])
        self._fresh_model(int(n_features), n_outputs, np.dtype(dtype), total_steps)

    def _new_optimizer(self, total_steps) -> None:
        self._opt = SGD(self._net.parameters(), lr=self.lr, momentum=self.momentum,
                        weight_decay=self.weight_decay, schedule=self._schedule(total_steps))
        self._schedule_from = self.schedule

    def _sync_optimizer(self) -> None:
        """Settings changed by set_params since the optimizer was made apply from now on, as
        scikit-learn's partial_fit has it.  A new `schedule` counts its steps from the next
        one (the steps already taken belong to the schedule it replaces); an unchanged one
        goes on counting across partial_fit calls, as scikit-learn's SGD estimators do."""
        opt = self._opt
        opt.lr, opt.momentum, opt.weight_decay = self.lr, self.momentum, self.weight_decay
        new, was = self.schedule, self._schedule_from
        if not (new is was or (isinstance(new, str) and new == was)):
            opt.schedule = self._schedule(None)  # 'cosine' is refused: only fit knows its length
            opt.num_steps = 0
            self._schedule_from = new

    def _refuse_idle_steps(self, n: int, epochs: int, dtype) -> None:
        """Refuse a partial_fit whose every step has learning rate 0 (in the model's dtype):
        after the end of a schedule that decays to 0 it would change nothing, yet look like
        training."""
        opt = self._opt
        start, count = opt.num_steps, epochs * self._steps_per_epoch(n)
        if dtype.type(opt.lr * opt.schedule.factor(start)) != 0:  # the common case, quickly
            return
        if np.any((opt.lr * opt.schedule.factors(start, count)).astype(dtype)):
            return
        made = " (schedule='cosine' spans the fit that made it)" if isinstance(
            self.schedule, str) else ""
        raise ValueError(
            f"partial_fit would not change the model: the learning-rate schedule "
            f"{opt.schedule!r}{made} gives rate 0 to all of this call's {count} steps (steps "
            f"{start} to {start + count - 1}): it has decayed to 0. To train on, call "
            "set_params(schedule=None) for the constant rate lr, or set_params(schedule="
            "fastshallow.optim.CosineSchedule(total_steps=...)) or another Schedule, whose "
            "steps count from the next call; for a stream of partial_fit calls, make the "
            "schedule span all of their steps")

    def _load(self) -> None:
        """Copy coef_ / intercept_ (the truth, which users may have set) into the layer."""
        W, b = self._net.weight, self._net.bias
        coef = np.asarray(self.coef_)
        W.set_data(coef.reshape(W.shape[1], W.shape[0]).T)
        b.set_data(np.asarray(self.intercept_).reshape(b.shape))

    def _store(self) -> None:
        """coef_ (outputs, features) and intercept_ (outputs,) from the layer; 1-D / scalar
        for a regressor fitted on a 1-D target."""
        W, b = self._net.weight.data, self._net.bias.data
        coef, intercept = np.ascontiguousarray(W.T), b.copy()
        if self._squeeze_outputs():
            coef, intercept = coef[0], intercept[0]
        self.coef_, self.intercept_ = coef, intercept

    def _squeeze_outputs(self) -> bool:
        return False

    # -- training --------------------------------------------------------------------------
    def _loss(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _loss_and_grad(self, Z: np.ndarray, T: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    def _run_epochs(self, X: np.ndarray, T: np.ndarray, sw: Optional[np.ndarray],
                    epochs: int, stream: bool = False, report_epochs: bool = True) -> None:
        """Train `epochs` epochs on validated rows X (the model's dtype, C order) with encoded
        targets T (class indices, or float targets of shape (n,) / (n, outputs)).  `stream`:
        a partial_fit of the user's, whose caller does not know the length of training and
        so would not notice that a schedule has ended (fit, fit_out_of_core and fit_dask do).
        `report_epochs`: print each epoch's line when `verbose` (fit_out_of_core and fit_dask
        train a chunk or a partition at a time, and report whole epochs and rounds)."""
        with np.errstate(over="ignore"):  # too large for float32: refused by the optimizer
            zero = X.dtype.type(self.lr) == 0  # > 0 as a float, checked by _check_params
        if zero:
            raise ValueError(f"lr={self.lr!r} is 0 in {X.dtype}, the model's dtype: no step "
                             f"would change the model (use a larger lr, or float64 data)")
        self._load()
        self._sync_optimizer()
        if stream:
            self._refuse_idle_steps(X.shape[0], epochs, X.dtype)
        loader = DataLoader(ArrayDataset(X, T, check_finite=False), self.batch_size,
                            shuffle=self.shuffle, seed=self._rng)
        loss = self._loss()
        for _ in range(epochs):
            epoch = self.n_iter_ + 1
            t0 = time.perf_counter()
            if sw is None:
                mean_loss, _ = train_epoch(self._net, loader, loss, self._opt, fused=True,
                                           num_threads=self.num_threads, epoch=epoch)
            else:
                mean_loss = self._weighted_epoch(X, T, sw, loader.epoch_order(), epoch)
            self.n_iter_ = epoch
            self.loss_curve_.append(float(mean_loss))
            if self.verbose and report_epochs:
                report(f"epoch {epoch}", mean_loss, time.perf_counter() - t0)
        self._store()

    def _weighted_epoch(self, X, T, sw, order, epoch: int) -> float:
        """One epoch of the per-minibatch loop with per-example weights: the gradient of
        ``sum_i w_i * loss_i`` over each minibatch, then the same SGD step as the fused path
        (divided by the batch size, weight decay, momentum, schedule)."""
        W, b = self._net.weight, self._net.bias
        nt, B = self.num_threads, self.batch_size
        total = 0.0
        for i, s in enumerate(range(0, len(order), B), 1):
            idx = order[s:s + B]
            Xb = gather_rows(X, idx, num_threads=nt)
            Z = matmul_bias(Xb, W.data, b.data, num_threads=nt)
            with np.errstate(over="ignore", invalid="ignore"):  # divergence: reported below
                per_example, G = self._loss_and_grad(Z, T[idx])
                w = sw[idx]
                G *= w[:, None]
                part = float(np.dot(per_example.astype(np.float64), w))
            if not math.isfinite(part):
                raise diverged(epoch, i, self._opt.learning_rate)
            total += part
            dW, db = matmul_bias_backward(Xb, G, num_threads=nt)
            W.grad[...] = dW
            b.grad[...] = db
            self._opt.step(len(idx))
        if len(order):  # the last update shows in no loss: check what it left
            parameters_diverged((W, b), epoch, i, self._opt.lr * self._opt.schedule.factor(
                self._opt.num_steps - 1))
        weight = float(sw[order].sum())
        return total / weight if weight > 0 else 0.0

    def _steps_per_epoch(self, n: int) -> int:
        return -(-n // self.batch_size)

    def _refuse_other_targets(self, classes=None, y_ndim=None) -> None:
        """When warm-starting, refuse targets other than the previous fit's: other `classes`
        (the labels, in any order) for the classifier, targets changed between 1-D and 2-D
        (`y_ndim`) for the regressor.  fit, fit_out_of_core and fit_dask refuse them alike."""
        if not (self.warm_start and hasattr(self, "_net")):
            return
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if not np.array_equal(classes, self.classes_):
                raise ValueError(f"warm_start=True, but y has the classes "
                                 f"{classes.tolist()!r}, the previous fit "
                                 f"{self.classes_.tolist()!r}")
        if y_ndim is not None and y_ndim != self._y_ndim:
            raise ValueError("warm_start=True, but y changed between 1-D and 2-D")

    def _start_fit(self, n: int, n_features: int, n_outputs: int, dtype) -> None:
        """A fresh model, or (warm_start) the previous solution with a new optimizer."""
        total = self.epochs * self._steps_per_epoch(n)
        if self.warm_start and hasattr(self, "_net"):
            if self._net.in_units != n_features or self._net.units != n_outputs:
                raise ValueError(
                    f"warm_start=True, but the data have {n_features} features and "
                    f"{n_outputs} outputs while the previous fit had {self._net.in_units} and "
                    f"{self._net.units}; fit with warm_start=False to start over")
            if self._net.dtype != np.dtype(dtype):
                self._net = Dense(n_outputs, in_units=n_features, dtype=dtype, rng=self._rng)
            self._new_optimizer(total)
            self.n_iter_ = 0
            self.loss_curve_ = []
        else:
            self._fresh_model(n_features, n_outputs, dtype, total)

    # -- prediction ------------------------------------------------------------------------
    def _linear(self, X) -> np.ndarray:
        """``X @ coef_.T + intercept_`` as (n, outputs), in X's float dtype."""
        check_is_fitted(self)
        X = validate_data(self, _native(X), dtype=_FLOATS, order="C", reset=False)
        coef = np.asarray(self.coef_)
        W = np.ascontiguousarray(coef.reshape(-1, X.shape[1]).T, dtype=X.dtype)
        b = np.ascontiguousarray(np.asarray(self.intercept_).reshape(-1), dtype=X.dtype)
        return matmul_bias(X, W, b, num_threads=self.num_threads)


class SoftmaxRegression(ClassifierMixin, _SGDMixin, BaseEstimator):
    """Softmax (multinomial logistic) regression trained by minibatch SGD on the fused kernels.

    One weight vector and bias per class, ``p(y = c | x) = softmax(x @ coef_.T + intercept_)_c``,
    fitted by minimizing the mean cross-entropy (plus ``weight_decay / 2 * |params|^2``) with
    the library's SGD: shuffled minibatches of `batch_size`, `epochs` passes.  Labels may be
    any sortable values (strings, non-contiguous integers); they are mapped to 0..C-1 in sorted
    order (``classes_``).  float32 features are trained in float32 and float64 in float64; any
    other numeric input is converted to float64.

    Parameters
    ----------
    lr : float, default 0.1
        Base learning rate (the step is ``lr * factor(step) * mean gradient``).
    batch_size : int, default 256
    epochs : int, default 10
        Passes over the data in ``fit``.  ``partial_fit`` makes one pass per call.
    momentum : float in [0, 1), default 0
    weight_decay : float >= 0, default 0
        L2 penalty ``weight_decay / 2 * |w|^2`` per example (biases included), as in
        :class:`fastshallow.optim.SGD`.
    schedule : None, 'constant', 'cosine' or a :class:`fastshallow.optim.Schedule`
        Learning-rate factor per minibatch step.  'cosine' decays to zero over the steps of
        ``fit`` (for ``partial_fit`` pass a ``CosineSchedule(total_steps=...)`` spanning all
        the calls' steps).  ``partial_fit`` goes on counting the steps of the schedule it
        finds (that of the last ``fit``, or of the first ``partial_fit``), as scikit-learn's
        SGD estimators count theirs; a schedule changed with ``set_params`` takes effect at
        the next call, its steps counted from there.  A ``partial_fit`` whose every step would
        have rate 0 (all after the end of a schedule that decays to 0, such as the 'cosine' of
        a ``fit``) raises ValueError rather than change nothing.
    shuffle : bool, default True
        Reshuffle the rows every epoch (else the rows are visited in order).
    random_state : None, int, RandomState or Generator
        Seeds the initial weights (N(0, 0.01^2), zero biases) and the shuffling.  The same int
        gives bit-identical models for any `num_threads`.
    warm_start : bool, default False
        ``fit`` continues from the current ``coef_`` / ``intercept_`` (with a new optimizer)
        instead of starting over; the classes and the number of features must not change.
    num_threads : int or None
        Threads of the compiled kernels (None: :func:`fastshallow.get_num_threads`).
    verbose : int, default 0
        Print the mean training loss after every epoch (after every round in
        :func:`fastshallow.distributed.fit_dask`).

    Attributes
    ----------
    classes_ : (n_classes,) the labels, sorted.
    coef_ : (n_classes, n_features), in the training dtype.  Softmax regression keeps one row
        per class even for two classes (``decision_function`` then returns the difference of
        the two rows' scores, as scikit-learn expects of a binary classifier).
    intercept_ : (n_classes,)
    n_features_in_, feature_names_in_ : as in scikit-learn.
    n_iter_ : epochs run by the last ``fit`` (plus one per later ``partial_fit``).
    loss_curve_ : mean training loss of each of those epochs.

    ``sample_weight`` (in ``fit``, ``partial_fit`` and ``score``) multiplies each example's
    loss gradient.  Weights are relative: they are divided by their mean within each call, so
    integer weights on a full batch give exactly the update of repeating the rows, and a
    minibatch step has the same size on average as without weights.  With weights, training
    runs the per-minibatch loop of :mod:`fastshallow.kernels` (the fused kernels take no
    weights): same results as the fused path up to rounding, somewhat slower.

    Raises :class:`fastshallow.TrainingDiverged` when the loss stops being finite (lower `lr`).

    scikit-learn's estimator checks: all pass and none is expected to fail; scikit-learn skips
    ``check_array_api_input`` unless ``SCIPY_ARRAY_API=1`` is set before SciPy is imported
    (with it set, that check passes too).
    """

    def __init__(self, *, lr: float = 0.1, batch_size: int = 256, epochs: int = 10,
                 momentum: float = 0.0, weight_decay: float = 0.0,
                 schedule: Union[None, str, Schedule] = None, shuffle: bool = True,
                 random_state: _Seed = None, warm_start: bool = False,
                 num_threads: Optional[int] = None, verbose: int = 0) -> None:
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.shuffle = shuffle
        self.random_state = random_state
        self.warm_start = warm_start
        self.num_threads = num_threads
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags

    # -- labels ----------------------------------------------------------------------------
    def _loss(self):
        return SoftmaxCrossEntropyLoss()

    def _loss_and_grad(self, Z, t):
        return softmax_cross_entropy(Z, t, num_threads=self.num_threads)

    def _encode(self, y) -> np.ndarray:
        """Class indices (int64) of labels y, which must all be in classes_."""
        t = np.searchsorted(self.classes_, y)
        t_ok = np.minimum(t, len(self.classes_) - 1)
        bad = self.classes_[t_ok] != y
        if np.any(bad):
            unknown = np.unique(np.asarray(y)[bad])
            raise ValueError(f"y contains labels not in classes_ {self.classes_.tolist()!r}: "
                             f"{unknown[:10].tolist()!r}")
        return np.ascontiguousarray(t, dtype=np.int64)

    def _validate_xy(self, X, y, reset: bool, dtype=_FLOATS):
        X, y = validate_data(self, _native(X), _native(y), dtype=dtype, order="C", reset=reset)
        check_classification_targets(y)
        return X, y

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None) -> SoftmaxRegression:
        """Fit on X (n_samples, n_features) and labels y (n_samples,) for `epochs` epochs.

        A call that raises (bad input, :class:`fastshallow.TrainingDiverged`) leaves the
        estimator as it was before it."""
        with unchanged_on_error(self):
            return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight):
        self._check_params()
        X, y = self._validate_xy(X, y, reset=True)
        classes = np.unique(y)
        self._refuse_other_targets(classes=classes)
        sw = _sample_weight(sample_weight, X.shape[0], X.dtype)
        self.classes_ = classes
        self._start_fit(X.shape[0], X.shape[1], len(classes), X.dtype)
        self._run_epochs(X, self._encode(y), sw, self.epochs)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> SoftmaxRegression:
        """One epoch over X, y, continuing from the current model.

        `classes` (all the labels there will ever be) is required on the first call and, when
        given later, must be the same.  A call that raises leaves the estimator as it was."""
        with unchanged_on_error(self):
            return self._partial_fit(X, y, classes=classes, sample_weight=sample_weight,
                                     stream=True)

    def _partial_fit(self, X, y, classes=None, sample_weight=None, epochs=1,
                     total_steps=None, weight_scale=None, stream=False, report_epochs=True):
        self._check_params()
        first = not hasattr(self, "_net")
        if classes is not None:
            classes = np.unique(_native(np.asarray(classes)))
            if not first and not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes={classes.tolist()!r} is not the same as on the "
                                 f"first call to partial_fit: {self.classes_.tolist()!r}")
        elif first:
            raise ValueError("classes must be passed on the first call to partial_fit "
                             "(all the labels the model will see)")
        dtype = _FLOATS if first else self.coef_.dtype
        X, y = self._validate_xy(X, y, reset=first, dtype=dtype)
        sw = _sample_weight(sample_weight, X.shape[0], X.dtype, weight_scale)
        if first:
            self.classes_ = classes
            self._fresh_model(X.shape[1], len(classes), X.dtype, total_steps)
        self._run_epochs(X, self._encode(y), sw, epochs, stream, report_epochs)
        return self

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of ``predict(X)`` against y, weighted by `sample_weight`."""
        return super().score(X, y, sample_weight=_score_weights(sample_weight))

    # -- prediction ------------------------------------------------------------------------
    def _scores(self, X) -> np.ndarray:
        return self._linear(X)

    def decision_function(self, X) -> np.ndarray:
        """Class scores (logits) of shape (n_samples, n_classes); for two classes the score of
        the second class minus that of the first, shape (n_samples,)."""
        Z = self._scores(X)
        if Z.shape[1] == 2:
            return Z[:, 1] - Z[:, 0]
        return Z

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in the order of ``classes_``."""
        return softmax(self._scores(X), num_threads=self.num_threads)

    def predict_log_proba(self, X) -> np.ndarray:
        """Log-probabilities, computed stably from the scores."""
        return log_softmax(self._scores(X), num_threads=self.num_threads)

    def predict(self, X) -> np.ndarray:
        """The most probable label of each row."""
        Z = self._scores(X)  # checks that the model is fitted
        return self.classes_[np.argmax(Z, axis=1)]


class LinearRegression(RegressorMixin, _SGDMixin, BaseEstimator):
    """Linear least-squares regression by minibatch SGD on the fused kernels, or in closed form.

    Fits ``y ~ X @ coef_.T + intercept_`` for one target (y of shape (n,)) or several (y of
    shape (n, n_targets)).  ``solver='sgd'`` minimizes the mean of the book's squared loss
    ``0.5 * (y_hat - y)^2`` (averaged over targets) plus ``weight_decay / 2 * |params|^2`` with
    the library's SGD; ``solver='closed_form'`` solves the same objective exactly with
    :func:`fastshallow.least_squares` (an SVD least-squares solve; with `weight_decay` > 0 a
    ridge problem in which the intercept is penalized too, to match SGD), in float64, and ignores
    the SGD settings.  ``partial_fit`` exists for the SGD solver only.

    Parameters are those of :class:`SoftmaxRegression` plus `solver`, with the same defaults
    (``lr=0.1, batch_size=256, epochs=10``): the book's recipe for softmax regression on
    Fashion-MNIST (section 3.7), not its linear-regression one.  For the book's linear
    regression (sections 3.2-3.3: 1000 synthetic examples) pass ``lr=0.03, batch_size=10,
    epochs=3``, which fits that data much more closely than the defaults do in their 40
    minibatch steps.  Features should be standardized for SGD: an unscaled feature of large
    magnitude makes any fixed learning rate diverge (:class:`fastshallow.TrainingDiverged`).

    Attributes
    ----------
    coef_ : (n_features,) for a 1-D target, (n_targets, n_features) otherwise; training dtype.
    intercept_ : float for a 1-D target, (n_targets,) otherwise.
    n_features_in_, feature_names_in_, n_iter_, loss_curve_ : as for SoftmaxRegression
        (``n_iter_`` is 1 and ``loss_curve_`` empty for the closed form).

    ``sample_weight`` scales each example's squared error (relative weights, divided by their
    mean; with integer weights the closed form equals the fit on repeated rows exactly, and
    SGD on a full batch too).

    scikit-learn's estimator checks: all pass, for both solvers, and none is expected to fail;
    scikit-learn skips ``check_array_api_input`` unless ``SCIPY_ARRAY_API=1`` is set before
    SciPy is imported (with it set, that check passes too).
    """

    def __init__(self, *, solver: str = "sgd", lr: float = 0.1, batch_size: int = 256,
                 epochs: int = 10, momentum: float = 0.0, weight_decay: float = 0.0,
                 schedule: Union[None, str, Schedule] = None, shuffle: bool = True,
                 random_state: _Seed = None, warm_start: bool = False,
                 num_threads: Optional[int] = None, verbose: int = 0) -> None:
        self.solver = solver
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.shuffle = shuffle
        self.random_state = random_state
        self.warm_start = warm_start
        self.num_threads = num_threads
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _check_params(self) -> None:
        if self.solver not in ("sgd", "closed_form"):
            raise ValueError(f"solver must be 'sgd' or 'closed_form', got {self.solver!r}")
        super()._check_params()

    def _loss(self):
        return L2Loss()

    def _loss_and_grad(self, Z, T):
        D = Z - T.reshape(Z.shape)
        m = Z.shape[1]
        per_example = 0.5 * np.mean(D * D, axis=1)
        return per_example, D / Z.dtype.type(m)

    def _squeeze_outputs(self) -> bool:
        return self._y_ndim == 1

    def _validate_xy(self, X, y, reset: bool, dtype=_FLOATS):
        X, y = validate_data(self, _native(X), y, dtype=dtype, order="C", reset=reset,
                             multi_output=True, y_numeric=True)
        if y.dtype.kind not in "biuf":  # strings: scikit-learn converts those holding numbers
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"y must hold numbers (the regression targets), got dtype "
                                 f"{y.dtype}: {exc}") from None
        if y.ndim == 2 and y.shape[1] == 0:
            raise ValueError("y must have at least one target column, got shape "
                             f"{y.shape}")
        if not np.isfinite(y).all():  # validate_data checks X only when y is multi-output
            raise ValueError("y must be finite, found NaN or inf")
        return X, np.ascontiguousarray(y, dtype=X.dtype)

    def fit(self, X, y, sample_weight=None) -> LinearRegression:
        """Fit on X (n_samples, n_features) and targets y ((n_samples,) or (n_samples, m)).

        A call that raises (bad input, :class:`fastshallow.TrainingDiverged`) leaves the
        estimator as it was before it."""
        with unchanged_on_error(self):
            return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight):
        self._check_params()
        X, y = self._validate_xy(X, y, reset=True)
        m = 1 if y.ndim == 1 else y.shape[1]
        self._refuse_other_targets(y_ndim=y.ndim)
        sw = _sample_weight(sample_weight, X.shape[0], X.dtype)
        self._y_ndim = y.ndim
        if self.solver == "closed_form":
            self._fit_closed_form(X, y, sw, m)
            return self
        self._start_fit(X.shape[0], X.shape[1], m, X.dtype)
        self._run_epochs(X, y, sw, self.epochs)
        return self

    def _fit_closed_form(self, X, y, sw, m: int) -> None:
        n, k = X.shape
        Y = y.reshape(n, m).astype(np.float64)
        s = np.ones(n) if sw is None else sw.astype(np.float64)
        r = np.sqrt(s)[:, None]
        if sw is None and not self.weight_decay:
            w, b = least_squares(X, Y)
        elif not self.weight_decay:
            # Weighted least squares on data centered at the weighted means: the intercept
            # stays out of the minimum-norm choice (as in the unweighted solve), so integer
            # weights give exactly the solution of repeating the rows, even when n < k.
            x_mean = s @ X.astype(np.float64) / s.sum()
            y_mean = s @ Y / s.sum()
            w, _ = least_squares((X - x_mean) * r, (Y - y_mean) * r, fit_intercept=False)
            b = y_mean - x_mean @ w
        else:
            # min_theta sum_i s_i * 0.5 * mean_j r_ij^2 + n * wd / 2 * |theta|^2, theta = (w, b)
            # -- the SGD objective times n (L2Loss averages over the m targets, hence the
            # factor m in the penalty): rows scaled by sqrt(s_i), the intercept as a column,
            # the penalty as sqrt(n * m * wd) * identity rows with zero targets.  Strictly
            # convex, so the solution is unique.
            lam = math.sqrt(n * m * self.weight_decay)
            A = np.vstack([np.hstack([X.astype(np.float64) * r, r]), lam * np.eye(k + 1)])
            T = np.vstack([Y * r, np.zeros((k + 1, m))])
            theta, _ = least_squares(A, T, fit_intercept=False)
            w, b = theta[:k], theta[k]
        self._rng = _rng_from(self.random_state)
        self._net = Dense(m, in_units=k, dtype=X.dtype, rng=self._rng)
        self._net.weight.set_data(w)
        self._net.bias.set_data(b)
        # An optimizer too, so that switching to solver='sgd' (set_params) can continue
        # with partial_fit from this solution.
        self._new_optimizer(self.epochs * self._steps_per_epoch(n))
        self.n_iter_ = 1
        self.loss_curve_ = []
        self._store()

    def _sgd_solver(self) -> bool:
        return self.solver == "sgd"

    @available_if(_sgd_solver)
    def partial_fit(self, X, y, sample_weight=None) -> LinearRegression:
        """One epoch of SGD over X, y, continuing from the current model (solver='sgd').  A call
        that raises leaves the estimator as it was."""
        with unchanged_on_error(self):
            return self._partial_fit(X, y, sample_weight=sample_weight, stream=True)

    def _partial_fit(self, X, y, classes=None, sample_weight=None, epochs=1,
                     total_steps=None, weight_scale=None, stream=False, report_epochs=True):
        self._check_params()
        first = not hasattr(self, "_net")
        dtype = _FLOATS if first else self.coef_.dtype
        X, y = self._validate_xy(X, y, reset=first, dtype=dtype)
        m = 1 if y.ndim == 1 else y.shape[1]
        if not first and m != self._net.units:
            raise ValueError(f"y has {m} target(s), the model {self._net.units}")
        sw = _sample_weight(sample_weight, X.shape[0], X.dtype, weight_scale)
        if first:
            self._y_ndim = y.ndim
            self._fresh_model(X.shape[1], m, X.dtype, total_steps)
        self._run_epochs(X, y, sw, epochs, stream, report_epochs)
        return self

    def score(self, X, y, sample_weight=None) -> float:
        """R^2 of ``predict(X)`` against y, weighted by `sample_weight`."""
        return super().score(X, y, sample_weight=_score_weights(sample_weight))

    def predict(self, X) -> np.ndarray:
        """Predictions (n_samples,) or (n_samples, n_targets), in X's float dtype."""
        Z = self._linear(X)
        return Z[:, 0] if self._y_ndim == 1 else Z
