"""Property-based tests: every kernel against a NumPy reference over shapes (empty and one-row
batches included), dtypes (float32 / float64, uint8 sources for the gather), memory layouts
(C, Fortran, strided, reversed, read-only) and values (including +-1e4 logits and subnormals),
with the per-dtype tolerances of conftest.py; and the fused training step against the
per-batch loop.

Hypothesis picks shapes, layouts, dtypes, magnitudes and a seed; NumPy draws the values from
the seed (drawing thousands of floats one by one through hypothesis would be far slower than
the kernels, and shrinking still works on the shape and magnitude).

Profiles, registered here (conftest.py belongs to another change):
  ci       (default)  40 examples per test, no deadline
  release             1000 examples per test, no deadline
select with ``HYPOTHESIS_PROFILE=release python -m pytest tests/test_properties.py``.  They
apply to the tests of this file only, so other files' explicit settings are untouched.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import fastshallow as fs  # noqa: E402
from fastshallow import kernels as K  # noqa: E402

from conftest import assert_close, rtol_for  # noqa: E402

settings.register_profile("ci", max_examples=40, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("release", max_examples=1000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DTYPES = st.sampled_from([np.float32, np.float64])
LAYOUTS = st.sampled_from(["C", "F", "strided", "reversed", "readonly"])
SEEDS = st.integers(0, 2**32 - 1)


def f64(a):
    return np.array(a, dtype=np.float64)


def lay_out(a: np.ndarray, how: str) -> np.ndarray:
    """The same values as `a` in another memory layout (a view where the layout needs one)."""
    if a.ndim == 0 or how == "C":
        return a
    if how == "F":
        return np.asfortranarray(a)
    if how == "strided":  # every other element of a wider buffer along the last axis
        buf = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), a.dtype)
        buf[..., 1::2] = a
        return buf[..., 1::2]
    if how == "reversed":  # negative strides
        return np.ascontiguousarray(a[::-1])[::-1]
    b = a.copy()
    b.flags.writeable = False
    return b


def values(rng, shape, dtype, mag):
    """Normal values times `mag`; mag "sub" gives subnormals, "mix" every special size."""
    if mag == "sub":
        tiny = np.finfo(dtype).smallest_subnormal
        return (rng.integers(-100, 100, shape) * tiny).astype(dtype)
    if mag == "mix":
        pool = np.array([0.0, -0.0, 1.0, -1.0, 1e-3, 1e4, -1e4, 0.5, 3.0], dtype)
        return pool[rng.integers(0, len(pool), shape)]
    return (mag * rng.standard_normal(shape)).astype(dtype)


# ---- matmul_bias and its backward ----------------------------------------------------------

@PROFILE
@given(dtype=DTYPES, n=st.integers(0, 70), k=st.integers(0, 70), m=st.integers(0, 40),
       mag=st.sampled_from([1e-3, 1.0, 100.0, "sub", "mix"]), bias=st.booleans(),
       lx=LAYOUTS, lw=LAYOUTS, out=st.booleans(), seed=SEEDS)
def test_matmul_bias(dtype, n, k, m, mag, bias, lx, lw, out, seed):
    r = np.random.default_rng(seed)
    X = values(r, (n, k), dtype, mag)
    W = r.standard_normal((k, m)).astype(dtype)
    b = r.standard_normal(m).astype(dtype) if bias else None
    buf = np.full((n, m), np.nan, dtype) if out else None
    got = K.matmul_bias(lay_out(X, lx), lay_out(W, lw), b, out=buf)
    ref = f64(X) @ f64(W) + (f64(b) if bias else 0)
    scale = np.abs(f64(X)) @ np.abs(f64(W)) + (np.abs(f64(b)) if bias else 0)
    if mag == "sub":  # subnormal products round in absolute terms
        scale = scale + 4 * (k + 1) * np.finfo(dtype).smallest_subnormal / rtol_for(dtype)
    assert_close(got, ref, scale=scale, dtype=dtype)
    if out:
        assert got is buf


@PROFILE
@given(dtype=DTYPES, n=st.integers(0, 70), k=st.integers(0, 70), m=st.integers(0, 40),
       mag=st.sampled_from([1e-3, 1.0, 100.0, "mix"]), lx=LAYOUTS, lg=LAYOUTS, seed=SEEDS)
def test_matmul_bias_backward(dtype, n, k, m, mag, lx, lg, seed):
    r = np.random.default_rng(seed)
    X = values(r, (n, k), dtype, mag)
    G = r.standard_normal((n, m)).astype(dtype)
    dW, db = K.matmul_bias_backward(lay_out(X, lx), lay_out(G, lg))
    assert_close(dW, f64(X).T @ f64(G), scale=np.abs(f64(X)).T @ np.abs(f64(G)), dtype=dtype)
    assert_close(db, f64(G).sum(axis=0), scale=np.abs(f64(G)).sum(axis=0), dtype=dtype)


# ---- softmax cross-entropy, softmax, log-softmax ------------------------------------------

def ref_xent(Z, y, eps):
    Z = f64(Z)
    n, m = Z.shape
    shifted = Z - Z.max(axis=1, keepdims=True) if n else Z
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    q = np.full((n, m), eps / m)
    q[np.arange(n), y] += 1.0 - eps
    return (q * (np.log(s) - shifted)).sum(axis=1), e / s - q


LABEL_FORMS = st.sampled_from(["int64", "int32", "uint8", "float", "column", "list"])


def label_form(y, form):
    if form == "float":
        return y.astype(np.float64)
    if form == "column":
        return y[:, None]
    if form == "list":
        return y.tolist()
    return y.astype(form)


@PROFILE
@given(dtype=DTYPES, n=st.integers(0, 70), m=st.integers(1, 40),
       mag=st.sampled_from([1e-3, 1.0, 30.0, 1e4, "mix", "sub"]),
       eps=st.sampled_from([0.0, 0.1, 1.0]), lz=LAYOUTS, form=LABEL_FORMS, seed=SEEDS)
def test_softmax_cross_entropy(dtype, n, m, mag, eps, lz, form, seed):
    r = np.random.default_rng(seed)
    Z = values(r, (n, m), dtype, mag)
    y = r.integers(0, m, n)
    loss, grad = K.softmax_cross_entropy(lay_out(Z, lz), label_form(y, form),
                                         label_smoothing=eps)
    ref_loss, ref_grad = ref_xent(Z, y, eps)
    row_scale = 2 * np.abs(f64(Z)).max(axis=1, initial=0) + np.log(m) + 1
    assert_close(loss, ref_loss, scale=row_scale, dtype=dtype)
    assert_close(grad, ref_grad, scale=1.0, dtype=dtype)
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    assert (loss >= -rtol_for(dtype) * row_scale).all()


@PROFILE
@given(dtype=DTYPES, shape=st.one_of(st.tuples(st.integers(0, 50)),
                                     st.tuples(st.integers(0, 50), st.integers(0, 40))),
       mag=st.sampled_from([1e-3, 1.0, 30.0, 1e4, "mix"]), lz=LAYOUTS, seed=SEEDS)
def test_softmax_and_log_softmax(dtype, shape, mag, lz, seed):
    r = np.random.default_rng(seed)
    Z = values(r, shape, dtype, mag)
    p, lp = K.softmax(lay_out(Z, lz)), K.log_softmax(lay_out(Z, lz))
    Z2 = f64(Z).reshape(1, -1) if Z.ndim == 1 else f64(Z)
    if Z2.size:
        shifted = Z2 - Z2.max(axis=1, keepdims=True)
        ref_lp = (shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).reshape(shape)
    else:
        ref_lp = np.zeros(shape)
    assert_close(lp, ref_lp, scale=np.abs(f64(Z)).max(initial=0) + 1, dtype=dtype)
    assert_close(p, np.exp(ref_lp), scale=1.0, dtype=dtype)
    if Z2.size:
        assert_close(p.reshape(Z2.shape).sum(axis=1), np.ones(Z2.shape[0]),
                     scale=Z2.shape[1])


# ---- SGD update -----------------------------------------------------------------------------

@PROFILE
@given(dtype=DTYPES, shape=st.sampled_from([(), (0,), (1,), (7,), (33,), (3, 5), (17, 9),
                                            (2, 3, 4)]),
       lr=st.floats(1e-4, 10), batch=st.integers(1, 1000), momentum=st.sampled_from([0.0, 0.5,
                                                                                    0.9]),
       wd=st.sampled_from([0.0, 1e-4, 0.1]), steps=st.integers(1, 3), lg=LAYOUTS, seed=SEEDS)
def test_sgd_update(dtype, shape, lr, batch, momentum, wd, steps, lg, seed):
    r = np.random.default_rng(seed)
    p = r.standard_normal(shape).astype(dtype)
    v = np.zeros(shape, dtype) if momentum else None
    P, V = f64(p), np.zeros(shape)
    for _ in range(steps):
        g = r.standard_normal(shape).astype(dtype)
        K.sgd_update(p, lay_out(g, lg), lr, batch, momentum, wd, velocity=v)
        # Reference in the working precision, operation by operation, as the kernel does it.
        t = dtype
        d = (g.astype(t) / t(batch) + t(wd) * P.astype(t)).astype(t)
        if momentum:
            V = (t(momentum) * V.astype(t) + d).astype(t)
            P = (P.astype(t) - t(lr) * V).astype(t)
        else:
            P = (P.astype(t) - t(lr) * d).astype(t)
        assert_close(p, P, scale=np.abs(P) + lr * (np.abs(f64(g)) / batch + 1), dtype=dtype)
        P = f64(p)
        if momentum:
            V = f64(v)


# ---- gather rows ------------------------------------------------------------------------------

@PROFILE
@given(src_dtype=st.sampled_from([np.uint8, np.float32, np.float64]),
       out_dtype=st.sampled_from([None, np.float32, np.float64]),
       n=st.integers(0, 60), trailing=st.sampled_from([(), (1,), (5,), (3, 4), (28, 28)]),
       count=st.integers(0, 80), scale=st.sampled_from([None, 1.0, 1 / 255, -2.5]),
       ls=LAYOUTS, index_form=st.sampled_from(["int64", "int32", "uint16", "list", "strided"]),
       use_out=st.booleans(), seed=SEEDS)
def test_gather_rows(src_dtype, out_dtype, n, trailing, count, scale, ls, index_form, use_out,
                     seed):
    r = np.random.default_rng(seed)
    shape = (n,) + trailing
    if src_dtype == np.uint8:
        src = r.integers(0, 256, shape, dtype=np.uint8)
    else:
        src = r.standard_normal(shape).astype(src_dtype)
    count = count if n else 0
    idx = r.integers(0, max(n, 1), count)
    if index_form == "list":
        ind = idx.tolist()
    elif index_form == "strided":
        ind = np.repeat(idx, 2)[::2]
    else:
        ind = idx.astype(index_form)
    odt = np.dtype(out_dtype or (np.float32 if src_dtype == np.uint8 else src_dtype))
    out = np.empty((count,) + trailing, odt) if use_out else None
    got = K.gather_rows(lay_out(src, ls), ind, out=out, scale=scale,
                        dtype=None if use_out else out_dtype)
    assert got.dtype == odt and got.shape == (count,) + trailing
    # The kernel converts then multiplies in the output precision: so does the reference.
    want = src[idx].astype(odt)
    if scale is not None:
        want = want * odt.type(scale)
    np.testing.assert_array_equal(got, want)
    if use_out:
        assert got is out


# ---- the fused training step against the per-batch loop -----------------------------------

@PROFILE
@given(kind=st.sampled_from(["softmax", "softmax-u8", "l2", "huber"]), dtype=DTYPES,
       n=st.integers(0, 90), k=st.integers(1, 40), m=st.integers(1, 40),
       batch=st.sampled_from([1, 2, 7, 32, 33, 64, 1000]), momentum=st.sampled_from([0.0, 0.9]),
       wd=st.sampled_from([0.0, 1e-3]), smooth=st.sampled_from([0.0, 0.1]),
       epochs=st.integers(1, 2), seed=SEEDS)
def test_fused_training_matches_the_loop(kind, dtype, n, k, m, batch, momentum, wd, smooth,
                                         epochs, seed):
    r = np.random.default_rng(seed)
    if kind == "softmax-u8":
        X = r.integers(0, 256, (n, k), dtype=np.uint8)
    else:
        X = r.standard_normal((n, k)).astype(dtype)
    if kind.startswith("softmax"):
        y = r.integers(0, m, n)
        loss = fs.losses.SoftmaxCrossEntropyLoss(label_smoothing=smooth)
    else:
        y = r.standard_normal((n, m) if m > 1 else n).astype(dtype)
        loss = fs.losses.L2Loss() if kind == "l2" else fs.losses.HuberLoss(0.7)
    lr = 0.05 / (255.0 if kind == "softmax-u8" else 1.0)
    results = []
    for fused in (True, False):
        net = fs.nn.Dense(m, in_units=k, dtype=dtype, rng=seed % 1000)
        opt = fs.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
        it = fs.load_array((X, y), batch, seed=seed % 997)
        h = fs.train(net, it, None, loss, epochs, opt, fused=fused, verbose=False,
                     progress=False)
        results.append((net.weight.data, net.bias.data, h))
    (W1, b1, h1), (W2, b2, h2) = results
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for a, b in ((W1, W2), (b1, b2)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * (1 + np.abs(b).max(initial=0)))
    np.testing.assert_allclose(h1.train_loss, h2.train_loss, rtol=10 * tol, atol=10 * tol)
