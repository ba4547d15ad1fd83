"""The compiled kernels, through their validated wrappers (fastshallow.kernels), against NumPy.

References are computed in float64 from the same inputs; tolerances are explained in conftest.py.
Shapes cover the kernels' code paths: few outputs (m <= 16: dot products along the contraction;
in the portable loops 4-row x 2-output forward and 2-vector x 4-output gradient blocks over
8 floats / 4 doubles with a scalar remainder; on AVX-512, 4-row x 5-output forward blocks and up
to 4-vector x 10-output gradient blocks over 16 floats / 8 doubles, on AVX2 2-row x 5-output
forward blocks and up to 5-output x 2-vector gradient blocks over G broadcast 32 rows at a time,
over 8 floats / 4 doubles, with masked tails) and many (m > 16:
packed panels of 16 floats / 8 doubles, register blocks of 4 rows, or 8 rows on the AVX-512
path, and their tails); sizes that are not multiples of 2, 4, 8 or 16, chunks of 32 rows / 16
columns, and the Fashion-MNIST step (256, 784) -> 10.  The kernels are chosen at run time;
test_matmul_on_the_other_isas runs the others in subprocesses.  The
fused kernels' forward reads uint8 or scaled rows in place (test_fused_forward_reads_rows_in_place).
The float softmax cross-entropy of up to 16 classes puts a row in each AVX-512 or AVX2 lane,
with the same bits as the loops elsewhere (test_softmax_cross_entropy_same_bits_on_every_isa).
"""
from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastshallow.kernels as K
from fastshallow import _config
from fastshallow._ext import kernels as _kernels

from conftest import FLOAT_DTYPES, assert_bits_equal, assert_close, rtol_for

# Outputs: up to 16 take the dot-product path (groups of 4 and every tail of 1-3), 17 and 33 the
# panel path (two and three panels with tails).  The switch has moved before (it was m >= 4),
# so both sides of every plausible boundary are here.
MS = (1, 2, 3, 4, 5, 7, 8, 10, 13, 16, 17, 33)
# (rows, features): single row / column / feature, sizes off every multiple of 4, 8, 16 and 32.
NKS = ((1, 1), (1, 7), (2, 3), (3, 1), (5, 13), (7, 2), (13, 17), (17, 5), (31, 33), (33, 31),
       (37, 1), (100, 100), (1, 784), (33, 64), (65, 37))
FASHION = (256, 784, 10)


def f64(a):
    """A float64 copy (never a view: kernels update some arrays in place)."""
    return np.array(a, dtype=np.float64)


def ref_matmul_bias(X, W, b=None):
    """(X @ W + b in float64, |X| @ |W| + |b|: the magnitude of what was summed)."""
    ref = f64(X) @ f64(W)
    scale = np.abs(f64(X)) @ np.abs(f64(W))
    if b is not None:
        ref = ref + f64(b)
        scale = scale + np.abs(f64(b))
    return ref, scale


def ref_xent(Z, y, eps=0.0):
    """Per-row smoothed cross-entropy and its gradient softmax(Z) - q, in float64."""
    Z = f64(Z)
    n, m = Z.shape
    shifted = Z - Z.max(axis=1, keepdims=True)  # kept apart: max + log(s) would lose log(s)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    q = np.full((n, m), eps / m)
    q[np.arange(n), y] += 1.0 - eps
    return (q * (np.log(s) - shifted)).sum(axis=1), e / s - q


def ref_log_softmax(Z):
    Z = f64(Z)
    mx = Z.max(axis=-1, keepdims=True)
    return Z - mx - np.log(np.exp(Z - mx).sum(axis=-1, keepdims=True))


def naive_softmax(Z):
    """The textbook exp / sum, without the max shift (overflows for large logits)."""
    e = np.exp(Z)
    return e / e.sum(axis=1, keepdims=True)


def central_diff(f, x, h):
    """Central finite differences of the scalar function f at every entry of x (float64)."""
    g = np.empty_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


# ---- matmul_bias --------------------------------------------------------------------------------

@pytest.mark.parametrize("m", MS)
def test_matmul_bias_matches_numpy(rng, float_dtype, m):
    for n, k in NKS:
        X = rng.standard_normal((n, k)).astype(float_dtype)
        W = rng.standard_normal((k, m)).astype(float_dtype)
        b = rng.standard_normal(m).astype(float_dtype)
        ref, scale = ref_matmul_bias(X, W, b)
        assert_close(K.matmul_bias(X, W, b), ref, scale=scale, dtype=float_dtype,
                     err_msg=f"n={n} k={k} m={m}")
        ref0, scale0 = ref_matmul_bias(X, W)
        assert_close(K.matmul_bias(X, W), ref0, scale=scale0, dtype=float_dtype,
                     err_msg=f"b=None n={n} k={k} m={m}")


def test_matmul_bias_fashion_mnist_shape(rng, float_dtype):
    n, k, m = FASHION
    X = (rng.integers(0, 256, (n, k)) / 255).astype(float_dtype)
    W = (0.01 * rng.standard_normal((k, m))).astype(float_dtype)
    b = rng.standard_normal(m).astype(float_dtype)
    ref, scale = ref_matmul_bias(X, W, b)
    assert_close(K.matmul_bias(X, W, b), ref, scale=scale, dtype=float_dtype)


@pytest.mark.parametrize("m", (2, 10, 20))
def test_matmul_bias_into_out(rng, float_dtype, m):
    X = rng.standard_normal((37, 13)).astype(float_dtype)
    W = rng.standard_normal((13, m)).astype(float_dtype)
    b = rng.standard_normal(m).astype(float_dtype)
    out = np.full((37, m), np.nan, float_dtype)
    got = K.matmul_bias(X, W, b, out=out)
    assert got is out
    ref, scale = ref_matmul_bias(X, W, b)
    assert_close(out, ref, scale=scale)
    out2 = np.full((37, m), np.nan, float_dtype)
    assert K.matmul_bias(X, W, out=out2) is out2
    ref, scale = ref_matmul_bias(X, W)
    assert_close(out2, ref, scale=scale)


@pytest.mark.parametrize("m", (3, 10, 20))
def test_matmul_bias_non_contiguous_inputs(rng, float_dtype, m):
    big_X = rng.standard_normal((60, 40)).astype(float_dtype)
    big_W = rng.standard_normal((40, 2 * m)).astype(float_dtype)
    big_b = rng.standard_normal(2 * m).astype(float_dtype)
    X_before, W_before = big_X.copy(), big_W.copy()
    cases = {
        "sliced": (big_X[::2, 1:18], big_W[3:20, ::2], big_b[::2]),
        "fortran": (np.asfortranarray(big_X[:, :17]), np.asfortranarray(big_W[:17, :m]),
                    big_b[:m]),
        "transposed": (big_X[:17, :20].T, big_W[:17, :m], big_b[m:]),
        "negative strides": (big_X[::-3, ::-2][:, :17], big_W[17:0:-1, :m], big_b[m - 1::-1]),
    }
    for name, (X, W, b) in cases.items():
        assert not X.flags.c_contiguous
        ref, scale = ref_matmul_bias(X, W, b)
        assert_close(K.matmul_bias(X, W, b), ref, scale=scale, err_msg=name)
    np.testing.assert_array_equal(big_X, X_before)  # inputs are read, never written
    np.testing.assert_array_equal(big_W, W_before)


def test_matmul_bias_empty_dims(float_dtype):
    X = np.ones((4, 0), float_dtype)
    W = np.ones((0, 3), float_dtype)
    b = np.array([1.0, -2.0, 3.0], float_dtype)
    np.testing.assert_array_equal(K.matmul_bias(X, W, b), np.tile(b, (4, 1)))
    np.testing.assert_array_equal(K.matmul_bias(X, W), np.zeros((4, 3)))
    assert K.matmul_bias(np.ones((0, 5), float_dtype), np.ones((5, 3), float_dtype)).shape == (0, 3)
    assert K.matmul_bias(np.ones((2, 5), float_dtype), np.ones((5, 0), float_dtype)).shape == (2, 0)


@pytest.mark.parametrize("m", (2, 10, 20))
def test_kernels_on_arrays_not_aligned_to_vectors(rng, float_dtype, m):
    """C-contiguous arrays that start one element past a 32-byte boundary (views into a larger
    buffer, as np.frombuffer or a memory map gives) are used as they are: the vector loads
    must not assume alignment."""
    n, k = 37, 13
    item = np.dtype(float_dtype).itemsize

    def unaligned(shape):
        size = int(np.prod(shape))
        raw = np.zeros(size * item + 64, np.uint8)
        start = (-raw.ctypes.data) % 32 + item  # one element past a 32-byte boundary
        return raw[start:start + size * item].view(float_dtype).reshape(shape)

    X, W, b, out = unaligned((n, k)), unaligned((k, m)), unaligned((m,)), unaligned((n, m))
    X[...] = rng.standard_normal((n, k))
    W[...] = rng.standard_normal((k, m))
    b[...] = rng.standard_normal(m)
    assert X.ctypes.data % 32 == item and X.flags.c_contiguous
    ref, scale = ref_matmul_bias(X, W, b)
    assert K.matmul_bias(X, W, b, out=out) is out
    assert_close(out, ref, scale=scale)
    dW, db = K.matmul_bias_backward(X, out)
    assert_close(dW, f64(X).T @ f64(out), scale=np.abs(f64(X)).T @ np.abs(f64(out)))
    p = unaligned((k, m))
    p[...] = W
    K.sgd_update(p, dW, 0.1, n)
    assert_close(p, f64(W) - 0.1 * f64(dW) / n, scale=np.abs(f64(W)) + 0.1 * np.abs(f64(dW)) / n)


_OTHER_ISA_SCRIPT = textwrap.dedent("""
    import numpy as np
    import fastshallow.kernels as K
    from fastshallow._ext import kernels
    print(kernels().isa())
    rng = np.random.default_rng(0)
    worst = 0.0
    for dtype, rtol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        for n, k in ((1, 1), (3, 7), (7, 13), (9, 17), (33, 31), (100, 100), (17, 784)):
            for m in (1, 3, 4, 5, 7, 10, 16, 17, 33):
                X = rng.standard_normal((n, k)).astype(dtype)
                W = rng.standard_normal((k, m)).astype(dtype)
                b = rng.standard_normal(m).astype(dtype)
                Xd, Wd = X.astype(float), W.astype(float)
                Y = K.matmul_bias(X, W, b)
                worst = max(worst, (np.abs(Y - (Xd @ Wd + b)) /
                                    (np.abs(Xd) @ np.abs(Wd) + np.abs(b))).max() / rtol)
                dW, db = K.matmul_bias_backward(X, Y)
                Yd = Y.astype(float)
                worst = max(worst, (np.abs(dW - Xd.T @ Yd) /
                                    (np.abs(Xd).T @ np.abs(Yd) + 1e-300)).max() / rtol)
                one = K.matmul_bias(X, W, b, num_threads=1)
                assert np.array_equal(Y.view(np.uint8), one.view(np.uint8)), (n, k, m)
    print(worst)
""")


