"""Losses: values against NumPy references, gradients sent upstream, stability for huge logits,
and the Tensor plumbing (sum / mean / backward) that carries gradients back to a layer."""
from __future__ import annotations

import numpy as np
import pytest

import fastshallow as fs
from fastshallow.autograd import tensor
from fastshallow.losses import HuberLoss, L2Loss, SoftmaxCrossEntropyLoss

from conftest import assert_close


class Probe:
    """A stand-in producer: predictions whose backward records the gradient it receives."""

    def __init__(self):
        self.G = None

    def __call__(self, values):
        def grad_fn(G):
            self.G = np.array(G)
        return tensor(np.asarray(values), grad_fn)


def ref_log_softmax(Z):
    Z = np.asarray(Z, np.float64)
    m = Z.max(axis=1, keepdims=True)
    return Z - m - np.log(np.exp(Z - m).sum(axis=1, keepdims=True))


def smoothed_targets(y, m, eps):
    T = np.full((len(y), m), eps / m)
    T[np.arange(len(y)), y] += 1 - eps
    return T


# -- L2Loss -----------------------------------------------------------------------------------------

def test_l2_values_and_dtype(rng, float_dtype):
    P = rng.normal(size=(9, 1)).astype(float_dtype)
    y = rng.normal(size=9).astype(float_dtype)  # (n,) targets reshaped to (n, 1)
    l = L2Loss()(P, y)
    assert l.shape == (9,) and l.dtype == float_dtype
    ref = 0.5 * (P[:, 0].astype(np.float64) - y.astype(np.float64)) ** 2
    assert_close(l, ref)


def test_l2_accepts_n_targets_for_n_by_1_predictions_and_vice_versa(rng):
    P = rng.normal(size=(6, 1))
    y = rng.normal(size=6)
    a = L2Loss()(P, y)
    b = L2Loss()(P, y.reshape(6, 1))
    c = L2Loss()(P[:, 0], y.reshape(6, 1))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    # broadcasting (n,1) - (n,) would give an (n, n) matrix: make sure that did not happen
    np.testing.assert_allclose(a, 0.5 * (P[:, 0] - y) ** 2, rtol=1e-14)


def test_l2_several_outputs_are_averaged(rng):
    P = rng.normal(size=(5, 3))
    Y = rng.normal(size=(5, 3))
    np.testing.assert_allclose(L2Loss()(P, Y), (0.5 * (P - Y) ** 2).mean(axis=1), rtol=1e-14)


def test_l2_gradient_sent_upstream(rng):
    probe = Probe()
    P = rng.normal(size=(7, 1))
    y = rng.normal(size=7)
    L2Loss()(probe(P), y).backward()
    np.testing.assert_allclose(probe.G, P - y[:, None], rtol=1e-14)
    probe3 = Probe()
    P3, Y3 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    L2Loss()(probe3(P3), Y3).backward()
    np.testing.assert_allclose(probe3.G, (P3 - Y3) / 3, rtol=1e-14)


def test_l2_bad_targets(rng):
    with pytest.raises(ValueError, match="one target per prediction"):
        L2Loss()(np.zeros((5, 1)), np.zeros(4))
    with pytest.raises(TypeError, match="y"):
        L2Loss()(np.zeros((2, 1)), ["a", "b"])


@pytest.mark.parametrize("loss", [L2Loss(), HuberLoss(0.5)])
def test_targets_of_other_rows_are_refused(loss):
    """A transposed target has y_hat's size: read in y_hat's shape, it would pair values of
    different examples (a (3, 2) arange against its (2, 3) reshape gave losses of 0)."""
    P, Y = np.arange(6.0).reshape(3, 2), np.arange(6.0).reshape(2, 3)
    for p, y in ((P, Y), (np.zeros((4, 1)), np.zeros((1, 4))), (tensor(P, lambda G: None), Y)):
        with pytest.raises(ValueError, match=r"y must have one target per prediction, row by "
                                             r"row: y_hat has shape"):
            loss(p, y)


