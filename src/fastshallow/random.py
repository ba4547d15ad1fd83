"""The library's default random stream (used by initializers when no generator is given)."""
from __future__ import annotations

from typing import Union

import numpy as np

from . import _checks as C

__all__ = ["seed", "default_rng"]

_rng = np.random.default_rng()


def seed(s: Union[None, int, np.random.Generator]) -> None:
    """Reseed the default stream: the same seed gives the same initial weights.  `s`: an int,
    a numpy Generator (which becomes the stream), or None (fresh entropy)."""
    global _rng
    _rng = C.seed_or_rng("seed", s)


def default_rng() -> np.random.Generator:
    """The library's default stream, from which layers draw initial weights when given no
    generator (:func:`seed` replaces it)."""
    return _rng