# The hand-blocked kernels each switch keeps out, by what fs_isa() then names.
ISA_SWITCHES = {"FASTSHALLOW_NO_AVX512": "AVX-512", "FASTSHALLOW_NO_AVX2": "AVX"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="x86-64 ISA switch")
@pytest.mark.parametrize("switch", sorted(ISA_SWITCHES))
def test_matmul_on_the_other_isas(switch):
    """The matrix products pick AVX-512 or AVX2 kernels at run time, by the CPU, and the portable
    loops elsewhere.  FASTSHALLOW_NO_AVX512=1 keeps the AVX-512 ones out, FASTSHALLOW_NO_AVX2=1
    both (read once per process, hence the subprocess): every path must be just as right."""
    env = dict(os.environ, **{switch: "1"})
    res = subprocess.run([sys.executable, "-c", _OTHER_ISA_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    isa, worst = res.stdout.split("\n")[:2]
    assert ISA_SWITCHES[switch] not in isa
    assert float(worst) <= 1.0, f"error {worst} x the tolerance on {isa}"


def _switched_on(name):
    value = os.environ.get(name, "")
    return bool(value) and not value.startswith("0")  # as fs_env_set reads it


def _built_with_kernels():
    """Whether this build has the hand-blocked kernels (GCC 12 or later, on x86-64)."""
    name, _, version = _kernels().compiler().partition(" ")
    return (platform.machine() in ("x86_64", "AMD64") and name == "gcc"
            and int(version.split(".")[0]) >= 12)


def test_isa_follows_the_cpu_and_the_environment():
    """The kernels the CPU can run, less those a switch keeps out (the subprocess tests rely on
    the switches); none in a build without them."""
    isa = _kernels().isa()
    flags = set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = set(next((l for l in f if l.startswith("flags")), "").split())
    v3 = _built_with_kernels() and {"avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm"} <= flags
    v4 = v3 and {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"} <= flags
    if _switched_on("FASTSHALLOW_NO_AVX2"):
        v3 = v4 = False
    elif _switched_on("FASTSHALLOW_NO_AVX512"):
        v4 = False
    assert ("(AVX-512)" in isa) == v4, (isa, v4)
    assert ("(AVX2, FMA)" in isa) == (v3 and not v4), (isa, v3)


def test_matmul_bias_accepts_lists():
    got = K.matmul_bias([[1.0, 2.0]], [[3.0], [4.0]], [0.5])
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [[11.5]])


# ---- matmul_bias_backward -----------------------------------------------------------------------

@pytest.mark.parametrize("m", MS)
def test_matmul_bias_backward_matches_numpy(rng, float_dtype, m):
    for n, k in NKS:
        X = rng.standard_normal((n, k)).astype(float_dtype)
        G = rng.standard_normal((n, m)).astype(float_dtype)
        dW, db = K.matmul_bias_backward(X, G)
        assert_close(dW, f64(X).T @ f64(G), scale=np.abs(f64(X)).T @ np.abs(f64(G)),
                     dtype=float_dtype, err_msg=f"dW n={n} k={k} m={m}")
        assert_close(db, f64(G).sum(axis=0), scale=np.abs(f64(G)).sum(axis=0),
                     dtype=float_dtype, err_msg=f"db n={n} k={k} m={m}")


def test_matmul_bias_backward_fashion_mnist_shape(rng, float_dtype):
    n, k, m = FASHION
    X = (rng.integers(0, 256, (n, k)) / 255).astype(float_dtype)
    G = (rng.standard_normal((n, m)) / n).astype(float_dtype)
    dW, db = K.matmul_bias_backward(X, G)
    assert_close(dW, f64(X).T @ f64(G), scale=np.abs(f64(X)).T @ np.abs(f64(G)))
    assert_close(db, f64(G).sum(axis=0), scale=np.abs(f64(G)).sum(axis=0))


def test_matmul_bias_backward_non_contiguous(rng):
    X = np.asfortranarray(rng.standard_normal((29, 11)))
    G = rng.standard_normal((29, 12))[:, ::2]
    dW, db = K.matmul_bias_backward(X, G)
    assert_close(dW, X.T @ G, scale=np.abs(X).T @ np.abs(G))
    assert_close(db, G.sum(axis=0), scale=np.abs(G).sum(axis=0))


def test_matmul_bias_backward_empty(float_dtype):
    dW, db = K.matmul_bias_backward(np.ones((0, 3), float_dtype), np.ones((0, 5), float_dtype))
    np.testing.assert_array_equal(dW, np.zeros((3, 5)))
    np.testing.assert_array_equal(db, np.zeros(5))
    assert dW.dtype == db.dtype == float_dtype


@pytest.mark.parametrize("m", (1, 3, 5, 9, 18))
def test_matmul_bias_gradients_vs_finite_differences(rng, m):
    """L(W, b) = 0.5 * |X @ W + b - T|^2, so dL/dY = Y - T; the backward must give dL/dW, dL/db."""
    n, k = 7, 6
    X = rng.standard_normal((n, k))
    T = rng.standard_normal((n, m))
    W = rng.standard_normal((k, m))
    b = rng.standard_normal(m)

    def loss():
        return 0.5 * float(np.sum((K.matmul_bias(X, W, b) - T) ** 2))

    dW, db = K.matmul_bias_backward(X, K.matmul_bias(X, W, b) - T)
    np.testing.assert_allclose(dW, central_diff(loss, W, 1e-5), rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(db, central_diff(loss, b, 1e-5), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("m", (3, 10, 20))
def test_softmax_regression_gradient_vs_finite_differences(rng, m):
    """The whole softmax-regression chain: matmul_bias -> softmax_cross_entropy -> backward."""
    n, k = 9, 5
    X = rng.standard_normal((n, k))
    y = rng.integers(0, m, n)
    W = rng.standard_normal((k, m))
    b = rng.standard_normal(m)

    def loss():
        return float(K.softmax_cross_entropy(K.matmul_bias(X, W, b), y,
                                             label_smoothing=0.1)[0].sum())

    _, G = K.softmax_cross_entropy(K.matmul_bias(X, W, b), y, label_smoothing=0.1)
    dW, db = K.matmul_bias_backward(X, G)
    np.testing.assert_allclose(dW, central_diff(loss, W, 1e-6), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, central_diff(loss, b, 1e-6), rtol=1e-6, atol=1e-8)


# ---- softmax cross-entropy, softmax, log-softmax ------------------------------------------------

@pytest.mark.parametrize("eps", (0.0, 0.1, 1.0))
@pytest.mark.parametrize("m", MS)
def test_softmax_cross_entropy_matches_numpy(rng, float_dtype, m, eps):
    for n in (1, 2, 3, 5, 17, 33, 100):
        Z = (4 * rng.standard_normal((n, m))).astype(float_dtype)
        y = rng.integers(0, m, n)
        loss, grad = K.softmax_cross_entropy(Z, y, label_smoothing=eps)
        ref_loss, ref_grad = ref_xent(Z, y, eps)
        # The loss is a difference of terms of size |z| and log(m): rounding scales with those.
        row_scale = np.abs(f64(Z)).max(axis=1) + np.log(m) + 1
        assert_close(loss, ref_loss, scale=row_scale, dtype=float_dtype, err_msg=f"loss n={n}")
        # Gradient entries are probabilities minus targets, all within [-1, 1].
        assert_close(grad, ref_grad, scale=1.0, dtype=float_dtype, err_msg=f"grad n={n}")
        assert_close(grad.sum(axis=1), np.zeros(n), scale=m, err_msg="grad rows sum to 0")


_XENT_CASES_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import fastshallow.kernels as K
    from fastshallow._ext import kernels
    cases = np.load(sys.argv[1])
    out = {}
    for name in cases.files:
        if name.startswith("Z"):
            i = name[1:]
            for eps in (0.0, 0.1):
                loss, grad = K.softmax_cross_entropy(cases[name], cases["y" + i],
                                                     label_smoothing=eps)
                out[f"loss{i}_{eps}"], out[f"grad{i}_{eps}"] = loss, grad
                # all rows in one call of the C kernel, as the fused step's calls of 64
                Z = cases[name]
                loss, grad = np.empty(len(Z), Z.dtype), np.empty_like(Z)
                kernels().softmax_cross_entropy(Z, cases["y" + i].astype(np.int64), eps, loss,
                                                grad, 1, len(Z))
                out[f"whole_loss{i}_{eps}"], out[f"whole_grad{i}_{eps}"] = loss, grad
    np.savez(sys.argv[2], **out)
    print(kernels().isa())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="x86-64 ISA switch")
def test_softmax_cross_entropy_same_bits_on_every_isa(rng, tmp_path):
    """With AVX-512 or AVX2 the float softmax cross-entropy of up to 16 classes runs 16 or 8
    rows at a time, a row per lane; elsewhere, loops over each row.  All do the same operations
    in the same order, so losses and gradients agree to the bit (here against subprocesses with
    FASTSHALLOW_NO_AVX2=1, which keeps both kernels out: the loops, compiled for the same CPU,
    and with FASTSHALLOW_NO_AVX512=1: the AVX2 kernel on an AVX-512 CPU): rows in whole and
    partial blocks, 1 to 16 classes, ties, infinities, NaN, signed zeros, label smoothing, in
    the wrapper's calls of 32 rows and in one call of all of them (the AVX2 kernel's passes
    take up to 64 rows, as the fused step's calls give it).  NaN
    comes out in the same places, but where two NaNs meet in one operation (inf - inf beside
    a NaN logit) which of them survives, and so the sign of the result, follows the
    instruction's operand order, which the compiler picks differently for vectors and scalars:
    NaNs are compared by place only."""
    cases = {}
    for i, (n, m) in enumerate(((1, 1), (1, 10), (15, 2), (16, 10), (17, 16), (33, 7),
                                (64, 10), (100, 13), (5, 3), (40, 10))):
        Z = (rng.standard_normal((n, m)) * [1e-3, 1.0, 30.0, 1e4][i % 4]).astype(np.float32)
        y = rng.integers(0, m, n)
        if i % 3 == 0:
            Z = np.round(Z)  # ties
        if i == 8:
            Z[:] = 0.0
            Z[0, 0], Z[1, 1] = -0.0, -0.0
        if i == 9:
            Z[0, 3], Z[1, 0], Z[2, 5], Z[3, :] = np.nan, np.inf, -np.inf, -np.inf
            Z[4, :4], y[4] = [0.0, np.nan, np.inf, -100.0], 2  # two NaNs meet
        cases[f"Z{i}"], cases[f"y{i}"] = Z, y
    np.savez(tmp_path / "cases.npz", **cases)
    for switch, isa in (("FASTSHALLOW_NO_AVX2", ("portable loops", "baseline")),
                        ("FASTSHALLOW_NO_AVX512", ("AVX2", "portable loops", "baseline"))):
        res = subprocess.run([sys.executable, "-c", _XENT_CASES_SCRIPT,
                              str(tmp_path / "cases.npz"), str(tmp_path / "other.npz")],
                             env=dict(os.environ, **{switch: "1"}), capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        assert any(name in res.stdout for name in isa), (switch, res.stdout)
        other = np.load(tmp_path / "other.npz")
        for i in range(len(cases) // 2):
            for eps in (0.0, 0.1):
                got = K.softmax_cross_entropy(cases[f"Z{i}"], cases[f"y{i}"],
                                              label_smoothing=eps)
                for name, a in zip(("loss", "grad"), got):
                    for how in ("", "whole_"):  # in calls of 32 rows, and of all of them
                        b = other[f"{how}{name}{i}_{eps}"]
                        msg = f"{how}{name} case {i} eps={eps} against {switch}"
                        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), msg)
                        assert_bits_equal(np.where(np.isnan(a), 0, a),
                                          np.where(np.isnan(b), 0, b), msg)


def test_softmax_cross_entropy_fashion_mnist_shape(rng, float_dtype):
    n, _, m = FASHION
    Z = (3 * rng.standard_normal((n, m))).astype(float_dtype)
    y = rng.integers(0, m, n)
    loss, grad = K.softmax_cross_entropy(Z, y)
    ref_loss, ref_grad = ref_xent(Z, y)
    assert_close(loss, ref_loss, scale=np.abs(f64(Z)).max(axis=1) + np.log(m) + 1)
    assert_close(grad, ref_grad, scale=1.0)


@pytest.mark.parametrize("eps", (0.0, 0.25))
@pytest.mark.parametrize("m", (2, 3, 10, 17))
def test_softmax_cross_entropy_gradient_vs_finite_differences(rng, m, eps):
    Z = 2 * rng.standard_normal((4, m))
    y = rng.integers(0, m, 4)

    def total():
        return float(K.softmax_cross_entropy(Z, y, label_smoothing=eps)[0].sum())

    _, grad = K.softmax_cross_entropy(Z, y, label_smoothing=eps)
    np.testing.assert_allclose(grad, central_diff(total, Z, 1e-6), rtol=1e-6, atol=1e-8)


def test_softmax_cross_entropy_label_forms_agree(rng):
    Z = rng.standard_normal((6, 4))
    y = np.array([0, 3, 1, 2, 3, 0])
    ref = K.softmax_cross_entropy(Z, y)
    for labels in (y.astype(np.int32), y.astype(np.uint8), y.astype(np.float64), y.tolist(),
                   y.reshape(-1, 1), y[::-1][::-1]):
        got = K.softmax_cross_entropy(Z, labels)
        assert_bits_equal(got[0], ref[0])
        assert_bits_equal(got[1], ref[1])


def test_softmax_cross_entropy_single_class_and_empty(float_dtype):
    loss, grad = K.softmax_cross_entropy(np.array([[3.0], [-7.0]], float_dtype), [0, 0])
    np.testing.assert_array_equal(loss, [0.0, 0.0])
    np.testing.assert_array_equal(grad, [[0.0], [0.0]])
    loss, grad = K.softmax_cross_entropy(np.empty((0, 10), float_dtype), [])
    assert loss.shape == (0,) and grad.shape == (0, 10)
    assert loss.dtype == grad.dtype == float_dtype


@pytest.mark.parametrize("dtype, big", [(np.float32, 1e4), (np.float32, 1e30),
                                        (np.float64, 1e4), (np.float64, 1e30),
                                        (np.float64, 1e300)])
def test_softmax_large_logits_are_stable(dtype, big):
    Z = np.array([[big, -big, 0.5 * big, 0.0],
                  [0.0, big, big, -big],
                  [big, big - 1 if big < 1e6 else big, 0.0, 0.0],
                  [-big, -big, -big, -big]], dtype)
    y = np.array([1, 2, 0, 3])
    # The naive exp-normalize overflows (inf / inf = nan) on the very same logits ...
    with np.errstate(over="ignore", invalid="ignore"):
        assert not np.isfinite(naive_softmax(Z)).all()
    # ... while the kernels stay finite and right.  References in float64 from the same values.
    ref_loss, ref_grad = ref_xent(Z, y)
    loss, grad = K.softmax_cross_entropy(Z, y)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    assert_close(loss, ref_loss, scale=np.abs(f64(Z)).max(axis=1) + 1)
    assert_close(grad, ref_grad, scale=1.0)
    # Row 0, label 1: the loss is max - z_1 = 2 * big exactly (every other exp underflows).
    assert loss[0] == dtype(2 * big)
    p = K.softmax(Z)
    assert np.isfinite(p).all()
    assert_close(p, np.exp(ref_log_softmax(Z)), scale=1.0)
    assert_close(p.sum(axis=1), np.ones(4), scale=1.0)
    lp = K.log_softmax(Z)
    assert np.isfinite(lp).all()
    assert_close(lp, ref_log_softmax(Z), scale=np.abs(f64(Z)).max(axis=1, keepdims=True) + 1)


@pytest.mark.parametrize("m", MS)
def test_softmax_and_log_softmax_match_numpy(rng, float_dtype, m):
    for n in (1, 2, 3, 7, 33, 100):
        Z = (5 * rng.standard_normal((n, m))).astype(float_dtype)
        ref_lp = ref_log_softmax(Z)
        p = K.softmax(Z)
        assert_close(p, np.exp(ref_lp), scale=1.0, dtype=float_dtype, err_msg=f"n={n}")
        assert_close(p.sum(axis=1), np.ones(n), scale=m, err_msg=f"row sums n={n}")
        assert (p >= 0).all()
        lp = K.log_softmax(Z)
        assert_close(lp, ref_lp, scale=np.abs(f64(Z)).max(axis=1, keepdims=True) + np.log(m),
                     dtype=float_dtype, err_msg=f"n={n}")


def test_softmax_exponentials_across_the_float32_range():
    # The float32 kernels compute e^(z - max) sixteen lanes at a time with their own
    # polynomial (fs_vexpf): checked here on a dense grid of every exponent float32 can hold.
    # Rows [x, 0] give p = (e^x / (1 + e^x), 1 / (1 + e^x)), a few roundings from the float64
    # values; below ln(2^-126) e^x is 0 (only subnormals differ: an absolute 1.2e-38 at most).
    x = np.concatenate([np.linspace(-104.0, 0.0, 200_003), -np.logspace(-12, 0, 5001)])
    Z = np.stack([x, np.zeros_like(x)], axis=1).astype(np.float32)
    ref = np.exp(ref_log_softmax(Z))
    np.testing.assert_allclose(K.softmax(Z), ref, rtol=1e-6, atol=1.2e-38)
    lp = K.log_softmax(Z)
    np.testing.assert_allclose(lp, ref_log_softmax(Z), rtol=1e-6, atol=1e-7)
    loss, grad = K.softmax_cross_entropy(Z, np.zeros(len(x), np.int64))
    np.testing.assert_allclose(loss, -ref_log_softmax(Z)[:, 0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad[:, 1], ref[:, 1], rtol=1e-6, atol=1.2e-38)
    # exact where it must be: e^0 = 1, and a row of equal logits is uniform
    assert (K.softmax(np.zeros((3, 10), np.float32)) == np.float32(0.1)).all()
    assert K.softmax(np.array([[0.0, -np.inf]], np.float32)).tolist() == [[1.0, 0.0]]
    assert np.isnan(K.softmax(np.array([[np.nan, 0.0]], np.float32))).all()


def test_softmax_one_dimensional_and_non_contiguous(rng, float_dtype):
    z = rng.standard_normal(13).astype(float_dtype)
    p = K.softmax(z)
    assert p.shape == (13,)
    assert_close(p, np.exp(ref_log_softmax(z)), scale=1.0)
    assert_close(K.log_softmax(z), ref_log_softmax(z), scale=np.abs(f64(z)).max() + 3)
    Z = np.asfortranarray(rng.standard_normal((9, 20)).astype(float_dtype))[:, ::3]
    assert_close(K.softmax(Z), np.exp(ref_log_softmax(Z)), scale=1.0)
    assert K.softmax(np.empty((0, 4), float_dtype)).shape == (0, 4)


# ---- sgd_update ---------------------------------------------------------------------------------

def ref_sgd(p, g, lr, bs, momentum=0.0, wd=0.0, v=None):
    """One step in float64; returns (param, velocity)."""
    d = g / bs + wd * p
    if v is None:
        return p - lr * d, None
    v = momentum * v + d
    return p - lr * v, v


def sgd_magnitude(p, g, lr, bs, momentum, wd, v):
    """The same recurrence on absolute values: a bound on the size of every intermediate."""
    d = np.abs(g) / bs + wd * np.abs(p)
    v = d if v is None else momentum * v + d
    return np.abs(p) + lr * v, v


@pytest.mark.parametrize("size", (1, 7, 100, 8193))
@pytest.mark.parametrize("wd", (0.0, 0.01))
def test_sgd_update_matches_numpy(rng, float_dtype, size, wd):
    p = rng.standard_normal(size).astype(float_dtype)
    g = rng.standard_normal(size).astype(float_dtype)
    ref, _ = ref_sgd(f64(p), f64(g), 0.1, 32, wd=wd)
    scale, _ = sgd_magnitude(f64(p), f64(g), 0.1, 32, 0.0, wd, None)
    got = K.sgd_update(p, g, lr=0.1, batch_size=32, weight_decay=wd)
    assert got is p  # in place, returns the very object
    assert_close(p, ref, scale=scale, dtype=float_dtype)


@pytest.mark.parametrize("wd", (0.0, 1e-3))
@pytest.mark.parametrize("shape", ((1,), (5, 3), (784, 10), (3, 7, 11)))
def test_sgd_update_momentum_several_steps(rng, float_dtype, shape, wd):
    lr, bs, mom = 0.05, 16, 0.9
    p = rng.standard_normal(shape).astype(float_dtype)
    v = np.zeros(shape, float_dtype)
    rp, rv = f64(p), f64(v)
    sp, sv = np.abs(rp), None
    for step in range(6):
        g = (4 * rng.standard_normal(shape)).astype(float_dtype)
        assert K.sgd_update(p, g, lr, bs, momentum=mom, weight_decay=wd, velocity=v) is p
        rp, rv = ref_sgd(rp, f64(g), lr, bs, mom, wd, rv)
        sp, sv = sgd_magnitude(sp, f64(g), lr, bs, mom, wd, sv)
        assert_close(v, rv, scale=sv, dtype=float_dtype, err_msg=f"velocity step {step}")
        assert_close(p, rp, scale=sp, dtype=float_dtype, err_msg=f"param step {step}")


def test_sgd_update_velocity_without_momentum_and_numpy_scalars(rng):
    p = rng.standard_normal(10)
    g = rng.standard_normal(10)
    v = rng.standard_normal(10)
    rp, rv = ref_sgd(p.copy(), g, 0.25, 4, 0.0, 0.0, v.copy())
    K.sgd_update(p, g, np.float32(0.25), np.int64(4), velocity=v)
    assert_close(v, rv, scale=np.abs(rv) + np.abs(g))
    assert_close(p, rp, scale=np.abs(rp) + 1)


def test_sgd_update_zero_dimensional_param():
    """A scalar parameter (shape ()) is updated like any other."""
    p, g = np.array(1.0), np.array(2.0)
    assert K.sgd_update(p, g, 0.5, 4) is p
    assert p.shape == () and p == 1.0 - 0.5 * 2.0 / 4


def test_sgd_update_non_contiguous_grad(rng):
    p = rng.standard_normal((6, 4))
    g = np.asfortranarray(rng.standard_normal((6, 4)))
    ref, _ = ref_sgd(p.copy(), g, 0.5, 3)
    K.sgd_update(p, g, 0.5, 3)
    assert_close(p, ref, scale=np.abs(ref) + np.abs(g))


# ---- regression_loss ----------------------------------------------------------------------------

def ref_regression(P, T, delta=None):
    """Per-row mean over outputs of 0.5 d^2 (or Huber) and its gradient, in float64."""
    D = f64(P) - f64(T).reshape(np.shape(P))
    D2 = D.reshape(len(D), -1)
    m = max(D2.shape[1], 1)
    if delta is None:
        per, g = 0.5 * D2 * D2, D2
    else:
        A = np.abs(D2)
        per = np.where(A <= delta, 0.5 * D2 * D2, delta * (A - 0.5 * delta))
        g = np.clip(D2, -delta, delta)
    return per.sum(axis=1) / m, (g / m).reshape(D.shape)


@pytest.mark.parametrize("delta", (None, 0.5, 2.0))
@pytest.mark.parametrize("shape", ((1, 1), (7, 1), (33, 3), (65, 10), (31, 17), (5, 2, 3)))
def test_regression_loss_matches_numpy(rng, float_dtype, shape, delta):
    P = (2 * rng.standard_normal(shape)).astype(float_dtype)
    T = rng.standard_normal(shape).astype(float_dtype)
    loss, grad = K.regression_loss(P, T, delta=delta)
    ref_loss, ref_grad = ref_regression(P, T, delta)
    assert_close(loss, ref_loss, dtype=float_dtype)
    assert_close(grad, ref_grad, dtype=float_dtype)


def test_regression_loss_targets_in_any_shape_and_dtype(rng):
    P = rng.standard_normal((9, 1)).astype(np.float32)
    T = rng.standard_normal(9)  # (n,) float64 targets for (n, 1) float32 predictions
    loss, grad = K.regression_loss(P, T.tolist())
    ref_loss, ref_grad = ref_regression(P, T.astype(np.float32))
    assert_close(loss, ref_loss, dtype=np.float32)
    assert_close(grad, ref_grad, dtype=np.float32)


def test_regression_loss_huber_is_l2_inside_delta(rng, float_dtype):
    P = (0.1 * rng.standard_normal((40, 3))).astype(float_dtype)
    T = np.zeros_like(P)
    for a, b in zip(K.regression_loss(P, T), K.regression_loss(P, T, delta=1.0)):
        assert_bits_equal(a, b)


@pytest.mark.parametrize("delta", (None, 0.5))
def test_regression_loss_nan_and_inf_as_numpy(float_dtype, delta):
    """Non-finite predictions or targets give NumPy's values, not finite stand-ins: a NaN
    residual a NaN loss and gradient (with Huber too, beyond the threshold as far as the
    comparison with it can tell), an infinite one an infinite loss and a gradient of +-inf
    (squared) or +-delta (Huber); the other outputs of the row keep their finite gradients."""
    nan, inf = np.nan, np.inf
    P = np.array([[nan, 0.3], [inf, -0.2], [-inf, 0.1], [0.4, 0.2], [1.0, 2.0]], float_dtype)
    T = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [nan, 0.0], [inf, 2.0]], float_dtype)
    loss, grad = K.regression_loss(P, T, delta=delta)
    with np.errstate(invalid="ignore"):
        ref_loss, ref_grad = ref_regression(P, T, delta)
    for got, ref in ((loss, ref_loss), (grad, ref_grad)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got) * np.sign(got),
                                      np.isinf(ref) * np.sign(ref))
        finite = np.isfinite(ref)
        assert_close(got[finite], ref[finite], dtype=float_dtype)


@pytest.mark.parametrize("layout", ("fortran", "strided", "reversed", "1-D"))
def test_regression_loss_any_layout(rng, float_dtype, layout):
    """Predictions and targets in any memory layout give the contiguous copies' bits."""
    P = rng.standard_normal((41, 3)).astype(float_dtype)
    T = rng.standard_normal((41, 3)).astype(float_dtype)
    if layout == "fortran":
        Pl, Tl = np.asfortranarray(P), np.asfortranarray(T)
    elif layout == "strided":
        Pl = np.repeat(P, 2, axis=1)[:, ::2]
        Tl = np.repeat(T, 2, axis=0)[::2]
    elif layout == "reversed":
        Pl, Tl = P[::-1].copy()[::-1], T[:, ::-1].copy()[:, ::-1]
    else:
        P, T = P[:, 0].copy(), T[:, 0].copy()
        Pl, Tl = np.repeat(P, 3)[::3], np.repeat(T, 3)[::3]
    assert not (Pl.flags.c_contiguous or Tl.flags.c_contiguous)
    for delta in (None, 0.5):
        want = K.regression_loss(P, T, delta=delta)
        for got, w in zip(K.regression_loss(Pl, Tl, delta=delta), want):
            assert_bits_equal(got, w, f"{layout} delta={delta}")
        ref_loss, ref_grad = ref_regression(P, T, delta)
        assert_close(want[0], ref_loss, dtype=float_dtype)
        assert_close(want[1], ref_grad, dtype=float_dtype)


@pytest.mark.parametrize("P_shape, T_shape", [((3, 2), (2, 3)), ((4, 1), (1, 4)), ((4,), (1, 4)),
                                              ((2, 6), (4, 3)), ((1,), ())])
def test_regression_loss_refuses_targets_of_other_rows(P_shape, T_shape):
    """Targets of y_hat's size but other rows (a transposed target) would pair values of
    different examples: refused, by the compiled shortcut's caller too."""
    P, T = np.arange(math.prod(P_shape), dtype=float).reshape(P_shape), \
        np.arange(math.prod(T_shape), dtype=float).reshape(T_shape)
    want = rf"y must have one target per prediction.*{re.escape(str(P_shape))}.*" \
           rf"{re.escape(str(T_shape))}"
    for call in (lambda: K.regression_loss(P, T), lambda: K.regression_loss(P, T.tolist()),
                 lambda: K.regression_loss(P, T, delta=1.0, num_threads=1)):
        with pytest.raises(ValueError, match=want):
            call()


def test_regression_loss_takes_one_target_per_row_in_either_shape(rng):
    P, T = rng.standard_normal((5, 1)), rng.standard_normal(5)
    for a, b in zip(K.regression_loss(P, T), K.regression_loss(P, T[:, None])):
        assert_bits_equal(a, b)
    for a, b in zip(K.regression_loss(P[:, 0], T), K.regression_loss(P[:, 0], T[:, None])):
        assert_bits_equal(a, b)
    # several outputs per example, laid out differently: the same values per row
    P3 = rng.standard_normal((4, 2, 3))
    for a, b in zip(K.regression_loss(P3, P3.reshape(4, 6) + 1),
                    K.regression_loss(P3, P3 + 1)):
        assert_bits_equal(a, b)


def test_byte_swapped_inputs_read_as_their_native_copies(rng, float_dtype):
    """A byte-swapped float holds the same numbers: kernels that only read it take a native
    copy and give the native array's bits."""
    def swapped(a):
        return a.astype(a.dtype.newbyteorder("S"))

    X = rng.standard_normal((6, 4)).astype(float_dtype)
    W = rng.standard_normal((4, 3)).astype(float_dtype)
    G = rng.standard_normal((6, 3)).astype(float_dtype)
    y = rng.integers(0, 3, 6)
    assert not swapped(X).dtype.isnative
    pairs = [
        (lambda f: K.matmul_bias(f(X), f(W), f(W[0]))),
        (lambda f: K.matmul_bias_backward(f(X), f(G))),
        (lambda f: K.softmax_cross_entropy(f(G), y)),
        (lambda f: K.softmax(f(G))),
        (lambda f: K.regression_loss(f(G), f(G[::-1]))),
        (lambda f: K.gather_rows(f(X), [5, 0, 2])),
        (lambda f: K.sgd_update(X.copy(), f(X), 0.1, 2)),
    ]
    for call in pairs:
        want, got = call(lambda a: a), call(swapped)
        for w, g in zip(want if isinstance(want, tuple) else (want,),
                        got if isinstance(got, tuple) else (got,)):
            assert g.dtype == float_dtype and g.dtype.isnative
            assert_bits_equal(g, w)


def test_byte_swapped_arrays_the_kernels_write_are_refused_saying_why(float_dtype):
    dt = np.dtype(float_dtype)
    swapped = dt.newbyteorder("S")
    order = "big-endian" if swapped.byteorder == ">" else "little-endian"
    why = rf"byte-swapped \({order}\) {dt} is not native"
    X = np.ones((2, 3), dt)
    with pytest.raises(TypeError, match=rf"param must be native float32 or float64: {why}"):
        K.sgd_update(np.ones(3, swapped), np.ones(3, dt), 0.1, 1)
    with pytest.raises(TypeError, match=rf"velocity must be native .*: {why}"):
        K.sgd_update(np.ones(3, dt), np.ones(3, dt), 0.1, 1, 0.5, velocity=np.zeros(3, swapped))
    with pytest.raises(TypeError, match=rf"out must be native {dt}: {why}"):
        K.matmul_bias(X, np.ones((3, 2), dt), out=np.empty((2, 2), swapped))
    with pytest.raises(TypeError, match=rf"out must be native {dt}: {why}"):
        K.gather_rows(X, [0], out=np.empty((1, 3), swapped))


def test_regression_loss_empty(float_dtype):
    loss, grad = K.regression_loss(np.zeros((0, 2), float_dtype), np.zeros(0))
    assert loss.shape == (0,) and grad.shape == (0, 2) and loss.dtype == float_dtype
    loss, grad = K.regression_loss(np.zeros((3, 0), float_dtype), np.zeros(0))
    assert_bits_equal(loss, np.zeros(3, float_dtype))


# ---- gather_rows --------------------------------------------------------------------------------

def test_gather_rows_uint8_scaled(rng):
    src = rng.integers(0, 256, (500, 784), dtype=np.uint8)
    idx = rng.permutation(500)[:256]
    got = K.gather_rows(src, idx, scale=1 / 255)
    ref = src[idx].astype(np.float32) * np.float32(1 / 255)
    assert got.dtype == np.float32
    # A conversion and one rounded multiply: exactly NumPy's float32 result.
    assert_bits_equal(got, ref)
    assert got.min() >= 0 and got.max() <= 1


@pytest.mark.parametrize("src_dtype", (np.uint8, np.float32, np.float64))
@pytest.mark.parametrize("out_dtype", (None, np.float32, np.float64))
@pytest.mark.parametrize("scale", (None, 0.5, 1 / 255))
def test_gather_rows_dtypes(rng, src_dtype, out_dtype, scale):
    src = (rng.integers(0, 256, (41, 17)) if src_dtype == np.uint8
           else rng.standard_normal((41, 17))).astype(src_dtype)
    idx = rng.integers(0, 41, 50)  # repeated indices, more picks than rows
    got = K.gather_rows(src, idx, scale=scale, dtype=out_dtype)
    want = np.dtype(out_dtype or (np.float32 if src_dtype == np.uint8 else src_dtype))
    assert got.dtype == want
    ref = src[idx].astype(want)
    if scale is not None:
        ref = ref * want.type(scale)
        assert_close(got, ref, rtol=np.finfo(want).eps, scale=0.0)  # one rounding at most
    else:
        assert_bits_equal(got, ref)  # a plain copy / conversion is exact


def test_gather_rows_three_dimensional_source(rng):
    src = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8)
    idx = np.array([59, 0, 7, 7, 31])
    got = K.gather_rows(src, idx, scale=1 / 255)
    assert got.shape == (5, 28, 28)
    assert_bits_equal(got, src[idx].astype(np.float32) * np.float32(1 / 255))
    srcf = rng.standard_normal((60, 4, 3, 2))
    assert_bits_equal(K.gather_rows(srcf, idx), srcf[idx])


