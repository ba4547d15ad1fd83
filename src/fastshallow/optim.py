"""Minibatch SGD with momentum, weight decay and learning-rate schedules.

``SGD(params, lr).step(batch_size)`` applies ``param -= lr_t * (grad / batch_size + wd * param)``
(through a velocity ``v = momentum * v + d`` when momentum > 0) with the compiled kernel; `grad`
is the gradient of the summed minibatch loss, as ``backward()`` leaves it.

A schedule multiplies the base learning rate by a factor of the step number (one step per
minibatch): :class:`CosineSchedule`, :class:`StepSchedule`, :class:`ConstantSchedule`.  A
factor must be finite and >= 0; a step at rate 0 (e.g. after the end of a CosineSchedule with
its default ``final_factor=0``) leaves the parameters as they are (a momentum buffer still
takes in the gradient, as the formula says).
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, List, Optional

import numpy as np

from . import _checks as C
from . import _config
from ._config import get_num_threads
from ._ext import kernels as _k
from .autograd import Parameter

__all__ = ["SGD", "Schedule", "ConstantSchedule", "CosineSchedule", "StepSchedule"]

_F32, _F64 = C.FLOAT_DTYPES
# The updates run in the parameters' dtype, and a rate or decay above this is infinite in
# float32 (in float64 the check that it is finite suffices).
F32_MAX = C.F32_MAX


def rate_error(lr: float, step: int, dtype=None) -> Optional[ValueError]:
    """The error for a step's learning rate (base rate times schedule factor) that the update
    cannot use on parameters of `dtype`, else None: one test and one message, so that the
    per-batch loop and the fused path refuse the same rates alike.

    A rate of 0 is a step that leaves the parameters as they are (a schedule that has decayed
    to a final factor of 0, as CosineSchedule's default does after its end), not an error."""
    if not (math.isfinite(lr) and lr >= 0):
        return ValueError(f"the learning rate must be a finite number >= 0, got {lr} at step "
                          f"{step}")
    if lr > F32_MAX and dtype == _F32:
        return ValueError(f"the learning rate must be at most {F32_MAX:g} for float32 "
                          f"parameters (the update runs in their dtype), got {lr:g} at step "
                          f"{step}")
    return None


def buffer_fits(v, data: np.ndarray) -> bool:
    """Whether `v` can be the momentum buffer of a parameter holding `data`: the compiled
    update writes it as data's shape and dtype, contiguous from its first element.  The
    buffers are the optimizer's own, but its `velocity` list is public: a reversed or strided
    array put there would be written past its end, a read-only one written anyway."""
    # carray: C-contiguous, aligned and writeable
    return (isinstance(v, np.ndarray) and v.shape == data.shape and v.dtype == data.dtype
            and v.flags.carray)


def decay_error(weight_decay: float, dtype) -> Optional[ValueError]:
    """The error for a weight decay that is infinite in the parameters' dtype, else None."""
    if weight_decay > F32_MAX and dtype == _F32:
        return ValueError(f"weight_decay must be at most {F32_MAX:g} for float32 parameters "
                          f"(the update runs in their dtype), got {weight_decay:g}")
    return None


def _real_factor(schedule, step: int, f, call: str = "factor") -> float:
    """`schedule.factor(step)`'s result `f` (or an entry of what `call` returned) as a float,
    or a TypeError naming the call: a Schedule of the user's may return a string, a complex
    number, None or a list.  A 0-d array of real numbers (np.where's) is one."""
    if isinstance(f, numbers.Real) and not isinstance(f, (bool, np.bool_)):
        return float(f)
    if isinstance(f, np.ndarray) and f.ndim == 0 and f.dtype.kind in "iuf":
        return float(f)
    where = f"factor({step})" if call == "factor" else call
    raise TypeError(f"{type(schedule).__name__}.{where} must return a real number, got "
                    f"{C._describe(f)}")


class Schedule:
    """A learning-rate factor as a function of the step number (0-based)."""

    def factor(self, step: int) -> float:  # pragma: no cover - abstract
        """The number the base learning rate is multiplied by at `step` (0-based, one step per
        minibatch: the optimizer's ``num_steps`` before that update)."""
        raise NotImplementedError

    def factors(self, start: int, count: int) -> np.ndarray:
        """The factors of steps ``start .. start + count - 1`` as a float64 array (the fused
        path asks for a whole epoch's at once; a subclass may compute them faster)."""
        return np.array([_real_factor(self, start + i, self.factor(start + i))
                         for i in range(count)], dtype=np.float64)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ConstantSchedule(Schedule):
    """Factor 1 throughout."""

    def factor(self, step: int) -> float:
        return 1.0

    def factors(self, start: int, count: int) -> np.ndarray:
        return np.ones(count)


class CosineSchedule(Schedule):
    """Half a cosine from 1 down to `final_factor` over `total_steps`, after an optional linear
    warm-up of `warmup_steps` from 0; `final_factor` after the end."""

    def __init__(self, total_steps: int, final_factor: float = 0.0, warmup_steps: int = 0):
        self.total_steps = C.positive_int("total_steps", total_steps)
        self.final_factor = C.real("final_factor", final_factor, low=0.0, high=1.0)
        self.warmup_steps = C.positive_int("warmup_steps", warmup_steps, allow_zero=True)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps ({warmup_steps}) must be < total_steps "
                             f"({total_steps})")

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = self.total_steps - self.warmup_steps
        t = min(step - self.warmup_steps, span) / span
        return self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * t))


