"""Parameter initializers: ``init.Normal(sigma)``, ``init.Zeros()``, ``init.Constant(value)``,
``init.Uniform(scale)``, ``init.Xavier()``.  Each is called with a shape, a dtype and a numpy
Generator and returns a new array."""
from __future__ import annotations

import numpy as np

from . import _checks as C

__all__ = ["Initializer", "Normal", "Zeros", "Constant", "Uniform", "Xavier"]


class Initializer:
    """Base of the initializers: ``init(shape, dtype, rng)`` returns new values for a
    parameter.  :class:`~fastshallow.nn.Dense` takes these (``weight_initializer=``,
    ``bias_initializer=``, ``initialize(init)``)."""

    def __call__(self, shape, dtype, rng: np.random.Generator) -> np.ndarray:
        """A new array of `shape` and `dtype` (float32 or float64), drawn from `rng` when the
        values are random."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _checked(dtype, rng=False) -> np.dtype:
    """`dtype` as float32 or float64, refusing others (values cast to int8 would quietly be
    zeros), and `rng`, unless False (an initializer that draws nothing), as a numpy Generator."""
    if rng is not False and not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator (e.g. np.random.default_rng(0)), got "
                        f"{C._describe(rng)}")
    return C.float_dtype("dtype", dtype)


class Normal(Initializer):
    """Samples of N(0, sigma^2); the book's default for weights is sigma = 0.01."""

    def __init__(self, sigma: float = 0.01):
        self.sigma = C.real("sigma", sigma, low=0.0)

    def __call__(self, shape, dtype, rng):
        dtype = _checked(dtype, rng)
        return rng.normal(0.0, self.sigma, shape).astype(dtype)


class Uniform(Initializer):
    """Samples of U(-scale, scale)."""

    def __init__(self, scale: float = 0.07):
        self.scale = C.real("scale", scale, low=0.0)

    def __call__(self, shape, dtype, rng):
        dtype = _checked(dtype, rng)
        return rng.uniform(-self.scale, self.scale, shape).astype(dtype)


class Xavier(Initializer):
    """Glorot uniform: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""

    def __call__(self, shape, dtype, rng):
        dtype = _checked(dtype, rng)
        fan_in, fan_out = (shape[0], shape[-1]) if len(shape) > 1 else (shape[0], 1)
        # no fans, no values: the bound does not matter
        a = float(np.sqrt(6.0 / (fan_in + fan_out))) if fan_in + fan_out else 0.0
        return rng.uniform(-a, a, shape).astype(dtype)


class Constant(Initializer):
    """Every value equal to `value`."""

    def __init__(self, value: float):
        self.value = C.real("value", value)

    def __call__(self, shape, dtype, rng):
        return np.full(shape, self.value, _checked(dtype))


class Zeros(Constant):
    """All zeros (the default for biases)."""

    def __init__(self):
        self.value = 0.0

    def __repr__(self) -> str:
        return "Zeros()"