def test_gather_rows_one_dimensional_source(rng):
    src = rng.standard_normal(9).astype(np.float32)
    idx = [8, 0, 3]
    assert_bits_equal(K.gather_rows(src, idx), src[idx])


def test_gather_rows_into_out(rng):
    src = rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)
    idx = rng.integers(0, 100, 32).astype(np.int32)
    out = np.full((32, 28, 28), np.nan, np.float64)
    got = K.gather_rows(src, idx, out=out, scale=1 / 255)
    assert got is out
    assert_bits_equal(out, src[idx].astype(np.float64) * (1 / 255))


def test_gather_rows_repeated_and_empty(rng):
    src = rng.standard_normal((10, 6))
    idx = np.array([3, 3, 3, 9, 3])
    assert_bits_equal(K.gather_rows(src, idx), src[idx])
    for empty in (np.array([], np.int64), np.array([], np.int32), np.array([], np.uint32)):
        got = K.gather_rows(src, empty)
        assert got.shape == (0, 6) and got.dtype == src.dtype
    u8 = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    got = K.gather_rows(u8, np.array([], np.int64), scale=1 / 255)
    assert got.shape == (0, 28, 28) and got.dtype == np.float32
    out = np.empty((0, 28, 28), np.float32)
    assert K.gather_rows(u8, np.array([], np.int64), out=out) is out


