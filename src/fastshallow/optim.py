"""Minibatch SGD with momentum, weight decay and learning-rate schedules.

``SGD(params, lr).step(batch_size)`` applies ``param -= lr_t * (grad / batch_size + wd * param)``
(through a velocity ``v = momentum * v + d`` when momentum > 0) with the compiled kernel; `grad`
is the gradient of the summed minibatch loss, as ``backward()`` leaves it.

A schedule multiplies the base learning rate by a factor of the step number (one step per
minibatch): :class:`CosineSchedule`, :class:`StepSchedule`, :class:`ConstantSchedule`.
"""
from __future__ import annotations

import math
from typing import Iterable, List, Optional

import numpy as np

from . import _checks as C
from ._config import SERIAL_WORK, get_num_threads
from ._ext import kernels as _k
from .autograd import Parameter

__all__ = ["SGD", "Schedule", "ConstantSchedule", "CosineSchedule", "StepSchedule"]


class Schedule:
    """A learning-rate factor as a function of the step number (0-based)."""

    def factor(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def factors(self, start: int, count: int) -> np.ndarray:
        return np.array([self.factor(start + i) for i in range(count)], dtype=np.float64)

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
        self.params: List[Parameter] = params
        self.lr = C.real("lr", lr, low=0.0, low_open=True)
        self.momentum = C.real("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.weight_decay = C.real("weight_decay", weight_decay, low=0.0)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a fastshallow.optim.Schedule, got {schedule!r}")
        self.schedule = schedule or ConstantSchedule()
        self.num_steps = 0
        # Momentum buffers, created on the first step (parameters may still be deferred now).
        self._velocity: Optional[List[np.ndarray]] = None

    @property
    def velocity(self) -> Optional[List[np.ndarray]]:
        """One momentum buffer per parameter (None without momentum)."""
        if self.momentum and self._velocity is None:
            self._velocity = [np.zeros_like(p.data) for p in self.params]
        return self._velocity

    @property
    def learning_rate(self) -> float:
        """The learning rate the next step will use."""
        return self.lr * self.schedule.factor(self.num_steps)

    def step(self, batch_size: int = 1) -> None:
        """Update every parameter from its ``.grad`` (the gradient of the summed loss of a
        minibatch of `batch_size` examples)."""
        # The book's loop calls this for every small minibatch: the common case (an int batch
        # size, plain SGD with the constant schedule) skips the general code, which costs as
        # much as the update.
        if type(batch_size) is not int or batch_size <= 0:
            batch_size = C.positive_int("batch_size", batch_size)
        if type(self) is SGD and type(self.schedule) is ConstantSchedule:
            lr = self.lr
        else:
            lr = self.learning_rate
        if not (math.isfinite(lr) and lr > 0):  # `lr` is a public attribute: checked every step
            raise ValueError(f"the learning rate must be a finite number > 0, got {lr} at step "
                             f"{self.num_steps}")
        vel = self.velocity if self.momentum else None
        team = get_num_threads()
        update = _k().sgd_update
        # The arrays are the parameters' own (C-contiguous, of one dtype and shape), and a
        # momentum buffer is checked against its parameter (the list of parameters is public):
        # the compiled update runs without the wrapper's per-call checks, which would cost
        # more than it does.  (momentum and weight_decay only change numbers, never sizes.)
        if vel is not None and len(vel) != len(self.params):
            raise ValueError(f"this optimizer has {len(vel)} momentum buffers for "
                             f"{len(self.params)} parameters: make a new SGD for new parameters")
        work = []  # everything is checked before any parameter changes
        for i, p in enumerate(self.params):
            data = p._data
            if data is None:
                p._need()  # raises: a layer that has not seen its input size yet
            v = None if vel is None else vel[i]
            if v is not None and (v.shape != data.shape or v.dtype != data.dtype):
                raise ValueError(f"the momentum buffer of {p.name!r} has shape {v.shape} "
                                 f"({v.dtype}), the parameter {data.shape} ({data.dtype}): make "
                                 "a new SGD for new parameters")
            work.append((data, p._grad, v))
        for data, grad, v in work:
            update(data, grad, lr, float(batch_size), self.momentum, self.weight_decay, v,
                   1 if data.size * 4 < SERIAL_WORK else team)
        self.num_steps += 1

    def zero_grad(self) -> None:
        """Set every gradient to zero (``backward`` overwrites gradients, so this is only needed
        when mixing in gradients of your own)."""
        for p in self.params:
            p.zero_grad()

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"schedule={self.schedule!r})")
