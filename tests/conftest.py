"""Shared test helpers: a reproducible random generator, per-dtype tolerances, comparisons.

Tolerances.  References are computed in float64 from the very same (already rounded) inputs, so
the only difference left is the kernel's own rounding.  A sum of k products rounded in working
precision is off by at most about k * eps * sum|terms| and in practice by about sqrt(k) * eps *
sum|terms| (eps = 6e-8 for float32, 1.1e-16 for float64).  So every comparison allows

    |got - ref| <= rtol * (|ref| + scale)

where `scale` is the magnitude of what was accumulated (for X @ W + b: |X| @ |W| + |b|, element
by element), rtol = 1e-5 for float32 and 1e-12 for float64: about 6x / 40x above the typical
error at the largest contraction tested (k = 784), yet far below one missing or doubled term
(about scale / k), a wrong column or a wrong bias, which is what a broken kernel produces.
Measuring the error against `scale` rather than |ref| is what keeps results that cancel to near
zero from failing spuriously.
"""
from __future__ import annotations

import copy
import os
import zlib

# scikit-learn's estimator checks include array-API ones that SciPy only enables with this set
# before it is imported; without it they are skipped, not run.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np
import pytest

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def rtol_for(dtype) -> float:
    """The relative tolerance of a float dtype (see the module docstring)."""
    return RTOL[np.dtype(dtype)]


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id: reproducible, and different for every test."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: d.name)
def float_dtype(request) -> np.dtype:
    """Each floating dtype the kernels support."""
    return request.param


def assert_close(got, ref, *, scale=None, rtol: float | None = None, dtype=None,
                 err_msg: str = "") -> None:
    """Assert ``|got - ref| <= rtol * (|ref| + scale)`` element-wise.

    `ref` is a float64 reference.  `scale` (scalar or broadcastable array) is the magnitude of
    the accumulated terms; by default the largest |ref|.  `rtol` defaults to that of got's dtype.
    When `dtype` is given, got must have exactly that dtype.  Shapes must agree exactly, and a
    NaN or inf in got where ref is finite fails."""
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    if dtype is not None:
        assert got.dtype == np.dtype(dtype), \
            f"dtype {got.dtype}, expected {np.dtype(dtype)}. {err_msg}"
    assert got.shape == ref.shape, f"shape {got.shape}, expected {ref.shape}. {err_msg}"
    if got.size == 0:
        return
    r = rtol_for(got.dtype) if rtol is None else rtol
    if scale is None:
        scale = np.max(np.abs(ref))
    allowed = r * (np.abs(ref) + scale)
    err = np.abs(got.astype(np.float64) - ref)
    bad = ~(err <= allowed)  # NaN in err counts as bad
    if bad.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.nan_to_num(np.where(bad, err / allowed, 0.0), nan=np.inf)
        where = np.unravel_index(int(np.argmax(ratio)), got.shape)
        raise AssertionError(
            f"{int(bad.sum())} of {got.size} elements out of tolerance (rtol={r:g}); worst at "
            f"{tuple(int(i) for i in where)}: got {got[where]!r}, ref {ref[where]!r}, "
            f"allowed error {np.broadcast_to(allowed, got.shape)[where]:.3g}. {err_msg}")


def assert_bits_equal(a, b, err_msg: str = "") -> None:
    """Assert two arrays are identical to the bit: same dtype, shape and raw bytes."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, f"dtypes differ: {a.dtype} vs {b.dtype}. {err_msg}"
    assert a.shape == b.shape, f"shapes differ: {a.shape} vs {b.shape}. {err_msg}"
    ab = np.ascontiguousarray(a).reshape(-1).view(np.uint8).reshape(a.size, a.itemsize)
    bb = np.ascontiguousarray(b).reshape(-1).view(np.uint8).reshape(b.size, b.itemsize)
    if not np.array_equal(ab, bb):
        diff = np.flatnonzero((ab != bb).any(axis=1))
        raise AssertionError(f"{diff.size} of {a.size} elements differ in their bits (first at "
                             f"flat index {diff[0]}: {a.reshape(-1)[diff[0]]!r} vs "
                             f"{b.reshape(-1)[diff[0]]!r}). {err_msg}")


# ---- the real Fashion-MNIST ------------------------------------------------------------------

def learned(est) -> dict:
    """Copies of everything an estimator has learned (its public attributes ending in _)."""
    return {k: copy.deepcopy(v) for k, v in vars(est).items()
            if k.endswith("_") and not k.startswith("_")}


def assert_same_model(est, before: dict) -> None:
    """`est` has learned exactly what `before` (from learned) recorded."""
    after = learned(est)
    assert after.keys() == before.keys()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)


def last_row(a, value):
    """A copy of `a` with its last row set to `value`."""
    a = np.array(a, copy=True)
    a[-1] = value
    return a


@pytest.fixture(scope="session")
def fashion_cache(tmp_path_factory):
    """A private HOME and XDG cache, so the tests never write to the user's cache, and no
    mirrors, so they never reach the network.  The files come from $FASTSHALLOW_DATA when it is
    set (it is only read) or from Debian's dataset-fashion-mnist folder."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("fashion")
    mp.setenv("HOME", str(tmp / "home"))
    mp.setenv("XDG_CACHE_HOME", str(tmp / "cache"))
    mp.setenv("FASTSHALLOW_MIRRORS", "")
    yield tmp
    mp.undo()


@pytest.fixture(scope="session")
def fashion_rows(fashion_cache):
    """Fashion-MNIST as float32 rows in [0, 1]: (X_train, y_train, X_test, y_test).  Fails
    (never skips) when the files are missing."""
    from fastshallow.datasets import FashionMNIST

    tr, te = FashionMNIST(train=True, download=False), FashionMNIST(train=False, download=False)
    scale = np.float32(1 / 255)
    return (tr.data.reshape(len(tr), -1).astype(np.float32) * scale, tr.targets,
            te.data.reshape(len(te), -1).astype(np.float32) * scale, te.targets)