def test_gather_rows_accepts_empty_list(rng):
    """An empty Python list is an empty index array (np.asarray([]) is float64, but holds no
    fractional index), as an empty list of labels is accepted by softmax_cross_entropy."""
    src = rng.standard_normal((10, 6))
    got = K.gather_rows(src, [])
    assert got.shape == (0, 6) and got.dtype == src.dtype


def test_gather_rows_non_contiguous_source(rng):
    base = rng.standard_normal((30, 16))
    src = base[::3, ::2]
    idx = np.array([9, 0, 4])
    assert_bits_equal(K.gather_rows(src, idx), src[idx])
    idx_strided = np.arange(10)[::-2]
    assert_bits_equal(K.gather_rows(src, idx_strided), src[idx_strided])


# ---- fused forward: examples read in place ------------------------------------------------------

def test_working_layout_is_aligned_and_round_trips(rng, float_dtype):
    """The fused kernels' weights start on a 64-byte boundary (their vector loads then stay
    within cache lines), are a copy, and come back exactly, for both layouts and any input
    order."""
    for m in (1, 10, 16, 17, 40):
        W = rng.standard_normal((37, m)).astype(float_dtype)
        for src in (W, np.asfortranarray(W)):
            P = _kernels().to_working_layout(src)
            assert P.ctypes.data % 64 == 0 and P.flags.c_contiguous
            assert not np.shares_memory(P, src)
            back = _kernels().from_working_layout(P, 37, m, np.empty_like(W))
            assert_bits_equal(back, W)


@pytest.mark.parametrize("source", ["uint8", "float", "float-scaled"])
def test_fused_forward_reads_rows_in_place(rng, float_dtype, source):
    """The fused kernels read the examples where they are (uint8 or float rows, picked by index,
    scaled) and convert them in registers.  Against NumPy, and bit for bit against gathering
    the rows first and multiplying them (the per-batch path), for 1 and 2 threads: a tail
    shorter than a vector, rows shorter than one (k < 16), chunks of 64 rows, both layouts,
    outputs in one pass of up to 5 or several (the last one short), with the rows converted in
    the first pass kept for the others, and not (the buffer holds 4 rows of 1024 floats or 512
    doubles on AVX-512, 2 rows of 2048 or 1024 on AVX2: shapes at and past both).  uint8 rows
    at scales that the AVX2 float forward applies by a multiply-add (positive, below 2^104:
    1/255, 3, a subnormal one, the largest float below 2^104) and that it leaves to the
    multiply (2^104; 2^110, whose 2^23 * scale no float holds; 0; negative)."""
    shapes = ((1, 1, 1), (5, 7, 3), (67, 17, 10), (130, 37, 5), (70, 784, 10), (66, 16, 16),
              (9, 33, 17), (13, 48, 6), (7, 32, 11), (33, 128, 13), (8, 40, 7), (6, 1024, 7),
              (5, 1030, 7), (9, 500, 8), (5, 520, 6), (5, 2048, 7), (3, 2056, 6))
    if source == "uint8":
        below = float(np.nextafter(np.float32(2.0 ** 104), np.float32(0)))
        cases = [(n, k, m, 1 / 255) for n, k, m in shapes]
        cases += [(n, k, m, scale) for n, k, m in ((67, 17, 10), (70, 784, 10), (5, 1030, 7))
                  for scale in (3.0, 2.0 ** -140, below, 2.0 ** 104, 2.0 ** 110, 0.0, -0.5)]
    else:
        cases = [(n, k, m, 0.37 if source == "float-scaled" else 1.0) for n, k, m in shapes]
    for n, k, m, scale in cases:
        if source == "uint8":
            X = rng.integers(0, 256, (n + 11, k), dtype=np.uint8)
        else:
            X = rng.standard_normal((n + 11, k)).astype(float_dtype)
        W = rng.standard_normal((k, m)).astype(float_dtype)
        b = rng.standard_normal(m).astype(float_dtype)
        Wp = _kernels().to_working_layout(W)
        for idx in (None, rng.integers(0, n + 11, n)):
            rows = X[:n] if idx is None else X[idx]
            xs = K.gather_rows(X, np.arange(n) if idx is None else idx, scale=scale,
                               dtype=float_dtype)
            want = K.matmul_bias(xs, W, b)
            ref, mag = ref_matmul_bias(f64(rows) * f64(xs.dtype.type(scale)), W, b)
            outs = []
            for nt in (1, 2):
                out = np.full((n if idx is None else len(idx), m), np.nan, float_dtype)
                src = X[:n] if idx is None else X
                _kernels().fused_forward(src, None if idx is None else idx.astype(np.int64), Wp, b,
                                       scale, out, nt)
                outs.append(out)
            msg = f"n={n} k={k} m={m} idx={idx is not None} scale={scale!r}"
            assert_close(outs[0], ref, scale=mag, dtype=float_dtype, err_msg=msg)
            assert_bits_equal(outs[0], want, msg)
            assert_bits_equal(outs[1], outs[0], msg)