def test_scalar_prediction_is_refused():
    # losses are per example: a 0-d prediction has no batch dimension (losses.py says so)
    with pytest.raises(ValueError, match="batch dimension"):
        L2Loss()(np.float64(1.0), np.zeros(1))
    with pytest.raises(ValueError, match="batch dimension"):
        HuberLoss()(3.0, 1.0)


# -- HuberLoss ----------------------------------------------------------------------------------------

def huber_ref(d, delta):
    """The docstring's form, element by element."""
    out = np.empty_like(d, dtype=np.float64)
    for i, v in np.ndenumerate(np.asarray(d, np.float64)):
        out[i] = 0.5 * v * v if abs(v) <= delta else delta * (abs(v) - delta / 2)
    return out


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber_values_both_regimes(rng, delta, float_dtype):
    P = rng.normal(scale=2 * delta, size=(40, 1)).astype(float_dtype)
    y = np.zeros(40, float_dtype)
    d = P[:, 0].astype(np.float64)
    assert (np.abs(d) < delta).any() and (np.abs(d) > delta).any()
    l = HuberLoss(delta)(P, y)
    assert l.dtype == float_dtype
    assert_close(l, huber_ref(d, delta))


def test_huber_is_continuous_at_delta_and_quadratic_inside():
    delta = 0.7
    at = np.array([[delta], [-delta]])
    just_out = at * (1 + 1e-9)
    np.testing.assert_allclose(HuberLoss(delta)(at, [0, 0]), 0.5 * delta ** 2, rtol=1e-14)
    np.testing.assert_allclose(HuberLoss(delta)(just_out, [0, 0]), 0.5 * delta ** 2, rtol=1e-8)
    small = np.array([[0.1], [-0.2]])
    np.testing.assert_allclose(HuberLoss(delta)(small, [0, 0]), L2Loss()(small, [0, 0]),
                               rtol=1e-14)


def test_huber_gradient_is_clipped_residual(rng):
    delta = 1.0
    probe = Probe()
    P = np.array([[0.5], [-0.25], [3.0], [-4.0]])
    y = np.zeros(4)
    HuberLoss(delta)(probe(P), y).backward()
    np.testing.assert_allclose(probe.G, [[0.5], [-0.25], [1.0], [-1.0]], rtol=1e-14)


def test_huber_with_several_outputs_averages(rng):
    P, Y = rng.normal(scale=2, size=(6, 3)), rng.normal(size=(6, 3))
    np.testing.assert_allclose(HuberLoss(1.0)(P, Y), huber_ref(P - Y, 1.0).mean(axis=1),
                               rtol=1e-13)


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan"), float("inf")])
def test_huber_bad_delta(delta):
    with pytest.raises(ValueError, match="delta"):
        HuberLoss(delta)


# -- SoftmaxCrossEntropyLoss --------------------------------------------------------------------------

def test_softmax_ce_values(rng, float_dtype):
    Z = rng.normal(scale=3, size=(20, 6)).astype(float_dtype)
    y = rng.integers(0, 6, 20)
    l = SoftmaxCrossEntropyLoss()(Z, y)
    assert l.shape == (20,) and l.dtype == float_dtype
    ref = -ref_log_softmax(Z)[np.arange(20), y]
    assert_close(l, ref, scale=np.abs(Z.astype(np.float64)).max(axis=1) + ref)


