"""The library's default random stream (used by initializers when no generator is given)."""
from __future__ import annotations

import numpy as np

from . import _checks as C

__all__ = ["seed", "default_rng"]

_rng = np.random.default_rng()


def seed(s) -> None:
    """Reseed the default stream: the same seed gives the same initial weights."""
    global _rng
    _rng = C.seed_or_rng("seed", s)


def default_rng() -> np.random.Generator:
    return _rng