@pytest.mark.parametrize("m", (3, 10, 16))
def test_fused_step_losses_and_hits_match_per_batch_kernels(rng, float_dtype, m):
    """With a learning rate of zero a fused epoch keeps its weights, so each minibatch's loss
    and hit count can be checked against the per-batch kernels on the same outputs: the loss
    sum (each row's loss added in order, in double) to the bit, and the hits against NumPy's
    argmax, where a tie between two outputs (two equal columns of the weights) counts for the
    first.  Batches of 48 rows: blocks of 16 rows and a partial one (on AVX-512 a row is a
    lane); 1 and 2 threads; no smoothing and 0.1."""
    n, k, B = 203, 37, 48
    X = rng.integers(0, 256, (n, k), dtype=np.uint8)
    W = rng.standard_normal((k, m)).astype(float_dtype) / 8
    b = rng.standard_normal(m).astype(float_dtype)
    b[1] = b.max() + 0.5  # output 1 is often the largest
    W[:, m - 1], b[m - 1] = W[:, 1], b[1]  # and output m - 1 always ties with it
    y = rng.integers(0, m, n)
    y[::3] = m - 1  # rows labelled with the later of the two
    perm = rng.permutation(n).astype(np.int64)
    nb = -(-n // B)
    Z = K.matmul_bias(K.gather_rows(X, perm, scale=1 / 255, dtype=float_dtype), W, b)
    yp = y[perm]
    want_hits = [int((Z[s:s + B].argmax(axis=1) == yp[s:s + B]).sum()) for s in range(0, n, B)]
    assert sum(want_hits) > 0
    for smooth in (0.0, 0.1):
        rowloss, _ = K.softmax_cross_entropy(Z, yp, label_smoothing=smooth)
        want_loss = []
        for s in range(0, n, B):
            total = 0.0
            for v in rowloss[s:s + B]:
                total += float(v)
            want_loss.append(total)
        for nt in (1, 2):
            Wp, bb = _kernels().to_working_layout(W), b.copy()
            loss, hits = np.zeros(nb), np.zeros(nb, np.int64)
            _kernels().fused_sgd(X, y.astype(np.int64), None, perm, B, 0, smooth, 0.0, Wp, bb,
                                 None, None, np.zeros(nb, float_dtype), 0.0, 0.0, 1 / 255, loss,
                                 hits, 0, nb, nt, _kernels().fused_scratch(B, k, m, float_dtype, 1))
            msg = f"m={m} smooth={smooth} nt={nt}"
            assert hits.tolist() == want_hits, msg
            assert loss.tolist() == want_loss, msg
            assert_bits_equal(bb, b, msg)


def _numpy_fused_sgd(X, scale, labels, T, perm, B, kind, smooth, delta, W, b, V, vb, lrs,
                     momentum, wd):
    """Minibatch SGD as the fused step runs it, in float64: rows X[perm] * scale in minibatches
    of B; kind 0 softmax cross-entropy (labels, smoothing), 1 squared and 2 Huber (targets T,
    averaged over the m outputs); momentum and weight decay as fs.optim.SGD has them.  The
    final weights and bias, each batch's loss sum and each batch's hits (softmax)."""
    W, b, V, vb = (a.astype(np.float64) for a in (W, b, V, vb))
    m = W.shape[1]
    losses, hits = [], []
    for t, s in enumerate(range(0, len(perm), B)):
        idx = perm[s:s + B]
        xb = X[idx].astype(np.float64) * scale
        Z = xb @ W + b
        if kind == 0:
            ref_loss, G = ref_xent(Z, labels[idx], smooth)
            hits.append(int((Z.argmax(axis=1) == labels[idx]).sum()))
        else:
            ref_loss, G = ref_regression(Z, T[idx], delta if kind == 2 else None)
            hits.append(0)
        losses.append(float(ref_loss.sum()))
        for p, v, grad in ((W, V, xb.T @ G), (b, vb, G.sum(axis=0))):
            v *= momentum
            v += grad / len(idx) + wd * p
            p -= lrs[t] * v
    return W, b, losses, hits


def _fused_start(rng, n, k, m, B, dtype):
    """A fused run's starting point: weights, bias and momentum buffers (as if trained
    before), a permutation of n rows, and its number of minibatches of B."""
    W0 = (rng.standard_normal((k, m)) / 8).astype(dtype)
    b0 = rng.standard_normal(m).astype(dtype)
    V0 = (rng.standard_normal((k, m)) / 8).astype(dtype)
    vb0 = rng.standard_normal(m).astype(dtype)
    return W0, b0, V0, vb0, rng.permutation(n).astype(np.int64), -(-n // B)


def _run_fused(X, labels, T, perm, B, kind, smooth, delta, start, lrs, momentum, wd, scale,
               nt):
    """fused_sgd over every minibatch from `start` (W0, b0, V0, vb0 as _fused_start gives):
    (first bad batch or -1, W, b, V, vb, batch losses, batch hits), W and V as k x m."""
    W0, b0, V0, vb0 = start
    (k, m), nb = W0.shape, len(lrs)
    Wp, b = _kernels().to_working_layout(W0), b0.copy()
    Vp, vb = _kernels().to_working_layout(V0), vb0.copy()
    loss, hits = np.zeros(nb), np.zeros(nb, np.int64)
    bad = _kernels().fused_sgd(X, labels, T, perm, B, kind, smooth, delta, Wp, b, Vp, vb, lrs,
                               momentum, wd, scale, loss, hits, 0, nb, nt,
                               _kernels().fused_scratch(B, k, m, W0.dtype, X.dtype.itemsize))
    W, V = (_kernels().from_working_layout(P, k, m, np.empty((k, m), W0.dtype))
            for P in (Wp, Vp))
    return bad, W, b, V, vb, loss, hits


@pytest.mark.parametrize("kind, m, u8, k", [
    (0, 10, True, 37), (0, 10, False, 130), (0, 17, False, 37), (0, 33, True, 130),
    (1, 10, True, 37), (1, 17, False, 130), (2, 1, False, 37), (2, 3, True, 130),
    (2, 17, True, 37)])
def test_fused_step_against_numpy(rng, float_dtype, kind, m, u8, k):
    """Minibatches of the fused step against float64 NumPy, for each loss with momentum and
    weight decay on a learning rate that changes by minibatch: softmax with label smoothing,
    squared and Huber losses (past its threshold too); uint8 rows scaled on the way in and
    float rows; few outputs and panels (17, 33); rows with a partial last vector (37); a
    short last minibatch.  One and two threads give the same bits."""
    n, B = 203, 48
    if u8:
        X, scale = rng.integers(0, 256, (n, k), dtype=np.uint8), 1 / 255
    else:
        X, scale = rng.standard_normal((n, k)).astype(float_dtype), 1.0
    labels = rng.integers(0, m, n) if kind == 0 else None
    T = None if kind == 0 else (2 * rng.standard_normal((n, m))).astype(float_dtype)
    *start, perm, nb = _fused_start(rng, n, k, m, B, float_dtype)
    lrs = np.linspace(0.2, 0.05, nb).astype(float_dtype)
    smooth, delta = (0.1, 0.0) if kind == 0 else (0.0, 1.0)
    # uint8 rows are scaled in the weights' precision
    W_np, b_np, loss_np, hits_np = _numpy_fused_sgd(
        X, float(float_dtype.type(scale)), labels, T, perm, B, kind, smooth, delta, *start,
        lrs.astype(np.float64), 0.9, 1e-3)
    outs = [_run_fused(X, labels, T, perm, B, kind, smooth, delta, start, lrs, 0.9, 1e-3, scale,
                       nt) for nt in (1, 2)]
    bad, W, b, _, _, loss, hits = outs[0]
    assert bad == -1
    tol = rtol_for(float_dtype)
    np.testing.assert_allclose(W, W_np, rtol=tol, atol=tol * np.abs(W_np).max())
    np.testing.assert_allclose(b, b_np, rtol=tol, atol=tol * np.abs(b_np).max())
    np.testing.assert_allclose(loss, loss_np, rtol=tol)
    # an argmax may go the other way where two outputs are within rounding of each other
    assert np.abs(hits - hits_np).sum() <= 1, (hits, hits_np)
    if kind == 2:  # residuals on both sides of the threshold
        W0, b0 = start[:2]
        assert 0.1 < np.mean(np.abs(X[perm[:B]] * scale @ W0 + b0 - T[perm[:B]]) > delta) < 0.9
    for got, want in zip(outs[1], outs[0]):
        assert_bits_equal(got, want, "2 threads")


@pytest.mark.parametrize("m, B, k, kind, scale", [
    (1, 100, 37, 1, 1.0), (2, 240, 37, 1, 1.0), (1, 64, 1100, 1, 1.0), (1, 100, 40, 2, 0.5),
    (1, 10, 2, 1, 1.0), (1, 100, 7, 2, 0.5), (1, 30, 3, 1, 0.25)])
def test_fused_share_chain_against_numpy_and_thread_counts(rng, float_dtype, m, B, k, kind,
                                                          scale):
    """Shares of the weight gradient (fused_plan "shares"): the threads add up the chunks'
    shares as a chain, each passing its running sums on, and each updates its own copy of the
    weights, with no barrier.  Against float64 NumPy (momentum, weight decay, chunks of 16 rows
    (two outputs, or batches of 64), of 25 (a quarter of one output's batch of 100) and partial
    ones, a short last batch, rows longer than 8 vectors, rows that fill their last vector,
    scaled, with the Huber loss, and rows shorter than a vector --
    the book's 2 features in batches of 10 -- as they are and scaled, with the squared and the
    Huber loss); the same bits on 1, 2 and 3 threads (with 3, the splits of short batches leave
    a thread without a chunk); a NaN target halfway stops every team at its minibatch, after
    its update."""
    n = 1030
    assert _kernels().fused_plan(B, k, m, float_dtype, np.dtype(float_dtype).itemsize) == \
        "shares"
    X = rng.standard_normal((n, k)).astype(float_dtype)
    T = (X @ rng.standard_normal((k, m)) + 0.3).astype(float_dtype)
    *start, perm, nb = _fused_start(rng, n, k, m, B, float_dtype)
    lrs = np.linspace(0.05, 0.01, nb).astype(float_dtype)
    W_np, b_np, loss_np, _ = _numpy_fused_sgd(X, scale, None, T, perm, B, kind, 0.0, 1.0,
                                              *start, lrs, 0.9, 1e-3)

    def run(T, nt):
        return _run_fused(X, None, T, perm, B, kind, 0.0, 1.0, start, lrs, 0.9, 1e-3, scale,
                          nt)[:6]

    tol = 1e-4 if float_dtype == np.float32 else 1e-10
    first = None
    for nt in (1, 2, 3):
        bad, W, b, V, vb, loss = run(T, nt)
        assert bad == -1
        np.testing.assert_allclose(W, W_np, rtol=tol, atol=tol)
        np.testing.assert_allclose(b, b_np, rtol=tol, atol=tol)
        np.testing.assert_allclose(loss, loss_np, rtol=10 * tol)
        if first is None:
            first = (W, b, V, vb, loss)
        for got, want in zip((W, b, V, vb, loss), first):
            assert_bits_equal(got, want, f"{nt} threads")

    stop = nb // 2
    T_bad = T.copy()
    T_bad[perm[stop * B + 3]] = np.nan
    for nt in (1, 2, 3):
        bad, W, b, V, vb, loss = run(T_bad, nt)
        assert bad == stop, f"{nt} threads"
        assert_bits_equal(loss[:stop], first[4][:stop], f"{nt} threads")
        assert np.isnan(loss[stop]) and not loss[stop + 1:].any()
        assert np.isnan(W).all() and np.isnan(b).all()  # the batch's update was applied


@pytest.mark.parametrize("k, kind, scale", [(37, 1, 1.0), (40, 2, 0.5), (100, 1, 1.0)])
def test_fused_one_output_rows_shuffled_and_in_order_give_the_same_bits(rng, float_dtype, k,
                                                                         kind, scale):
    """One output's chunks take two passes when their rows are shuffled (the outputs and
    losses, each row requesting one further on, then the gradient share) and one pass when
    they are in order; each row's sums are the same either way.  So an epoch of shuffled rows
    and the same rows copied into that order and read in order give the same bits, on 1 and 2
    threads: rows with a partial last vector and full ones, as they are and scaled, squared and
    Huber losses, chunks of an odd number of rows (25 of a batch of 100), a short last batch."""
    n, B, m = 1030, 100, 1
    assert _kernels().fused_plan(B, k, m, float_dtype, np.dtype(float_dtype).itemsize) == \
        "shares"
    X = rng.standard_normal((n, k)).astype(float_dtype)
    T = (X @ rng.standard_normal((k, m)) + 0.3).astype(float_dtype)
    *start, perm, nb = _fused_start(rng, n, k, m, B, float_dtype)
    lrs = np.linspace(0.05, 0.01, nb).astype(float_dtype)
    for nt in (1, 2):
        shuffled = _run_fused(X, None, T, perm, B, kind, 0.0, 1.0, start, lrs, 0.9, 1e-3, scale,
                              nt)
        in_order = _run_fused(X[perm], None, T[perm], np.arange(n, dtype=np.int64), B, kind,
                              0.0, 1.0, start, lrs, 0.9, 1e-3, scale, nt)
        assert shuffled[0] == -1
        for got, want in zip(in_order[1:6], shuffled[1:6]):
            assert_bits_equal(got, want, f"in order, {nt} threads")


def test_fused_split_gives_every_row_and_chunk_to_exactly_one_thread(rng):
    """The fused step's split (fused_split): consecutive threads' rows tile the minibatch, cut
    at multiples of the unit, and their chunks tile the chunks, each thread's chunks being
    exactly its rows.  Over every minibatch length up to 300 (a partial last chunk, short
    batches), 1 to 4 threads, speeds as unequal as the rebalancing allows (1 to 8) and equal.
    A thread left with nothing at the end of a batch whose last chunk is partial once took that
    chunk as well, and the chain added it twice."""
    split = _kernels().fused_split
    speeds = [np.ones(nt) for nt in range(1, 5)]
    speeds += [rng.uniform(1, 8, nt) for nt in range(2, 5) for _ in range(30)]
    speeds += [np.array(s, float) for s in ([1, 8], [8, 1], [1, 1, 8], [8, 8, 1], [1, 8, 8, 1])]
    for sp in speeds:
        cum = np.concatenate([[0], np.cumsum(sp) / sp.sum()])
        cum[-1] = 1
        for unit in (4, 16):
            for n in range(0, 301):
                got = split(cum, n, unit)
                assert len(got) == len(sp)
                assert got[0][0] == 0 and got[-1][1] == n, (sp, n, got)
                assert got[0][2] == 0 and got[-1][3] == -(-n // unit), (sp, n, got)
                for (lo, hi, c0, c1), nxt in zip(got, got[1:] + [None]):
                    assert lo <= hi and c0 <= c1, (sp, n, got)
                    assert lo % unit == 0 or lo == n, (sp, n, got)
                    assert (lo, hi) == (min(c0 * unit, n), min(c1 * unit, n)), (sp, n, got)
                    if nxt is not None:
                        assert (hi, c1) == (nxt[0], nxt[2]), (sp, n, got)
    with pytest.raises(ValueError, match="at least 2 cumulative shares"):
        split([1.0], 10, 4)


def test_fused_share_chain_thread_left_without_rows(rng):
    """A thread whose part of a minibatch is empty at its end adds no chunk.  Minibatches of 14
    rows (one partial chunk), each its own call, so each is split evenly (no timings yet): 3
    threads get rows [0, 0), [0, 14) and [14, 14).  The third once added the partial chunk a
    second time: here in every minibatch, elsewhere whenever the measured speeds split a batch
    that way (in 92 of 3000 runs of a 3-thread chain whose last batch had 30 rows).  Against
    NumPy and one thread, to the bit."""
    n, B, k, m = 70, 14, 37, 1
    X = rng.standard_normal((n, k))
    T = X @ rng.standard_normal((k, m)) + 0.3
    W0, perm = rng.standard_normal((k, m)) / 8, rng.permutation(n).astype(np.int64)
    nb = n // B
    lrs = np.full(nb, 0.05)
    assert _kernels().fused_plan(B, k, m, np.float64, 8) == "shares"
    assert _kernels().fused_split([0, 1 / 3, 2 / 3, 1], B, 16) == \
        [(0, 0, 0, 0), (0, 14, 0, 1), (14, 14, 1, 1)]
    scratch = _kernels().fused_scratch(B, k, m, np.float64, 8)
    zeros = np.zeros((k, m)), np.zeros(m)
    W_np, b_np, loss_np, _ = _numpy_fused_sgd(X, 1.0, None, T, perm, B, 1, 0.0, 0.0, W0,
                                              zeros[1], *zeros, lrs, 0.0, 0.0)

    def run(nt):
        Wp, b = _kernels().to_working_layout(W0), np.zeros(m)
        loss, hits = np.zeros(nb), np.zeros(nb, np.int64)
        for t in range(nb):
            assert _kernels().fused_sgd(X, None, T, perm, B, 1, 0.0, 0.0, Wp, b, None, None,
                                        lrs, 0.0, 0.0, 1.0, loss, hits, t, t + 1, nt,
                                        scratch) == -1
        return Wp, b, loss

    want = run(1)
    np.testing.assert_allclose(want[0].T, W_np, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(want[2], loss_np, rtol=1e-10)
    for nt in (2, 3):
        for got, ref in zip(run(nt), want):
            assert_bits_equal(got, ref, f"{nt} threads")


def test_fused_step_same_bits_on_any_team_over_random_shapes(rng):
    """The fused step on 2 and 3 threads against one thread, to the bit, over 150 random
    trainings: softmax (float or uint8 rows), squared and Huber losses, 1 to 33 outputs (past
    16 the weights are in panels), batch sizes with partial chunks, short last batches,
    momentum, weight decay and label smoothing or not, and epochs cut into calls at random
    (each call starts from an even split; later minibatches follow the measured speeds, which
    differ from run to run).  Each team runs each training 5 times, one thread between runs.
    With the chain's old chunk rounding, about 2 runs in 100 differed."""
    for _ in range(150):
        dt = np.dtype(rng.choice(["float32", "float64"]))
        loss_kind = int(rng.integers(0, 3))  # softmax cross-entropy, squared, Huber
        m = int(rng.choice([1, 2, 3, 10, 17] if loss_kind else [2, 3, 10, 16, 17, 33]))
        k = int(rng.choice([5, 16, 37, 100, 130]))
        B = int(rng.choice([10, 14, 30, 48, 64, 100, 256]))
        n = int(rng.integers(B, 6 * B))
        u8 = loss_kind == 0 and rng.random() < 0.5
        X = (rng.integers(0, 256, (n, k), dtype=np.uint8) if u8
             else rng.standard_normal((n, k)).astype(dt))
        labels = rng.integers(0, m, n).astype(np.int64) if loss_kind == 0 else None
        T = None if loss_kind == 0 else rng.standard_normal((n, m)).astype(dt)
        W0 = (rng.standard_normal((k, m)) / 8).astype(dt)
        perm = rng.permutation(n).astype(np.int64)
        nb = -(-n // B)
        lrs = np.full(nb, 0.05, dt)
        mom = float(rng.choice([0.0, 0.9]))
        wd = float(rng.choice([0.0, 1e-3]))
        smooth = float(rng.choice([0.0, 0.1])) if loss_kind == 0 else 0.0
        cuts = sorted({0, nb, *rng.integers(0, nb, int(rng.integers(0, 4))).tolist()})
        scratch = _kernels().fused_scratch(B, k, m, dt, X.dtype.itemsize)
        what = dict(dtype=dt.name, loss=loss_kind, m=m, k=k, B=B, n=n, u8=u8, cuts=cuts,
                    momentum=mom, wd=wd, smooth=smooth)

        def run(nt):
            Wp, b = _kernels().to_working_layout(W0), np.zeros(m, dt)
            V = _kernels().to_working_layout(np.zeros((k, m), dt)) if mom else None
            vb = np.zeros(m, dt) if mom else None
            loss, hits = np.zeros(nb), np.zeros(nb, np.int64)
            for t0, t1 in zip(cuts, cuts[1:]):
                assert _kernels().fused_sgd(X, labels, T, perm, B, loss_kind, smooth, 1.0, Wp,
                                            b, V, vb, lrs, mom, wd, 1 / 255 if u8 else 1.0,
                                            loss, hits, t0, t1, nt, scratch) == -1, what
            return Wp, b, loss, hits

        want = run(1)
        for _ in range(5):
            for nt in (2, 3):
                for got, ref in zip(run(nt), want):
                    assert_bits_equal(got, ref, f"{nt} threads, {what}")
            run(1)


def test_fused_forward_counts_numpy_argmax_hits(rng, float_dtype):
    """The compiled hit count of the test accuracy: forward of each chunk of rows, then NumPy's
    argmax (the first largest; a NaN counts as largest) against the labels.  Against NumPy on
    uint8 and float rows, ties and NaN outputs, odd sizes, both weight layouts, a label past
    the classes.  1, 2 and 3 threads (each a run of whole chunks: 1000 rows are three runs of
    320, 320 and 360) agree, keeping the outputs or only counting."""
    for n, k, m, source in ((1, 1, 1, "float"), (5, 7, 3, "uint8"), (67, 17, 10, "float"),
                            (130, 784, 10, "uint8"), (129, 37, 5, "float"), (9, 33, 17, "uint8"),
                            (64, 16, 16, "float"), (1000, 784, 10, "uint8"),
                            (300, 19, 10, "float")):
        if source == "uint8":
            X, scale = rng.integers(0, 256, (n, k), dtype=np.uint8), 1 / 255
        else:
            X, scale = rng.standard_normal((n, k)).astype(float_dtype), 1.0
        W = rng.standard_normal((k, m)).astype(float_dtype)
        b = rng.standard_normal(m).astype(float_dtype)
        if n > 3:
            X[1] = 0 if source == "uint8" else X[1] * 0  # all outputs equal the bias: a tie
            b[m // 2] = b.max()                          # ... between two classes, when m > 1
        if source == "float" and n > 3:
            X[2, 0] = np.nan                             # every output NaN: class 0
        Wp = _kernels().to_working_layout(W)
        Z = np.empty((n, m), float_dtype)
        _kernels().fused_forward(X, None, Wp, b, scale, Z, 1)
        for nt in (2, 3):
            Zt = np.empty_like(Z)
            _kernels().fused_forward(X, None, Wp, b, scale, Zt, nt)
            assert_bits_equal(Zt, Z, f"{nt} threads, n={n}")
        for labels in (Z.argmax(axis=1), rng.integers(0, m, n), np.full(n, m)):
            labels = labels.astype(np.int64)
            want = int((Z.argmax(axis=1) == labels).sum())
            got = [_kernels().fused_forward(X, None, Wp, b, scale, out, nt, labels)
                   for nt in (1, 2, 3) for out in (np.empty_like(Z), None)]
            assert got == [want] * 6, (n, k, m, source, got, want)
    # and a NaN in the middle of a row is the prediction, as for NumPy
    Z = np.array([[0.0, 5.0, np.nan, 7.0]], float_dtype)
    X = np.eye(4, dtype=float_dtype)[:1]
    Wp = _kernels().to_working_layout(np.ones((4, 4), float_dtype))
    b = Z[0] - 1
    hits = [_kernels().fused_forward(X, None, Wp, b, 1.0, np.empty_like(Z), 1,
                                     np.array([c], np.int64)) for c in range(4)]
    assert hits == [0, 0, 1, 0] and np.argmax(Z[0]) == 2
    # infinities with and without a NaN, whose sums are NaN (inf - inf), inf (overflow) or
    # finite, and ties, each row as the bias of a layer whose products are 0
    inf, nan, big = np.inf, np.nan, float(np.finfo(float_dtype).max) / 2
    for row in ([-inf, 3, inf, inf], [1, inf, 2, -inf], [-inf, -inf, -inf, -inf],
                [inf, nan, 0, 0], [nan, inf, -inf, 1], [2, 2, 1, 2], [big, 1.5 * big, 1.5 * big,
                -big], [0, -inf, 1, inf], [-1, -1, -2, -1]):
        b = np.array(row, float_dtype)
        Wp = _kernels().to_working_layout(np.zeros((1, 4), float_dtype))
        got = [_kernels().fused_forward(np.zeros((1, 1), float_dtype), None, Wp, b, 1.0,
                                        np.empty((1, 4), float_dtype), 1, np.array([c], np.int64))
               for c in range(4)]
        assert got == [int(c == np.argmax(b)) for c in range(4)], (row, got)


# ---- property-based: random shapes and values ---------------------------------------------------

try:
    from hypothesis import given, settings, strategies as st
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    given = None

if given is not None:
    # Hypothesis picks the shape, dtype, magnitude and a seed; NumPy draws the values (drawing
    # thousands of floats one by one through hypothesis would take far longer than the kernels).

    @settings(max_examples=60, deadline=None)
    @given(dtype=st.sampled_from(FLOAT_DTYPES), n=st.integers(1, 70), k=st.integers(1, 70),
           m=st.integers(1, 40), mag=st.sampled_from([1e-3, 1.0, 100.0]), bias=st.booleans(),
           seed=st.integers(0, 2**32 - 1))
    def test_matmul_bias_and_backward_property(dtype, n, k, m, mag, bias, seed):
        r = np.random.default_rng(seed)
        X = (mag * r.standard_normal((n, k))).astype(dtype)
        W = r.standard_normal((k, m)).astype(dtype)
        b = r.standard_normal(m).astype(dtype) if bias else None
        G = r.standard_normal((n, m)).astype(dtype)
        ref, scale = ref_matmul_bias(X, W, b)
        assert_close(K.matmul_bias(X, W, b), ref, scale=scale)
        dW, db = K.matmul_bias_backward(X, G)
        assert_close(dW, f64(X).T @ f64(G), scale=np.abs(f64(X)).T @ np.abs(f64(G)))
        assert_close(db, f64(G).sum(axis=0), scale=np.abs(f64(G)).sum(axis=0))

    @settings(max_examples=80, deadline=None)
    @given(dtype=st.sampled_from(FLOAT_DTYPES), n=st.integers(1, 70), m=st.integers(1, 40),
           mag=st.sampled_from([1e-3, 1.0, 30.0, 1e4]), eps=st.sampled_from([0.0, 0.1]),
           seed=st.integers(0, 2**32 - 1))
    def test_softmax_cross_entropy_property(dtype, n, m, mag, eps, seed):
        r = np.random.default_rng(seed)
        Z = (mag * r.standard_normal((n, m))).astype(dtype)
        y = r.integers(0, m, n)
        loss, grad = K.softmax_cross_entropy(Z, y, label_smoothing=eps)
        ref_loss, ref_grad = ref_xent(Z, y, eps)
        row_scale = np.abs(f64(Z)).max(axis=1) + np.log(m) + 1
        assert_close(loss, ref_loss, scale=row_scale)
        assert_close(grad, ref_grad, scale=1.0)
        assert (loss >= -rtol_for(dtype) * row_scale).all()  # a cross-entropy is never negative
        p = K.softmax(Z)
        assert_close(p, np.exp(ref_log_softmax(Z)), scale=1.0)
        assert_close(p.sum(axis=1), np.ones(n), scale=m)


# ---- thread determinism -------------------------------------------------------------------------

THREAD_COUNTS = (2, 3, 4)


def _assert_threads_identical(run, work, what):
    """run(num_threads) -> tuple of arrays; 1 thread and several must agree to the bit."""
    # Above SERIAL_WORK the wrapper hands the requested team size to OpenMP; below it one
    # thread would run whatever we ask, and the test would prove nothing.
    assert work >= 4 * _config.SERIAL_WORK, f"{what}: shape too small to run threads"
    one = run(1)
    for nt in THREAD_COUNTS:
        for a, b in zip(one, run(nt)):
            assert_bits_equal(a, b, f"{what}: num_threads=1 vs {nt}")


@pytest.mark.parametrize("m", (1, 3, 10, 16, 17, 33))
def test_matmul_bias_threads_identical(rng, float_dtype, m):
    n, k = 1000, 300
    X = rng.standard_normal((n, k)).astype(float_dtype)
    W = rng.standard_normal((k, m)).astype(float_dtype)
    b = rng.standard_normal(m).astype(float_dtype)
    _assert_threads_identical(lambda nt: (K.matmul_bias(X, W, b, num_threads=nt),),
                              n * k * m, f"matmul_bias m={m}")
    # no bias, and inputs in Fortran order (copied by the wrapper)
    _assert_threads_identical(lambda nt: (K.matmul_bias(np.asfortranarray(X),
                                                        np.asfortranarray(W),
                                                        num_threads=nt),),
                              n * k * m, f"matmul_bias m={m}, no bias")


@pytest.mark.parametrize("m", (1, 3, 10, 16, 17, 33))
def test_matmul_bias_backward_threads_identical(rng, float_dtype, m):
    n, k = 1000, 300
    X = rng.standard_normal((n, k)).astype(float_dtype)
    G = rng.standard_normal((n, m)).astype(float_dtype)
    _assert_threads_identical(lambda nt: K.matmul_bias_backward(X, G, num_threads=nt),
                              n * k * m, f"matmul_bias_backward m={m}")


@pytest.mark.parametrize("m", (1, 3, 10, 17, 33))
def test_softmax_kernels_threads_identical(rng, float_dtype, m):
    n = 40_000 // m + 7  # chunks of rows and a partial one
    Z = (5 * rng.standard_normal((n, m))).astype(float_dtype)
    y = rng.integers(0, m, n)
    for smooth in (0.0, 0.1, 1.0):
        _assert_threads_identical(
            lambda nt: K.softmax_cross_entropy(Z, y, label_smoothing=smooth, num_threads=nt),
            n * m * 8, f"softmax_cross_entropy m={m} smoothing={smooth}")
    _assert_threads_identical(lambda nt: (K.softmax(Z, num_threads=nt),), n * m * 8, "softmax")
    _assert_threads_identical(lambda nt: (K.log_softmax(Z, num_threads=nt),), n * m * 8,
                              "log_softmax")


@pytest.mark.parametrize("momentum, velocity", ((0.9, True), (0.0, True), (0.0, False)))
def test_sgd_update_threads_identical(rng, float_dtype, momentum, velocity):
    size = 300_001  # 37 chunks of 8192 and a tail
    p0 = rng.standard_normal(size).astype(float_dtype)
    g = rng.standard_normal(size).astype(float_dtype)

    def run(nt):
        p, v = p0.copy(), np.zeros_like(p0) if velocity else None
        for _ in range(3):
            K.sgd_update(p, g, 0.1, 7, momentum=momentum, weight_decay=1e-3, velocity=v,
                         num_threads=nt)
        return (p,) if v is None else (p, v)

    _assert_threads_identical(run, size * 4, f"sgd_update momentum={momentum}")


@pytest.mark.parametrize("m", (1, 3, 17))
@pytest.mark.parametrize("delta", (None, 0.7))
def test_regression_loss_threads_identical(rng, float_dtype, delta, m):
    n = 90_001 // m  # chunks of 32 rows and a tail
    P = rng.standard_normal((n, m)).astype(float_dtype)
    T = rng.standard_normal((n, m)).astype(float_dtype)
    _assert_threads_identical(lambda nt: K.regression_loss(P, T, delta=delta, num_threads=nt),
                              P.size * 4, f"regression_loss m={m}")


@pytest.mark.parametrize("k", (1, 17, 784))
@pytest.mark.parametrize("src_dtype, out_dtype", ((np.uint8, np.float32), (np.uint8, np.float64),
                                                  (np.float32, np.float32),
                                                  (np.float64, np.float64)))
def test_gather_rows_threads_identical(rng, src_dtype, out_dtype, k):
    rows = 300_000 // k + 5
    src = rng.integers(0, 256, (rows // 3 + 1, k)).astype(src_dtype)
    idx = rng.integers(0, len(src), rows)
    _assert_threads_identical(lambda nt: (K.gather_rows(src, idx, scale=1 / 255, dtype=out_dtype,
                                                        num_threads=nt),),
                              rows * k, f"gather_rows k={k}")


@pytest.mark.parametrize("n", (_kernels().PERM_BUCKETED, _kernels().PERM_BUCKETED * 2 + 12345))
def test_permutation_threads_identical(n):
    # From PERM_BUCKETED rows on, three parallel passes (several blocks and buckets).
    _assert_threads_identical(lambda nt: (K.permutation(n, 2024, num_threads=nt),), n,
                              "permutation")


def _misaligned(a):
    """A C-contiguous copy of `a` whose data starts one byte past an element boundary (as
    np.frombuffer at an odd offset gives)."""
    raw = bytearray(a.nbytes + 1)
    out = np.frombuffer(raw, a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert out.flags.c_contiguous and not out.flags.aligned
    return out


def test_misaligned_arrays_are_copied_or_refused(rng, float_dtype):
    """C code may read a float only at a multiple of its size: misaligned inputs are copied
    (the aligned copy's bits), misaligned arrays to write into are refused."""
    X = rng.standard_normal((37, 13)).astype(float_dtype)
    W = rng.standard_normal((13, 20)).astype(float_dtype)
    b = rng.standard_normal(20).astype(float_dtype)
    Z = rng.standard_normal((37, 20)).astype(float_dtype)
    y = np.arange(37) % 20
    mis = _misaligned
    calls = [
        (lambda a: K.matmul_bias(a[0], a[1], a[2]), (X, W, b)),
        (lambda a: K.matmul_bias_backward(a[0], a[1]), (X, Z)),
        (lambda a: K.softmax_cross_entropy(a[0], y, label_smoothing=0.1), (Z,)),
        (lambda a: K.softmax(a[0]), (Z,)),
        (lambda a: K.regression_loss(a[0], a[1], delta=0.5), (Z, Z[::-1].copy())),
        (lambda a: K.gather_rows(a[0], y[::-1].copy()), (X,)),
    ]
    for i, (call, args) in enumerate(calls):
        want = call(args)
        got = call([mis(a) for a in args])
        for g, w in zip(got if isinstance(got, tuple) else (got,),
                        want if isinstance(want, tuple) else (want,)):
            assert_bits_equal(g, w, f"call {i}")
    with pytest.raises(ValueError, match="param must be C-contiguous and aligned"):
        K.sgd_update(mis(b), b, 0.1, 3)
    with pytest.raises(ValueError, match="out must be C-contiguous and aligned"):
        K.matmul_bias(X, W, b, out=mis(np.zeros((37, 20), float_dtype)))


def test_fast_paths_on_two_threads_give_the_validated_paths_bits(rng, float_dtype):
    """The compiled recognizers (*_if_plain) that the wrappers try first when num_threads is
    not given run the kernel themselves on the default team: on two threads, at sizes well
    above SERIAL_WORK, their results must be the validated path's on one thread, bit for bit
    (into `out` too, and for (n,) targets of (n, 1) predictions)."""
    k_ = _kernels()
    work = 4 * _config.SERIAL_WORK
    X = rng.standard_normal((1001, 131)).astype(float_dtype)
    W = rng.standard_normal((131, 17)).astype(float_dtype)
    b = rng.standard_normal(17).astype(float_dtype)
    assert X.shape[0] * X.shape[1] * W.shape[1] >= work
    out = np.full((1001, 17), np.nan, float_dtype)
    assert k_.matmul_bias_if_plain(X, W, b, out, 2, _config.SERIAL_WORK) is out
    assert_bits_equal(out, K.matmul_bias(X, W, b, num_threads=1), "matmul_bias")

    G = rng.standard_normal((1001, 5)).astype(float_dtype)
    got = k_.matmul_bias_backward_if_plain(X, G, 2, _config.SERIAL_WORK)
    want = K.matmul_bias_backward(X, G, num_threads=1)
    for a, w in zip(got, want):
        assert_bits_equal(a, w, "matmul_bias_backward")
    dW, db = np.full((131, 5), np.nan, float_dtype), np.full(5, np.nan, float_dtype)
    assert k_.matmul_bias_backward_into_if_plain(X, G, dW, db, 2) is True
    assert_bits_equal(dW, want[0], "matmul_bias_backward into dW")
    assert_bits_equal(db, want[1], "matmul_bias_backward into db")
    dW[...] = np.nan
    assert k_.matmul_bias_backward_into_if_plain(X, G, dW, None, 2) is True
    assert_bits_equal(dW, want[0], "matmul_bias_backward into dW, no bias")

    P = rng.standard_normal((90_001, 1)).astype(float_dtype)
    T = rng.standard_normal(90_001).astype(float_dtype)
    for delta in (None, 0.3):
        got = k_.regression_loss_if_plain(P, T, delta is not None, delta or 0.0, 2,
                                          _config.SERIAL_WORK)
        for a, w in zip(got, K.regression_loss(P, T, delta=delta, num_threads=1)):
            assert_bits_equal(a, w, f"regression_loss delta={delta}")

    p = rng.standard_normal(100_003).astype(float_dtype)
    g = rng.standard_normal(100_003).astype(float_dtype)
    v = rng.standard_normal(100_003).astype(float_dtype)
    p1, v1 = p.copy(), v.copy()
    assert k_.sgd_update_if_plain(p, g, 0.1, 7, 0.9, 1e-3, v, 2, _config.SERIAL_WORK)
    K.sgd_update(p1, g, 0.1, 7, momentum=0.9, weight_decay=1e-3, velocity=v1, num_threads=1)
    assert_bits_equal(p, p1, "sgd_update")
    assert_bits_equal(v, v1, "sgd_update velocity")

    src = rng.integers(0, 256, (500, 785)).astype(float_dtype)
    idx = rng.integers(0, 500, 1001)
    for s in (src, src.astype(np.uint8)):
        odt = np.float32 if s.dtype == np.uint8 else float_dtype
        out = np.full((1001, 785), np.nan, odt)
        assert k_.gather_rows_if_plain(s, idx, out, 1 / 255, 2, _config.SERIAL_WORK) is out
        assert_bits_equal(out, K.gather_rows(s, idx, scale=1 / 255, num_threads=1),
                          f"gather_rows from {s.dtype}")


def test_backward_into_buffers_writes_nothing_unless_all_fit(float_dtype):
    """The compiled backward that writes a layer's gradient buffers runs only when every array
    fits (the caller then says what did not): each misfit gives False with nothing written."""
    k_ = _kernels()
    dt = np.dtype(float_dtype)
    other = np.float64 if dt == np.float32 else np.float32
    X, G = np.ones((7, 5), dt), np.ones((7, 3), dt)

    def z(*shape, dtype=dt):
        return np.zeros(shape, dtype)

    shared = z(5, 5)
    cases = {
        "dW transposed": (X, G, z(3, 5), z(3)),
        "dW dtype": (X, G, z(5, 3, dtype=other), z(3)),
        "dW read-only": (X, G, _readonly(z(5, 3)), z(3)),
        "dW strided": (X, G, z(5, 6)[:, ::2], z(3)),
        "dW 1-D": (X, G, z(15), z(3)),
        "db length": (X, G, z(5, 3), z(4)),
        "db dtype": (X, G, z(5, 3), z(3, dtype=other)),
        "db read-only": (X, G, z(5, 3), _readonly(z(3))),
        "G rows": (X, np.ones((6, 3), dt), z(5, 3), z(3)),
        "G dtype": (X, np.ones((7, 3), other), z(5, 3), z(3)),
        "X dtype": (X.astype(other), G, z(5, 3), z(3)),
        "X strided": (np.ones((7, 10), dt)[:, ::2], G, z(5, 3), z(3)),
        "dW is X": (shared, np.ones((5, 5), dt), shared, z(5)),
        "db inside G": (X, G, z(5, 3), G[0]),
        "db inside dW": (lambda w: (X, G, w, w[0]))(z(5, 3)),
    }
    for name, (x, g, w, b) in cases.items():
        before = w.copy(), b.copy()
        assert k_.matmul_bias_backward_into_if_plain(x, g, w, b, 1) is False, name
        assert_bits_equal(w, before[0], name)
        assert_bits_equal(b, before[1], name)


# ---- bad input ----------------------------------------------------------------------------------

def _x(*shape, dtype=np.float64):
    return np.ones(shape, dtype)


def _readonly(a):
    a.flags.writeable = False
    return a


_X = _x(4, 5)
BAD_CALLS = [
    # matmul_bias
    ("mm X 1-D", lambda: K.matmul_bias(_x(5), _x(5, 3)), ValueError, r"X must be 2-D"),
    ("mm X 3-D", lambda: K.matmul_bias(_x(2, 4, 5), _x(5, 3)), ValueError, r"X must be 2-D"),
    ("mm W 1-D", lambda: K.matmul_bias(_X, _x(5)), ValueError, r"W must be 2-D"),
    ("mm W rows", lambda: K.matmul_bias(_X, _x(4, 3)), ValueError, r"W must have 5 rows"),
    ("mm b length", lambda: K.matmul_bias(_X, _x(5, 3), _x(4)), ValueError, r"b must have 3"),
    ("mm b 2-D", lambda: K.matmul_bias(_X, _x(5, 3), _x(1, 3)), ValueError, r"b must be 1-D"),
    ("mm W dtype", lambda: K.matmul_bias(_X, _x(5, 3, dtype=np.float32)), TypeError,
     r"W must have the dtype of X"),
    ("mm b dtype", lambda: K.matmul_bias(_X, _x(5, 3), _x(3, dtype=np.float32)), TypeError,
     r"b must have the dtype of X"),
    ("mm X int", lambda: K.matmul_bias(_x(4, 5, dtype=np.int64), _x(5, 3)), TypeError,
     r"X must have dtype float32 or float64, got int64"),
    ("mm X float16", lambda: K.matmul_bias(_x(4, 5, dtype=np.float16), _x(5, 3)), TypeError,
     r"X must have dtype"),
    ("mm X object", lambda: K.matmul_bias(_X.astype(object), _x(5, 3)), TypeError,
     r"X must hold real numbers, got a object array"),
    ("mm W complex", lambda: K.matmul_bias(_X, _x(5, 3, dtype=np.complex128)), TypeError,
     r"W must hold real numbers, got a complex"),
    ("mm X str", lambda: K.matmul_bias(np.full((4, 5), "a"), _x(5, 3)), TypeError,
     r"X must hold real numbers, got a string"),
    ("mm X bool", lambda: K.matmul_bias(_x(4, 5, dtype=bool), _x(5, 3)), TypeError,
     r"X must hold real numbers, got a bool"),
    ("mm X ragged", lambda: K.matmul_bias([[1.0], [1.0, 2.0]], _x(1, 3)), TypeError,
     r"X must be array-like"),
    ("mm out shape", lambda: K.matmul_bias(_X, _x(5, 3), out=_x(4, 4)), ValueError,
     r"out must have shape \(4, 3\)"),
    ("mm out dtype", lambda: K.matmul_bias(_X, _x(5, 3), out=_x(4, 3, dtype=np.float32)),
     TypeError, r"out must have dtype float64"),
    ("mm out read-only", lambda: K.matmul_bias(_X, _x(5, 3), out=_readonly(_x(4, 3))),
     ValueError, r"out is read-only"),
    ("mm out strided", lambda: K.matmul_bias(_X, _x(5, 3), out=_x(4, 6)[:, ::2]), ValueError,
     r"out must be C-contiguous"),
    ("mm out list", lambda: K.matmul_bias(_X, _x(5, 3), out=[[0.0] * 3] * 4), TypeError,
     r"out must be a numpy array"),
    ("mm out overlaps X", lambda: (lambda X: K.matmul_bias(X, _x(5, 5), out=X))(_x(4, 5)),
     ValueError, r"out must not overlap X"),
    ("mm out overlaps W", lambda: (lambda W: K.matmul_bias(_x(5, 5), W, out=W))(_x(5, 5)),
     ValueError, r"out must not overlap W"),
    ("mm num_threads 0", lambda: K.matmul_bias(_X, _x(5, 3), num_threads=0), ValueError,
     r"num_threads must be a positive int"),
    ("mm num_threads float", lambda: K.matmul_bias(_X, _x(5, 3), num_threads=2.0), ValueError,
     r"num_threads must be a positive int"),
    # matmul_bias_backward
    ("bw G rows", lambda: K.matmul_bias_backward(_X, _x(3, 2)), ValueError,
     r"G must have 4 rows"),
    ("bw G 1-D", lambda: K.matmul_bias_backward(_X, _x(4)), ValueError, r"G must be 2-D"),
    ("bw X 1-D", lambda: K.matmul_bias_backward(_x(4), _x(4, 2)), ValueError, r"X must be 2-D"),
    ("bw G dtype", lambda: K.matmul_bias_backward(_X, _x(4, 2, dtype=np.float32)), TypeError,
     r"G must have the dtype of X"),
    ("bw X complex", lambda: K.matmul_bias_backward(_X.astype(complex), _x(4, 2)), TypeError,
     r"X must hold real numbers"),
    ("bw G object", lambda: K.matmul_bias_backward(_X, _x(4, 2).astype(object)), TypeError,
     r"G must hold real numbers"),
    # softmax_cross_entropy
    ("xent labels too big", lambda: K.softmax_cross_entropy(_x(3, 4), [0, 4, 1]), ValueError,
     r"labels must be < 4"),
    ("xent labels negative", lambda: K.softmax_cross_entropy(_x(3, 4), [0, -1, 1]), ValueError,
     r"labels must be >= 0"),
    ("xent labels fractional", lambda: K.softmax_cross_entropy(_x(3, 4), [0.0, 1.5, 1.0]),
     ValueError, r"labels must be whole-number"),
    ("xent labels nan", lambda: K.softmax_cross_entropy(_x(3, 4), [0.0, np.nan, 1.0]),
     ValueError, r"labels must be finite"),
    ("xent labels length", lambda: K.softmax_cross_entropy(_x(3, 4), [0, 1]), ValueError,
     r"labels must have 3 entries"),
    ("xent labels 2-D", lambda: K.softmax_cross_entropy(_x(3, 4), np.zeros((3, 2), int)),
     ValueError, r"labels must be 1-D"),
    ("xent labels str", lambda: K.softmax_cross_entropy(_x(3, 4), ["0", "1", "2"]), TypeError,
     r"labels must be integer class indices"),
    ("xent labels bool", lambda: K.softmax_cross_entropy(_x(3, 4), [True, False, True]),
     TypeError, r"labels must be integer class indices"),
    ("xent logits 1-D", lambda: K.softmax_cross_entropy(_x(4), [0]), ValueError,
     r"logits must be 2-D"),
    ("xent logits int", lambda: K.softmax_cross_entropy(_x(3, 4, dtype=np.int32), [0, 1, 2]),
     TypeError, r"logits must have dtype"),
    ("xent logits complex", lambda: K.softmax_cross_entropy(_x(3, 4, dtype=complex), [0, 1, 2]),
     TypeError, r"logits must hold real numbers"),
    ("xent no classes", lambda: K.softmax_cross_entropy(_x(3, 0), [0, 0, 0]), ValueError,
     r"logits must have at least one column"),
    ("xent smoothing > 1", lambda: K.softmax_cross_entropy(_x(3, 4), [0, 1, 2],
                                                           label_smoothing=1.5),
     ValueError, r"label_smoothing must be <= 1"),
    ("xent smoothing < 0", lambda: K.softmax_cross_entropy(_x(3, 4), [0, 1, 2],
                                                           label_smoothing=-0.1),
     ValueError, r"label_smoothing must be >= 0"),
    ("xent smoothing nan", lambda: K.softmax_cross_entropy(_x(3, 4), [0, 1, 2],
                                                           label_smoothing=float("nan")),
     ValueError, r"label_smoothing must be finite"),
    # softmax / log_softmax
    ("softmax 3-D", lambda: K.softmax(_x(2, 3, 4)), ValueError, r"X must be 1-D or 2-D"),
    ("softmax object", lambda: K.softmax(np.array([[1.0, "a"]], dtype=object)), TypeError,
     r"X must hold real numbers"),
    ("log_softmax int", lambda: K.log_softmax(np.arange(4)), TypeError, r"X must have dtype"),
    ("log_softmax 0-D", lambda: K.log_softmax(np.float64(1.0)), ValueError,
     r"X must be 1-D or 2-D"),
    # sgd_update
    ("sgd lr 0", lambda: K.sgd_update(_x(3), _x(3), 0.0, 1), ValueError, r"lr must be > 0"),
    ("sgd lr negative", lambda: K.sgd_update(_x(3), _x(3), -0.1, 1), ValueError,
     r"lr must be > 0"),
    ("sgd lr nan", lambda: K.sgd_update(_x(3), _x(3), float("nan"), 1), ValueError,
     r"lr must be finite"),
    ("sgd lr inf", lambda: K.sgd_update(_x(3), _x(3), float("inf"), 1), ValueError,
     r"lr must be finite"),
    ("sgd lr str", lambda: K.sgd_update(_x(3), _x(3), "0.1", 1), TypeError,
     r"lr must be a real number"),
    ("sgd batch 0", lambda: K.sgd_update(_x(3), _x(3), 0.1, 0), ValueError,
     r"batch_size must be > 0"),
    ("sgd batch negative", lambda: K.sgd_update(_x(3), _x(3), 0.1, -2), ValueError,
     r"batch_size must be > 0"),
    ("sgd batch float", lambda: K.sgd_update(_x(3), _x(3), 0.1, 2.5), TypeError,
     r"batch_size must be an int"),
    ("sgd batch bool", lambda: K.sgd_update(_x(3), _x(3), 0.1, True), TypeError,
     r"batch_size must be an int"),
    ("sgd momentum no velocity", lambda: K.sgd_update(_x(3), _x(3), 0.1, 1, momentum=0.9),
     ValueError, r"velocity"),
    ("sgd momentum 1", lambda: K.sgd_update(_x(3), _x(3), 0.1, 1, momentum=1.0,
                                            velocity=_x(3)), ValueError,
     r"momentum must be < 1"),
    ("sgd momentum negative", lambda: K.sgd_update(_x(3), _x(3), 0.1, 1, momentum=-0.5,
                                                   velocity=_x(3)), ValueError,
     r"momentum must be >= 0"),
    ("sgd weight_decay negative", lambda: K.sgd_update(_x(3), _x(3), 0.1, 1, weight_decay=-1),
     ValueError, r"weight_decay must be >= 0"),
    ("sgd grad same size other shape", lambda: K.sgd_update(_x(3, 4), _x(12), 0.1, 1),
     ValueError, r"grad must have the shape of param \(3, 4\)"),
    ("sgd velocity other shape", lambda: K.sgd_update(_x(3, 4), _x(3, 4), 0.1, 1, momentum=0.5,
                                                      velocity=_x(4, 3)),
     ValueError, r"velocity must have the shape of param"),
    ("sgd param byte-swapped", lambda: K.sgd_update(_x(3, dtype=">f8"), _x(3, dtype=">f8"),
                                                    0.1, 1), TypeError,
     r"param must be native float32 or float64: byte-swapped \(big-endian\) float64"),
    ("sgd grad shape", lambda: K.sgd_update(_x(3), _x(4), 0.1, 1), ValueError,
     r"grad must have the shape of param"),
    ("sgd grad dtype", lambda: K.sgd_update(_x(3), _x(3, dtype=np.float32), 0.1, 1), TypeError,
     r"grad must have the dtype of param"),
    ("sgd grad object", lambda: K.sgd_update(_x(3), _x(3).astype(object), 0.1, 1), TypeError,
     r"grad must hold real numbers"),
    ("sgd param list", lambda: K.sgd_update([1.0, 2.0], _x(2), 0.1, 1), TypeError,
     r"param must be a numpy array"),
    ("sgd param int", lambda: K.sgd_update(_x(3, dtype=np.int64), _x(3), 0.1, 1), TypeError,
     r"param must have dtype float32 or float64"),
    ("sgd param read-only", lambda: K.sgd_update(_readonly(_x(3)), _x(3), 0.1, 1), ValueError,
     r"param is read-only"),
    ("sgd param strided", lambda: K.sgd_update(_x(6)[::2], _x(3), 0.1, 1), ValueError,
     r"param must be C-contiguous"),
    ("sgd velocity shape", lambda: K.sgd_update(_x(3), _x(3), 0.1, 1, 0.9, velocity=_x(4)),
     ValueError, r"velocity must have the shape of param"),
    ("sgd velocity dtype", lambda: K.sgd_update(_x(3), _x(3), 0.1, 1, 0.9,
                                                velocity=_x(3, dtype=np.float32)),
     TypeError, r"velocity must have the dtype of param"),
    ("sgd velocity read-only", lambda: K.sgd_update(_x(3), _x(3), 0.1, 1, 0.9,
                                                    velocity=_readonly(_x(3))),
     ValueError, r"velocity is read-only"),
    ("sgd velocity is param", lambda: (lambda p: K.sgd_update(p, _x(3), 0.1, 1, 0.9,
                                                              velocity=p))(_x(3)),
     ValueError, r"velocity must not overlap"),
    ("sgd grad is param", lambda: (lambda p: K.sgd_update(p, p, 0.1, 1))(_x(3)), ValueError,
     r"grad must not overlap param"),
    # gather_rows
    # regression_loss
    ("reg sizes", lambda: K.regression_loss(_x(5, 1), _x(4)), ValueError,
     r"y must have one target per prediction"),
    ("reg scalar", lambda: K.regression_loss(np.float64(1.0), _x(1)), ValueError,
     r"y_hat must have a batch dimension"),
    ("reg y_hat int", lambda: K.regression_loss(_x(3, 1, dtype=np.int64), _x(3)), TypeError,
     r"y_hat must have dtype float32 or float64"),
    ("reg y_hat byte-swapped int", lambda: K.regression_loss(_x(2, 1, dtype=">i8"), _x(2)),
     TypeError, r"y_hat must have dtype float32 or float64, got >i8"),
    ("reg transposed target", lambda: K.regression_loss(_x(3, 2), _x(2, 3)), ValueError,
     r"y must have one target per prediction, row by row: y_hat has shape \(3, 2\), y has "
     r"shape \(2, 3\)"),
    ("reg y str", lambda: K.regression_loss(_x(2, 1), ["a", "b"]), TypeError,
     r"y must hold real numbers"),
    ("reg delta 0", lambda: K.regression_loss(_x(2, 1), _x(2), delta=0.0), ValueError,
     r"delta must be > 0"),
    ("reg delta nan", lambda: K.regression_loss(_x(2, 1), _x(2), delta=float("nan")),
     ValueError, r"delta must be"),
    ("gather index too big", lambda: K.gather_rows(_x(10, 3), [0, 10]), ValueError,
     r"indices must be in \[0, 10\)"),
    ("gather index negative", lambda: K.gather_rows(_x(10, 3), [0, -1]), ValueError,
     r"indices must be in \[0, 10\)"),
    ("gather index float", lambda: K.gather_rows(_x(10, 3), [0.0, 1.0]), TypeError,
     r"indices must be an integer array"),
    ("gather index bool", lambda: K.gather_rows(_x(10, 3), np.ones(10, bool)), TypeError,
     r"indices must be an integer array"),
    ("gather index 2-D", lambda: K.gather_rows(_x(10, 3), np.zeros((2, 2), int)), ValueError,
     r"indices must be 1-D"),
    ("gather index uint64 huge", lambda: K.gather_rows(_x(10, 3), np.array([2**63], np.uint64)),
     ValueError, r"indices"),
    ("gather src int32", lambda: K.gather_rows(_x(10, 3, dtype=np.int32), [0]), TypeError,
     r"src must have dtype uint8 or float32 or float64"),
    ("gather src object", lambda: K.gather_rows(_x(10, 3).astype(object), [0]), TypeError,
     r"src must hold real numbers"),
    ("gather src 0-D", lambda: K.gather_rows(np.float32(1.0), [0]), ValueError,
     r"src must have at least one dimension"),
    ("gather out shape", lambda: K.gather_rows(_x(10, 3), [0, 1], out=_x(2, 4)), ValueError,
     r"out must have shape \(2, 3\)"),
    ("gather out read-only", lambda: K.gather_rows(_x(10, 3), [0, 1], out=_readonly(_x(2, 3))),
     ValueError, r"out is read-only"),
    ("gather out int", lambda: K.gather_rows(_x(10, 3), [0, 1], out=_x(2, 3, dtype=np.int32)),
     TypeError, r"dtype must be float32 or float64"),
    ("gather out overlaps src", lambda: (lambda s: K.gather_rows(s, [0, 1], out=s[5:7]))(
        _x(10, 3)), ValueError, r"out must not overlap src"),
    ("gather out list", lambda: K.gather_rows(_x(10, 3), [0, 1], out=[[0.0] * 3] * 2),
     TypeError, r"out must be a numpy array"),
    ("gather dtype int", lambda: K.gather_rows(_x(10, 3), [0], dtype=np.int16), TypeError,
     r"dtype must be float32 or float64"),
    ("gather scale nan", lambda: K.gather_rows(_x(10, 3), [0], scale=float("nan")), ValueError,
     r"scale must be finite"),
    ("gather scale str", lambda: K.gather_rows(_x(10, 3), [0], scale="1/255"), TypeError,
     r"scale must be a real number"),
]


@pytest.mark.parametrize("call, exc, match", [pytest.param(*c[1:], id=c[0]) for c in BAD_CALLS])
def test_bad_input_raises_clearly(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_rejected_calls_leave_buffers_untouched(rng):
    """Validation happens before any compiled code writes: failed calls change nothing."""
    p = rng.standard_normal(8)
    v = rng.standard_normal(8)
    g = rng.standard_normal(8)
    p0, v0 = p.copy(), v.copy()
    bad_args = [
        dict(lr=float("nan"), batch_size=4, momentum=0.5),
        dict(lr=0.1, batch_size=0, momentum=0.5),
        dict(lr=0.1, batch_size=4, momentum=1.5),
        dict(lr=0.1, batch_size=4, momentum=0.5, weight_decay=-1.0),
    ]
    for kwargs in bad_args:
        with pytest.raises(ValueError):
            K.sgd_update(p, g, velocity=v, **kwargs)
    with pytest.raises(TypeError):
        K.sgd_update(p, g.astype(np.float32), 0.1, 4, 0.5, velocity=v)
    assert_bits_equal(p, p0)
    assert_bits_equal(v, v0)
    out = np.full((3, 2), 7.0)
    with pytest.raises(ValueError):
        K.matmul_bias(np.ones((3, 4)), np.ones((4, 2)), np.ones(3), out=out)
    with pytest.raises(ValueError):
        K.gather_rows(np.ones((5, 2)), [0, 1, 5], out=out)
    assert (out == 7.0).all()


# ---- permutation ---------------------------------------------------------------------------

def test_permutation_is_a_seeded_permutation():
    big = _kernels().PERM_BUCKETED
    for n in (0, 1, 2, 7, 1000, 65537, big - 1, big, 3 * big + 7):
        p = K.permutation(n, 12345)
        assert p.dtype == np.int64 and p.shape == (n,)
        assert np.array_equal(np.sort(p), np.arange(n))
        assert np.array_equal(p, K.permutation(n, 12345))
    assert not np.array_equal(K.permutation(1000, 1), K.permutation(1000, 2))
    assert not np.array_equal(K.permutation(1000, 1), np.arange(1000))


def test_permutation_is_uniform():
    # Where each of 5 items lands, over 20000 seeds: every (item, place) cell is hit about
    # 4000 times; a chi-square over the 25 cells stays far below its 0.1% quantile (52.6).
    n, trials = 5, 20000
    counts = np.zeros((n, n))
    for s in range(trials):
        counts[np.arange(n), K.permutation(n, s)] += 1
    expected = trials / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 52.6, (chi2, counts)


@pytest.mark.parametrize("nt", (1, 2))
def test_bucketed_permutation_is_uniform(nt):
    # The parallel passes at a size where every cell can be counted: 5 items in blocks of 2
    # (three pass-1 tasks) over 16 buckets, most of them empty; the same chi-square as above.
    n, trials = 5, 20000
    counts = np.zeros((n, n))
    for s in range(trials):
        p = _kernels().permutation(n, s, nt, 0, 2)
        counts[np.arange(n), p] += 1
    assert np.array_equal(np.sort(p), np.arange(n))
    expected = trials / n
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 52.6, (chi2, counts)


def test_bucketed_permutation_depends_on_the_seed_not_the_threads():
    R = _kernels()
    for n, block in ((2, 1), (37, 4), (1000, 64), (5000, 5000)):
        p = R.permutation(n, 99, 1, 0, block)
        assert np.array_equal(np.sort(p), np.arange(n))
        assert np.array_equal(p, R.permutation(n, 99, 2, 0, block))
        assert np.array_equal(p, R.permutation(n, 99, 3, 0, block))
        if n > 2:  # two items keep their order half the time
            assert not np.array_equal(p, R.permutation(n, 100, 1, 0, block))
    with pytest.raises(ValueError, match="block must be positive"):
        R.permutation(10, 1, 1, 0, 0)
    # one block however large (its count must not overflow)
    assert sorted(R.permutation(10, 1, 1, 0, 2**63 - 1)) == list(range(10))


@pytest.mark.parametrize("n, seed, exc, match", [
    (-1, 0, ValueError, "n must be"), (2.5, 0, TypeError, "n must be"),
    (3, -1, ValueError, "seed must be"), (3, 1 << 64, ValueError, "seed must be"),
    (3, "x", TypeError, "seed must be"),
])
def test_permutation_bad_arguments(n, seed, exc, match):
    with pytest.raises(exc, match=match):
        K.permutation(n, seed)