@pytest.mark.parametrize("eps", [0.1, 0.3, 1.0])
def test_softmax_ce_label_smoothing_values(rng, eps):
    Z = rng.normal(scale=2, size=(15, 4))
    y = rng.integers(0, 4, 15)
    T = smoothed_targets(y, 4, eps)
    ref = -(T * ref_log_softmax(Z)).sum(axis=1)
    np.testing.assert_allclose(SoftmaxCrossEntropyLoss(label_smoothing=eps)(Z, y), ref,
                               rtol=1e-12)
    plain = SoftmaxCrossEntropyLoss()(Z, y)
    # smoothing mixes in the uniform target: loss = (1-eps) * CE + eps * mean(-log p)
    mix = (1 - eps) * np.asarray(plain) + eps * (-ref_log_softmax(Z).mean(axis=1))
    np.testing.assert_allclose(SoftmaxCrossEntropyLoss(label_smoothing=eps)(Z, y), mix,
                               rtol=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_softmax_ce_gradient_is_softmax_minus_target(rng, eps):
    Z = rng.normal(size=(8, 5))
    y = rng.integers(0, 5, 8)
    probe = Probe()
    SoftmaxCrossEntropyLoss(label_smoothing=eps)(probe(Z), y).backward()
    ref = np.exp(ref_log_softmax(Z)) - smoothed_targets(y, 5, eps)
    np.testing.assert_allclose(probe.G, ref, rtol=1e-12, atol=1e-15)
    # rows of the gradient sum to zero
    np.testing.assert_allclose(probe.G.sum(axis=1), 0, atol=1e-14)


def test_softmax_ce_gradient_matches_finite_differences_in_the_logits(rng):
    Z = rng.normal(size=(4, 3))
    y = rng.integers(0, 3, 4)
    loss = SoftmaxCrossEntropyLoss(label_smoothing=0.1)
    probe = Probe()
    loss(probe(Z), y).backward()
    h = 1e-6
    fd = np.zeros_like(Z)
    for idx in np.ndindex(*Z.shape):
        Zp, Zm = Z.copy(), Z.copy()
        Zp[idx] += h
        Zm[idx] -= h
        fd[idx] = (np.sum(loss(Zp, y)) - np.sum(loss(Zm, y))) / (2 * h)
    np.testing.assert_allclose(probe.G, fd, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_ce_is_stable_for_huge_logits_where_naive_overflows(rng, dtype):
    base = 1e4
    Z = (base + rng.uniform(-5, 5, size=(10, 7))).astype(dtype)
    Z[0] = -base  # and hugely negative rows
    Z[1, :] = base
    Z[1, 3] = base + 3
    y = rng.integers(0, 7, 10)
    # the naive route exponentiates first and breaks down
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        E = np.exp(Z)
        naive = -np.log((E / E.sum(axis=1, keepdims=True))[np.arange(10), y])
    assert not np.isfinite(naive).all()
    l = SoftmaxCrossEntropyLoss()(Z, y)
    assert np.isfinite(l).all()
    ref = -ref_log_softmax(Z)[np.arange(10), y]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(l, ref, rtol=tol, atol=tol * 10)
    probe = Probe()
    SoftmaxCrossEntropyLoss()(probe(Z), y).backward()
    assert np.isfinite(probe.G).all()
    T = smoothed_targets(y, 7, 0.0)
    np.testing.assert_allclose(probe.G, np.exp(ref_log_softmax(Z)) - T, atol=tol * 10)


def test_softmax_ce_bad_inputs(rng):
    Z = rng.normal(size=(3, 4))
    loss = SoftmaxCrossEntropyLoss()
    with pytest.raises(ValueError, match="< 4"):
        loss(Z, [0, 1, 4])
    with pytest.raises(ValueError, match=">= 0"):
        loss(Z, [0, -1, 2])
    with pytest.raises(ValueError, match="fractional"):
        loss(Z, [0.0, 1.5, 2.0])
    with pytest.raises(ValueError, match="3 entries"):
        loss(Z, [0, 1])
    with pytest.raises(ValueError, match="2-D"):
        loss(Z[0], [0])
    for eps in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="label_smoothing"):
            SoftmaxCrossEntropyLoss(label_smoothing=eps)


def test_softmax_ce_accepts_whole_float_labels(rng):
    Z = rng.normal(size=(3, 4))
    np.testing.assert_array_equal(SoftmaxCrossEntropyLoss()(Z, [0.0, 3.0, 1.0]),
                                  SoftmaxCrossEntropyLoss()(Z, [0, 3, 1]))


# -- Tensor plumbing: sum / mean / backward ---------------------------------------------------------

def _net_and_batch(rng):
    net = fs.nn.Dense(2, in_units=3, dtype=np.float64, rng=1)
    X = rng.normal(size=(6, 3))
    y = rng.normal(size=(6, 2))
    return net, X, y


def test_sum_and_mean_backward(rng):
    net, X, y = _net_and_batch(rng)
    loss = L2Loss()
    loss(net(X), y).backward()
    g_plain = net.weight.grad.copy(), net.bias.grad.copy()
    loss(net(X), y).sum().backward()
    g_sum = net.weight.grad.copy(), net.bias.grad.copy()
    s = loss(net(X), y).mean()
    assert isinstance(s, fs.Tensor) and s.shape == ()
    s.backward()
    g_mean = net.weight.grad.copy(), net.bias.grad.copy()
    # the gradient of the sum, computed independently: d/dW sum_i 0.5 mean_j (XW+b-y)^2
    R = (X @ net.weight.data + net.bias.data - y) / 2
    np.testing.assert_allclose(g_sum[0], X.T @ R, rtol=1e-12)
    np.testing.assert_allclose(g_sum[1], R.sum(0), rtol=1e-12)
    for a, b in zip(g_plain, g_sum):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(g_mean, g_sum):
        np.testing.assert_allclose(a, b / 6, rtol=1e-14)


def test_sum_value_and_weighted_backward(rng):
    net, X, y = _net_and_batch(rng)
    l = L2Loss()(net(X), y)
    np.testing.assert_allclose(float(l.sum()), np.asarray(l).sum(), rtol=1e-15)
    np.testing.assert_allclose(float(l.mean()), np.asarray(l).mean(), rtol=1e-15)
    w = rng.uniform(size=6)
    l.backward(w)
    R = (X @ net.weight.data + net.bias.data - y) / 2 * w[:, None]
    np.testing.assert_allclose(net.weight.grad, X.T @ R, rtol=1e-12)


def test_users_grad_fn_always_receives_an_array(rng):
    """The library's own grad_fns take None for "all ones"; one given to fs.tensor must get an
    array, also through .sum(), .mean() and a Flatten above it."""
    seen = []

    def grad_fn(G):
        seen.append(np.array(G) * 2)  # arithmetic on G, as a user's backward does

    for reduce in (lambda t: t, lambda t: t.sum(), lambda t: t.mean()):
        reduce(tensor(rng.normal(size=(3, 2)), grad_fn)).backward()
    np.testing.assert_array_equal(seen[0], np.full((3, 2), 2.0))
    np.testing.assert_array_equal(seen[1], np.full((3, 2), 2.0))
    np.testing.assert_allclose(seen[2], np.full((3, 2), 2.0 / 6))
    fs.nn.Flatten()(tensor(rng.normal(size=(2, 1, 3)), grad_fn)).backward()
    np.testing.assert_array_equal(seen[3], np.full((2, 1, 3), 2.0))


def test_tensor_derived_with_numpy_has_no_backward(rng):
    net, X, y = _net_and_batch(rng)
    l = L2Loss()(net(X), y)
    doubled = l * 2
    assert not isinstance(doubled, fs.Tensor) and not hasattr(doubled, "backward")
    assert not isinstance(np.exp(l), fs.Tensor)
    assert not isinstance(l.sum(axis=0, keepdims=True), fs.Tensor)
    part = l[1:]
    assert isinstance(part, fs.Tensor)
    with pytest.raises(RuntimeError, match="derived from one with NumPy"):
        part.backward()
    with pytest.raises(RuntimeError, match="no gradient"):
        np.asarray(l).view(fs.Tensor).backward()


def test_loss_of_plain_arrays_has_no_parameters_to_update(rng):
    l = L2Loss()(rng.normal(size=(4, 1)), rng.normal(size=4))
    assert isinstance(l, fs.Tensor)
    with pytest.raises(RuntimeError, match="not produced by a fastshallow layer"):
        l.backward()
    with pytest.raises(RuntimeError, match="not produced by a fastshallow layer"):
        l.mean().backward()


def test_losses_of_empty_batches(rng):
    assert L2Loss()(np.zeros((0, 1)), np.zeros(0)).shape == (0,)
    assert HuberLoss()(np.zeros((0, 1)), np.zeros(0)).shape == (0,)
    assert SoftmaxCrossEntropyLoss()(np.zeros((0, 3)), np.zeros(0, np.int64)).shape == (0,)