class StepSchedule(Schedule):
    """Factor ``gamma ** (step // step_size)``: drop by `gamma` every `step_size` steps."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = C.positive_int("step_size", step_size)
        self.gamma = C.real("gamma", gamma, low=0.0, low_open=True, high=1.0)

    def factor(self, step: int) -> float:
        return self.gamma ** (step // self.step_size)


def _schedule_or_constant(name: str, value) -> Schedule:
    if value is not None and not isinstance(value, Schedule):
        raise TypeError(f"{name} must be a fastshallow.optim.Schedule, got {value!r}")
    return value or ConstantSchedule()


class SGD:
    """Minibatch stochastic gradient descent.

    params: parameters (or a network, whose ``parameters()`` are used).  lr: base learning
    rate.  momentum in [0, 1); weight_decay >= 0 (L2 penalty ``wd/2 * |w|^2`` per example,
    biases included).  schedule: optional :class:`Schedule`."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 schedule: Optional[Schedule] = None):
        if hasattr(params, "parameters") and callable(params.parameters):
            params = params.parameters()
        params = list(params) if isinstance(params, Iterable) else None
        if not params or not all(isinstance(p, Parameter) for p in params):
            raise TypeError("params must be a non-empty list of fastshallow Parameters "
                            "(e.g. net.parameters())")
        if len({id(p) for p in params}) < len(params):
            twice = next(p for i, p in enumerate(params) if any(q is p for q in params[:i]))
            raise ValueError(f"the parameter {twice.name!r} is in params more than once: every "
                             f"step would update it as many times")
        self.params: List[Parameter] = params
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.schedule = schedule
        self.num_steps = 0
        # Momentum buffers, created on the first step (parameters may still be deferred now).
        self._velocity: Optional[List[np.ndarray]] = None

    # The hyperparameters are public and users change them between epochs: a bad value is
    # refused when assigned, as by the constructor, before the per-batch loop or the fused path
    # can use it (each read them at its own time, and neither could undo a step taken with it).
    lr = C.checked_property("lr", lambda name, v: C.real(name, v, low=0.0, low_open=True),
                            "The base learning rate (> 0), before the schedule's factor.")
    momentum = C.checked_property(
        "momentum", lambda name, v: C.real(name, v, low=0.0, high=1.0, high_open=True),
        "In [0, 1).")
    weight_decay = C.checked_property("weight_decay", lambda name, v: C.real(name, v, low=0.0),
                                      ">= 0.")
    schedule = C.checked_property("schedule", _schedule_or_constant,
                                  "The learning-rate factor by step (assigning None means "
                                  "constant).")

    @property
    def velocity(self) -> Optional[List[np.ndarray]]:
        """One momentum buffer per parameter (None without momentum)."""
        if self._momentum and self._velocity is None:
            self._velocity = [np.zeros_like(p.data) for p in self.params]
        return self._velocity

    @property
    def learning_rate(self) -> float:
        """The learning rate the next step will use."""
        f = self._schedule.factor(self.num_steps)
        if type(f) is not float:  # a Schedule of the user's may return anything
            f = _real_factor(self._schedule, self.num_steps, f)
        return self._lr * f

    def epoch_rates(self, count: int, dtype) -> np.ndarray:
        """The learning rates of the next `count` steps, in `dtype`, for updates made elsewhere
        (the fused path): refused as `step` would refuse them, all before the first is used."""
        start = self.num_steps
        if type(self._schedule) is ConstantSchedule and count > 0:
            # One rate, one test: 3 us where the arrays below take 11 us (a book-sized epoch's
            # compiled step takes about 15).  No steps (count 0) take the path below, which
            # refuses no rate then.
            err = rate_error(self._lr, start, dtype)
            if err is not None:
                raise err
            return np.full(count, self._lr, dtype)
        factors = np.asarray(self._schedule.factors(start, count))
        if factors.dtype.kind == "O" and factors.ndim == 1:  # e.g. Fractions, as factor() may give
            call = f"factors({start}, {count})"
            factors = np.array([_real_factor(self._schedule, start + i, f, call)
                                for i, f in enumerate(factors)])
        elif factors.dtype.kind not in "iuf":  # NumPy's conversion would drop imaginary parts
            raise TypeError(f"{type(self._schedule).__name__}.factors({start}, {count}) must "
                            f"return real numbers, got an array of dtype {factors.dtype}")
        factors = factors.astype(np.float64)
        if factors.shape != (count,):  # the compiled step reads one rate per minibatch
            raise ValueError(f"{type(self._schedule).__name__}.factors({start}, {count}) must "
                             f"return {count} factors, got shape {factors.shape}")
        lrs = self._lr * factors
        # rate_error's test for a whole epoch at once (NaN fails both comparisons)
        ok = (lrs >= 0) & (lrs <= (F32_MAX if dtype == _F32 else np.finfo(np.float64).max))
        if not ok.all():
            i = int(np.argmin(ok))
            raise rate_error(float(lrs[i]), start + i, dtype)
        return lrs.astype(dtype)

    def step(self, batch_size: int = 1) -> None:
        """Update every parameter from its ``.grad`` and count one step (for the schedule).

        `batch_size` is what ``.grad`` is divided by: the number of examples whose summed loss
        it is the gradient of.  ``l.backward()`` on a minibatch's per-example losses (like
        ``l.sum().backward()``) leaves the gradient of their *sum*, so pass the minibatch's
        size -- the book's ``trainer.step(batch_size)`` -- and the step follows the mean
        gradient.  The default 1 divides by nothing, which is right for a loss averaged
        already (``l.mean().backward()``); after a summed loss it would make every step
        batch_size times too large.  Weight decay is not divided:
        ``param -= lr_t * (grad / batch_size + weight_decay * param)``."""
        # The book's loop calls this for every small minibatch: the common case (an int batch
        # size, plain SGD with the constant schedule) skips the general code, which costs as
        # much as the update.
        if type(batch_size) is not int or batch_size <= 0:
            batch_size = C.positive_int("batch_size", batch_size)
        if type(self) is SGD and type(self._schedule) is ConstantSchedule:
            lr = self._lr  # checked when assigned
        else:
            lr = self.learning_rate
            if not (math.isfinite(lr) and lr >= 0):  # a schedule's factor is only known here
                raise rate_error(lr, self.num_steps)
        wd = self._weight_decay
        vel = self.velocity if self._momentum else None
        update = _k().sgd_update
        # The arrays are the parameters' own (C-contiguous, of one dtype and shape), and a
        # momentum buffer is checked against its parameter (the lists are public, buffer_fits):
        # the compiled update runs without the wrapper's per-call checks, which would cost
        # more than it does.  (momentum and weight_decay only change numbers, never sizes.)
        if vel is not None and len(vel) != len(self.params):
            raise ValueError(f"this optimizer has {len(vel)} momentum buffers for "
                             f"{len(self.params)} parameters: make a new SGD for new parameters")
        huge = lr > F32_MAX or wd > F32_MAX  # for float32 parameters, checked below
        work = []  # everything is checked before any parameter changes
        for i, p in enumerate(self.params):
            data = p._data
            if data is None:
                p._need()  # raises: a layer that has not seen its input size yet
            grad, dt, n = p._grad, data.dtype, data.size
            # C.parameter_buffers' quick test (dtypes reassigned, sizes changed in place),
            # inlined: a call would cost as much as the test
            if (grad.dtype is not dt or (dt is not _F32 and dt is not _F64) or grad.size != n
                    or not data.flags.writeable):
                C.parameter_buffers(p.name, data, grad)
            if huge and dt == _F32:
                raise rate_error(lr, self.num_steps, _F32) or decay_error(wd, _F32)
            v = None if vel is None else vel[i]
            # buffer_fits, after its quick form (dtypes by identity, as above)
            if v is not None and not (v.dtype is dt and v.shape == data.shape
                                      and v.flags.carray) and not buffer_fits(v, data):
                raise ValueError(f"the momentum buffer of {p.name!r} is not a writeable "
                                 f"C-contiguous {dt} array of shape {data.shape}: make a new "
                                 "SGD for new parameters")
            # (the thread count is looked up only for a parameter large enough to use it)
            work.append((data, grad, v, 1 if n * 4 < _config.DEFAULT_SERIAL_WORK
                         else get_num_threads()))
        bs, mom = float(batch_size), self._momentum
        for data, grad, v, nt in work:
            update(data, grad, lr, bs, mom, wd, v, nt)
        self.num_steps += 1

    def zero_grad(self) -> None:
        """Set every gradient to zero (``backward`` overwrites gradients, so this is only needed
        when mixing in gradients of your own)."""
        for p in self.params:
            p.zero_grad()

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"schedule={self.schedule!r})")
