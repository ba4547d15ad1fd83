"""Numerical extremes: huge logits and features, overflow where the true result overflows,
subnormal (denormal) inputs, non-finite rows that must not poison their neighbours, and
divergence detection.

References are computed in float64 (or exactly) from the very same, already rounded, inputs;
tolerances follow conftest.py: ``|got - ref| <= rtol * (|ref| + scale)`` with `scale` the
magnitude of what was summed.  The kernels compile without -ffast-math, so subnormals are kept
(no flush-to-zero) and must come out right, not merely finite.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

import fastshallow as fs
from fastshallow import kernels as K
from fastshallow import losses, nn, optim

from conftest import assert_close, rtol_for

BIG = [(np.float32, 1e4), (np.float32, 1e30), (np.float64, 1e4), (np.float64, 1e30)]


def f64(a):
    return np.array(a, dtype=np.float64)


def ref_xent(Z, y, eps=0.0):
    """Smoothed cross-entropy of softmax(Z) and its gradient, in float64, max subtracted."""
    Z = f64(Z)
    n, m = Z.shape
    shifted = Z - Z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    q = np.full((n, m), eps / m)
    q[np.arange(n), y] += 1.0 - eps
    return (q * (np.log(s) - shifted)).sum(axis=1), e / s - q


def logits(dtype, big):
    """Rows that make the naive softmax overflow or underflow, every label position used."""
    return np.array([[big, -big, 0.5 * big, 0.0, 1.0],
                     [0.0, big, big, -big, -big],
                     [-big, -big, -big, -big, -big],
                     [big, 0.25 * big, -0.25 * big, big, 0.0],
                     [1.0, 2.0, 3.0, 4.0, 5.0]], dtype)


LABELS = np.array([1, 2, 4, 3, 0])


# ---- logits of magnitude 1e4 and 1e30 ----------------------------------------------------------

@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("dtype, big", BIG)
def test_softmax_cross_entropy_huge_logits(dtype, big, eps):
    Z = logits(dtype, big)
    with np.errstate(over="ignore", invalid="ignore"):  # the naive formula overflows here
        naive = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)
    assert not np.isfinite(naive).all()
    loss, grad = K.softmax_cross_entropy(Z, LABELS, label_smoothing=eps)
    ref_loss, ref_grad = ref_xent(Z, LABELS, eps)
    assert loss.dtype == grad.dtype == dtype
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    # The loss sums (max - z_j) terms of size up to 2 * big: that is its scale.
    row_scale = 2 * np.abs(f64(Z)).max(axis=1) + np.log(5) + 1
    assert_close(loss, ref_loss, scale=row_scale)
    assert_close(grad, ref_grad, scale=1.0)
    assert (loss >= 0).all()
    if eps == 0:
        assert loss[0] == dtype(2 * big)  # max - z_1, every other exp underflows to 0
        assert loss[2] == dtype(np.log(5))  # all logits equal: uniform
    # Gradient rows sum to 0 (probabilities minus a distribution).
    assert_close(grad.sum(axis=1), np.zeros(5), scale=5.0)


@pytest.mark.parametrize("dtype, big", BIG)
def test_softmax_and_log_softmax_huge_logits(dtype, big):
    Z = logits(dtype, big)
    p, lp = K.softmax(Z), K.log_softmax(Z)
    assert np.isfinite(p).all() and np.isfinite(lp).all()
    shifted = f64(Z) - f64(Z).max(axis=1, keepdims=True)
    ref_lp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert_close(lp, ref_lp, scale=np.abs(f64(Z)).max(axis=1, keepdims=True) + 1)
    assert_close(p, np.exp(ref_lp), scale=1.0)
    assert_close(p.sum(axis=1), np.ones(5), scale=5.0)
    np.testing.assert_array_equal(p.argmax(axis=1), f64(Z).argmax(axis=1))
    # One-dimensional input is one row.
    assert_close(K.softmax(Z[0]), p[0], scale=1.0)


@pytest.mark.parametrize("dtype, big", BIG)
def test_softmax_cross_entropy_loss_layer_and_backward(dtype, big):
    """Through the loss object and a Dense layer: forward values and the gradient that
    reaches the weights are finite and right for huge logits."""
    k = 3
    X = np.eye(5, k, dtype=dtype)  # rows pick weight rows: logits are what we put in W
    net = nn.Dense(5, in_units=k, dtype=dtype, rng=0)
    W = logits(dtype, big)[:k]
    net.weight.set_data(W)
    net.bias.set_data(np.zeros(5, dtype))
    lossfn = losses.SoftmaxCrossEntropyLoss(label_smoothing=0.1)
    y = LABELS[:5]
    Z = net(X)
    l = lossfn(Z, y)
    ref_loss, ref_grad = ref_xent(np.asarray(Z), y, 0.1)
    assert np.isfinite(l).all()
    assert_close(l, ref_loss, scale=2 * np.abs(f64(Z)).max(axis=1) + 3)
    l.backward()
    assert np.isfinite(net.weight.grad).all() and np.isfinite(net.bias.grad).all()
    assert_close(net.weight.grad, f64(X).T @ ref_grad, scale=float(k))
    assert_close(net.bias.grad, ref_grad.sum(axis=0), scale=5.0)


def test_logits_past_float32_range_overflow_to_inf_only_where_the_loss_does():
    """float32 logits of +-3e38: the loss of a row whose label sits 6e38 below the maximum is
    6e38, past float32's 3.4e38, so inf is the correctly rounded answer; rows whose loss is
    representable stay finite, and every gradient stays finite."""
    Z = np.array([[3e38, -3e38, 0.0], [3e38, -3e38, 0.0], [3e38, 3e38, -3e38]], np.float32)
    y = np.array([1, 0, 0])
    loss, grad = K.softmax_cross_entropy(Z, y)
    assert loss[0] == np.inf
    assert loss[1] == 0.0
    assert loss[2] == np.float32(np.log(2))
    assert np.isfinite(grad).all()
    assert_close(grad, ref_xent(Z, y)[1], scale=1.0)


def test_non_finite_logits_poison_only_their_own_row():
    Z = np.array([[np.inf, 0.0, 1.0],      # +inf: no limit of the formula is used -> NaN
                  [np.nan, 0.0, 1.0],
                  [-np.inf, 0.0, 1.0],     # -inf: probability exactly 0
                  [-np.inf, 0.0, 1.0],     # ... and the label on it: -log(0) = inf
                  [0.0, 1.0, 2.0]])
    y = np.array([1, 1, 1, 0, 2])
    loss, grad = K.softmax_cross_entropy(Z, y)
    assert np.isnan(loss[:2]).all() and np.isnan(grad[:2]).all()
    # Row 2 is softmax over its finite logits [0, 1] with the label on the 0; row 4 is plain.
    l2, g2 = ref_xent([[0.0, 1.0]], [0])
    l4, g4 = ref_xent([[0.0, 1.0, 2.0]], [2])
    assert_close(loss[[2, 4]], [l2[0], l4[0]])
    assert_close(grad[2, 1:], g2[0], scale=1.0)
    assert_close(grad[4], g4[0], scale=1.0)
    assert grad[2, 0] == 0.0 and grad[3, 0] == -1.0
    assert loss[3] == np.inf
    p = K.softmax(Z)
    assert np.isnan(p[:2]).all() and np.isfinite(p[2:]).all() and p[2, 0] == 0.0


# ---- features of magnitude 1e30 in float32 -----------------------------------------------------

def test_matmul_bias_float32_features_of_1e30():
    rng = np.random.default_rng(0)
    n, k, m = 37, 300, 10
    X = (1e30 * rng.standard_normal((n, k))).astype(np.float32)
    for W_mag in (1.0, 1e-30, 1e-20):
        W = (W_mag * rng.standard_normal((k, m))).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32)
        out = K.matmul_bias(X, W, b)
        ref = f64(X) @ f64(W) + f64(b)
        scale = np.abs(f64(X)) @ np.abs(f64(W)) + np.abs(f64(b))
        assert np.abs(ref).max() < np.finfo(np.float32).max  # the true result is representable
        assert np.isfinite(out).all()
        assert_close(out, ref, scale=scale)
        dW, db = K.matmul_bias_backward(X, out / np.float32(1e30))
        assert np.isfinite(dW).all()
    # Exact cancellation: [1e30, -1e30, 1] . [1, 1, 1] = 1.
    out = K.matmul_bias(np.array([[1e30, -1e30, 1.0]], np.float32), np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(out, np.ones((1, 4), np.float32))


@pytest.mark.parametrize("m", [1, 10, 33])
def test_matmul_bias_float32_overflow_is_inf_exactly_where_the_truth_overflows(m):
    """Where X @ W really exceeds float32's range (1e30 * 1e10 = 1e40) inf, with the sign of
    the true result, is the correct float32 answer; representable entries stay finite."""
    X = np.array([[1e30, 0.0], [-1e30, 0.0], [1e30, 1e30], [0.0, 1.0]], np.float32)
    W = np.zeros((2, m), np.float32)
    W[0, :] = 1e10
    W[1, :] = 1.0
    out = K.matmul_bias(X, W)
    ref = f64(X) @ f64(W)
    too_big = np.abs(ref) > np.finfo(np.float32).max
    assert too_big[:3].all() and not too_big[3].any()
    np.testing.assert_array_equal(out[too_big], np.sign(ref[too_big]) * np.inf)
    assert_close(out[~too_big], ref[~too_big])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regression_losses_of_huge_predictions(dtype):
    """0.5 * (1e30)^2 = 5e59 overflows float32 (inf is right) and is finite in float64."""
    y_hat = np.array([[1e30], [1.0]], dtype)
    y = np.array([0.0, 1.0], dtype)
    l2 = losses.L2Loss()(y_hat, y)
    hub = losses.HuberLoss(1.0)(y_hat, y)
    if dtype == np.float32:
        assert l2[0] == np.inf
    else:
        assert l2[0] == pytest.approx(5e59, rel=1e-12)
    assert l2[1] == 0.0
    assert hub[0] == pytest.approx(1e30 - 0.5, rel=1e-6) and np.isfinite(hub).all()


# ---- subnormal inputs ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_subnormal_inputs_give_correct_results(dtype):
    info = np.finfo(dtype)
    tiny = info.smallest_subnormal
    assert tiny > 0 and tiny < info.tiny
    rng = np.random.default_rng(1)
    n, k, m = 9, 40, 17
    # Subnormal features times ordinary weights: every product and partial sum is subnormal or
    # small, so the rounding is absolute, a few units of the smallest subnormal per term.
    X = (rng.integers(-1000, 1000, (n, k)) * tiny).astype(dtype)
    assert (np.abs(X[X != 0]) < info.tiny).all()
    W = rng.standard_normal((k, m)).astype(dtype)
    b = (rng.integers(-5, 5, m) * tiny).astype(dtype)
    out = K.matmul_bias(X, W, b)
    ref = f64(X) @ f64(W) + f64(b)
    assert np.isfinite(out).all()
    atol = 4 * k * tiny + rtol_for(dtype) * np.abs(ref).max()
    np.testing.assert_allclose(out, ref, rtol=0, atol=atol)
    assert np.abs(out).max() > 0  # not flushed to zero
    # Backward with a subnormal gradient.
    G = (rng.integers(-3, 4, (n, m)) * tiny).astype(dtype)
    Xg = rng.standard_normal((n, k)).astype(dtype)
    dW, db = K.matmul_bias_backward(Xg, G)
    ref = f64(Xg).T @ f64(G)  # as above: absolute rounding, a few subnormal units per term
    np.testing.assert_allclose(dW, ref, rtol=0,
                               atol=4 * n * tiny + rtol_for(dtype) * np.abs(ref).max())
    assert np.abs(dW).max() > 0 and np.abs(db).max() > 0
    np.testing.assert_array_equal(db, G.sum(axis=0))  # sums of multiples of tiny are exact
    # Softmax of subnormal logits: all equal to 1/m within rounding.
    Z = (rng.integers(-9, 9, (n, m)) * tiny).astype(dtype)
    assert_close(K.softmax(Z), np.full((n, m), 1.0 / m), scale=1.0)
    loss, grad = K.softmax_cross_entropy(Z, rng.integers(0, m, n))
    assert_close(loss, np.full(n, np.log(m)), scale=np.log(m))
    # SGD on subnormal parameters and gradients: exact multiples of tiny stay exact.
    p = (np.arange(-8, 8) * tiny).astype(dtype)
    g = (np.arange(16) * 2 * tiny).astype(dtype)
    K.sgd_update(p, g, 0.5, 1)
    np.testing.assert_array_equal(p, ((np.arange(-8, 8) - np.arange(16)) * tiny).astype(dtype))
    # Gather copies subnormals bit for bit (and scaling by 1 keeps them).
    src = (np.arange(12).reshape(4, 3) * tiny).astype(dtype)
    np.testing.assert_array_equal(K.gather_rows(src, [3, 1, 0]), src[[3, 1, 0]])
    np.testing.assert_array_equal(K.gather_rows(src, [2], scale=1.0), src[[2]])


def test_training_on_subnormal_features_is_finite_and_matches_the_loop():
    rng = np.random.default_rng(2)
    tiny = np.finfo(np.float64).smallest_subnormal
    X = rng.integers(-50, 50, (64, 4)) * tiny
    y = rng.standard_normal(64)
    results = []
    for fused in (None, False):
        net = nn.Dense(1, in_units=4, dtype=np.float64, rng=0)
        h = fs.train(net, fs.load_array((X, y), 16, seed=0), None, losses.L2Loss(), 2,
                     optim.SGD(net.parameters(), lr=0.1), verbose=False, fused=fused)
        assert h.fused == (fused is None) and np.isfinite(h.train_loss).all()
        results.append((net.weight.data.copy(), net.bias.data.copy()))
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12)
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-9, atol=1e-300)


# ---- divergence ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fused", [None, False])
def test_divergence_names_epoch_and_minibatch_and_keeps_training_state_consistent(fused):
    X, y = fs.synthetic_data([2, -3.4], 4.2, 1000, seed=0)
    net = nn.Dense(1, in_units=2, rng=0)
    trainer = optim.SGD(net.parameters(), lr=1e6)
    with pytest.raises(fs.TrainingDiverged, match=r"epoch 1, minibatch (\d+)") as info:
        fs.train(net, fs.load_array((X, y), 10, seed=0), None, losses.L2Loss(), 3, trainer,
                 verbose=False, fused=fused)
    assert isinstance(info.value, FloatingPointError)
    batch = int(re.search(r"minibatch (\d+)", str(info.value)).group(1))
    assert 1 <= batch <= 100
    assert "learning rate 1e+06" in str(info.value)
