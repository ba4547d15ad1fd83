"""Shared benchmark fixtures: the data sets, built once per session.

Run with ``python -m pytest benches/bench_kernels.py --benchmark-only``.  Files named
``bench_*.py`` here are collected too when the whole directory is given (``pytest benches``).
"""
from __future__ import annotations

import numpy as np
import pytest

N_BIG, K_BIG = 1_000_000, 100


def pytest_collect_file(file_path, parent):
    # Explicitly named files are collected by pytest itself; only pick up the rest.
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


@pytest.fixture(scope="session")
def fmnist_u8():
    """A stand-in for the Fashion-MNIST training images: 60000 x 784 uint8 pixels.  Random
    pixels cost the same to gather and convert as the real ones."""
    return np.random.default_rng(1).integers(0, 256, (60_000, 784), dtype=np.uint8)


@pytest.fixture(scope="session")
def big_regression():
    """Linear-regression data, 1,000,000 x 100 float32 (400 MB): X, y (n x 1), w_true, b_true.
    Built once per session (about 2 s)."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((N_BIG, K_BIG), dtype=np.float32)
    w_true = rng.standard_normal((K_BIG, 1)).astype(np.float32)
    b_true = np.float32(4.2)
    y = X @ w_true + b_true
    y += np.float32(0.01) * rng.standard_normal(y.shape, dtype=np.float32)
    return X, y, w_true, b_true
