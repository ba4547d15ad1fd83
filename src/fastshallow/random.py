"""The library's default random stream: initializers draw from it when given no generator, and
data, loaders and datasets given no seed take their generators from it, so that one
:func:`seed` call makes a whole run reproducible, as MXNet's ``npx.random.seed`` does for the
book."""
from __future__ import annotations

import os
from typing import Union

import numpy as np

from . import _checks as C

__all__ = ["seed", "default_rng"]

_rng = np.random.default_rng()
_seeded = False  # whether seed() was given a seed or generator (else: fresh entropy)


def _after_fork() -> None:
    # A forked child inherits the stream: unseeded, every worker of a pool would draw the same
    # weights, data and shuffles, where fresh entropy was asked for.
    global _rng
    if not _seeded:
        _rng = np.random.default_rng()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def seed(s: Union[None, int, np.random.Generator]) -> None:
    """Reseed the default stream: the same seed then gives the same initial weights, synthetic
    data and shuffles wherever no generator or seed of their own is given.  `s`: an int, a
    numpy Generator (which becomes the stream), or None (fresh entropy)."""
    global _rng, _seeded
    _rng = C.seed_or_rng("seed", s)
    _seeded = s is not None


def default_rng() -> np.random.Generator:
    """The library's default stream, from which layers draw initial weights when given no
    generator (:func:`seed` replaces it)."""
    return _rng


def generator(name: str, seed) -> np.random.Generator:
    """The generator `seed` stands for: an int seeds a new one and a Generator is itself (as
    everywhere); None gives a new one seeded from the default stream, which :func:`seed`
    makes reproducible (unseeded, the stream starts from fresh entropy)."""
    if seed is None:
        return np.random.default_rng(int(_rng.integers(0, 1 << 63)))
    return C.seed_or_rng(name, seed)
