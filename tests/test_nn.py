"""Layers (Dense, Flatten, Sequential), deferred initialization, initializers, analytic gradients
against central finite differences, and saving / loading models without pickle."""
from __future__ import annotations

import json
import os
import pickle
import re

import numpy as np
import pytest

import fastshallow as fs
from fastshallow import init
from fastshallow.nn import Dense, Flatten, Sequential

from conftest import assert_bits_equal, assert_close


# -- helpers ----------------------------------------------------------------------------------

def summed_loss(net, loss, X, y) -> float:
    return float(np.sum(np.asarray(loss(net(X), y), dtype=np.float64)))


def finite_difference(param, f, h=1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every entry of param.data."""
    data = param.data
    out = np.zeros(data.shape, np.float64)
    for idx in np.ndindex(*data.shape):
        orig = data[idx]
        data[idx] = orig + h
        fp = f()
        data[idx] = orig - h
        fm = f()
        data[idx] = orig
        out[idx] = (fp - fm) / (2 * h)
    return out


def check_gradients(net, loss, X, y):
    """backward() of loss(net(X), y) fills every .grad with d(sum of losses)/d(param)."""
    l = loss(net(X), y)
    l.backward()
    analytic = [np.array(p.grad, dtype=np.float64) for p in net.parameters()]
    f = lambda: summed_loss(net, loss, X, y)  # noqa: E731
    assert len(analytic) == len(net.parameters()) > 0
    for p, g in zip(net.parameters(), analytic):
        numeric = finite_difference(p, f)
        assert np.abs(numeric).max() > 1e-6, f"{p.name}: gradient is trivially zero, bad test"
        np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8 * (1 + np.abs(numeric).max()),
                                   err_msg=f"gradient of {p.name}")


def dense64(units, in_units=None, seed=0, **kw):
    return Dense(units, in_units=in_units, dtype=np.float64, rng=seed, **kw)


# -- Dense: initialization and deferred input size --------------------------------------------

def test_dense_default_init_is_normal_0_01_and_zero_bias():
    net = Dense(256, in_units=1024, rng=123)
    W, b = net.weight.data, net.bias.data
    assert W.shape == (1024, 256) and W.dtype == np.float32
    assert b.shape == (256,) and b.dtype == np.float32
    n = W.size
    # std of a sample of n normals has relative standard error ~ 1/sqrt(2n) ~ 0.0014
    assert abs(W.std() / 0.01 - 1) < 0.01
    assert abs(W.mean()) < 5 * 0.01 / np.sqrt(n)
    # normal, not uniform: about 68.3% of the mass within one sigma
    assert abs(np.mean(np.abs(W) < 0.01) - 0.6827) < 0.01
    assert np.all(b == 0)


def test_dense_default_stream_also_gives_normal_0_01_and_is_seedable():
    fs.seed(7)
    a = Dense(64, in_units=512)
    fs.seed(7)
    b = Dense(64, in_units=512)
    assert_bits_equal(a.weight.data, b.weight.data)
    assert abs(a.weight.data.std() / 0.01 - 1) < 0.03
    c = Dense(64, in_units=512)  # stream advanced: different draw
    assert not np.array_equal(a.weight.data, c.weight.data)


def test_deferred_parameters_raise_clear_error_before_first_call():
    net = Dense(3)
    assert not net.initialized
    assert len(net.parameters()) == 2
    with pytest.raises(RuntimeError, match="not initialized") as exc:
        net.weight.data
    assert "first call" in str(exc.value) or "in_units" in str(exc.value)
    with pytest.raises(RuntimeError, match="not initialized"):
        net.bias.data
    with pytest.raises(RuntimeError, match="not initialized"):
        net.weight.grad


def test_deferred_input_size_is_inferred_on_first_call(rng):
    net = Dense(3, rng=1)
    X = rng.normal(size=(6, 5)).astype(np.float32)
    Y = net(X)
    assert net.in_units == 5
    assert net.weight.data.shape == (5, 3) and net.bias.data.shape == (3,)
    assert Y.shape == (6, 3)


def test_optimizer_built_before_first_call_works_after_it(rng):
    net = Dense(2, dtype=np.float64, rng=3)
    trainer = fs.optim.SGD(net.parameters(), lr=0.5)
    X = rng.normal(size=(8, 4))
    y = rng.normal(size=(8, 2))
    l = fs.losses.L2Loss()(net(X), y)
    l.backward()
    W0, b0 = net.weight.data.copy(), net.bias.data.copy()
    gW, gb = net.weight.grad.copy(), net.bias.grad.copy()
    assert np.abs(gW).max() > 0
    trainer.step(batch_size=8)
    np.testing.assert_allclose(net.weight.data, W0 - 0.5 * gW / 8, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net.bias.data, b0 - 0.5 * gb / 8, rtol=1e-12, atol=1e-15)


# -- Dense: forward -----------------------------------------------------------------------------

def test_dense_forward_is_X_W_plus_b(rng, float_dtype):
    net = Dense(7, in_units=13, dtype=float_dtype, rng=2)
    net.bias.set_data(rng.normal(size=7))
    X = rng.normal(size=(11, 13)).astype(float_dtype)
    Y = net(X)
    assert isinstance(Y, fs.Tensor)
    W, b = net.weight.data.astype(np.float64), net.bias.data.astype(np.float64)
    X64 = X.astype(np.float64)
    scale = np.abs(X64) @ np.abs(W) + np.abs(b)
    assert_close(Y, X64 @ W + b, scale=scale, dtype=float_dtype)


def test_dense_converts_inputs_to_its_dtype(rng):
    net = Dense(2, in_units=3, rng=0)  # float32
    X = rng.normal(size=(4, 3))  # float64
    Y = net(X)
    assert Y.dtype == np.float32
    ref = X.astype(np.float32).astype(np.float64) @ net.weight.data.astype(np.float64)
    assert_close(Y, ref, scale=np.abs(X) @ np.abs(net.weight.data.astype(np.float64)))
    Yi = net(np.arange(6).reshape(2, 3))  # integers too
    assert Yi.dtype == np.float32


def test_dense_reads_byte_swapped_input_as_its_values(rng):
    net = Dense(2, in_units=3, rng=0)
    X = rng.normal(size=(5, 3)).astype(np.float32)
    assert_bits_equal(net(X.astype(">f4")), net(X))


def test_dense_flattens_image_batches(rng):
    net = Dense(10, rng=4)
    X = rng.uniform(size=(5, 1, 28, 28)).astype(np.float32)
    Y = net(X)
    assert net.in_units == 784 and net.weight.data.shape == (784, 10)
    assert Y.shape == (5, 10)
    flat = X.reshape(5, -1).astype(np.float64)
    W = net.weight.data.astype(np.float64)
    assert_close(Y, flat @ W, scale=np.abs(flat) @ np.abs(W))


def test_dense_without_flatten_refuses_images(rng):
    net = Dense(10, flatten=False)
    with pytest.raises(ValueError, match="2-D"):
        net(rng.uniform(size=(5, 1, 28, 28)).astype(np.float32))


def test_wrong_feature_count_is_a_value_error(rng):
    net = Dense(2, in_units=3)
    with pytest.raises(ValueError, match="3 features"):
        net(rng.normal(size=(4, 5)).astype(np.float32))
    inferred = Dense(2)
    inferred(np.zeros((4, 6), np.float32))
    with pytest.raises(ValueError, match="6 features"):
        inferred(np.zeros((4, 7), np.float32))
    # the failed call changed nothing
    assert inferred.in_units == 6 and inferred.weight.data.shape == (6, 2)


def test_bad_dense_arguments():
    with pytest.raises(ValueError, match="units"):
        Dense(0)
    with pytest.raises(TypeError, match="units"):
        Dense(2.5)
    with pytest.raises(ValueError, match="in_units"):
        Dense(2, in_units=-1)
    with pytest.raises(TypeError, match="dtype"):
        Dense(2, dtype=np.int32)


def test_bad_inputs_to_dense(rng):
    net = Dense(2, in_units=3)
    with pytest.raises(TypeError, match="X"):
        net(np.array([["a", "b", "c"]]))
    with pytest.raises(TypeError, match="X"):
        net(np.ones((2, 3), dtype=complex))


def test_scalar_input_to_dense_is_refused():
    # a 0-d value has no batch dimension; it must not pass as a batch of one example
    with pytest.raises(ValueError, match="batch dimension"):
        Dense(2)(np.float32(1.0))


# -- gradients against central finite differences -------------------------------------------------

def test_l2_gradient_matches_finite_differences(rng):
    net = dense64(1, in_units=4, seed=5)
    net.bias.set_data([0.3])
    X = rng.normal(size=(9, 4))
    y = rng.normal(size=9)  # (n,) targets against (n, 1) predictions
    check_gradients(net, fs.losses.L2Loss(), X, y)


def test_l2_gradient_with_several_outputs(rng):
    net = dense64(3, in_units=4, seed=6)
    X = rng.normal(size=(7, 4))
    y = rng.normal(size=(7, 3))
    check_gradients(net, fs.losses.L2Loss(), X, y)


@pytest.mark.parametrize("regime", ["inside", "outside", "both"])
def test_huber_gradient_matches_finite_differences(rng, regime):
    delta = 0.8
    net = dense64(2, in_units=3, seed=7)
    net.bias.set_data([0.1, -0.2])
    X = rng.normal(size=(12, 3))
    P = np.asarray(net(X))
    # residuals y_hat - y well away from the kink at |d| = delta
    mag = {"inside": rng.uniform(0.05, 0.6, P.shape),
           "outside": rng.uniform(1.2, 3.0, P.shape),
           "both": np.where(rng.uniform(size=P.shape) < 0.5, rng.uniform(0.05, 0.6, P.shape),
                            rng.uniform(1.2, 3.0, P.shape))}[regime]
    D = mag * rng.choice([-1.0, 1.0], P.shape)
    y = P - D
    loss = fs.losses.HuberLoss(delta)
    # the regime really is the one intended
    per = np.abs(D)
    if regime == "inside":
        assert (per < delta).all()
    elif regime == "outside":
        assert (per > delta).all()
    else:
        assert (per < delta).any() and (per > delta).any()
    check_gradients(net, loss, X, y)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_softmax_cross_entropy_gradient_matches_finite_differences(rng, smoothing):
    net = dense64(5, in_units=4, seed=8)
    net.bias.set_data(rng.normal(size=5))
    net.weight.set_data(rng.normal(size=(4, 5)))  # sizeable logits
    X = rng.normal(size=(10, 4))
    y = rng.integers(0, 5, 10)
    check_gradients(net, fs.losses.SoftmaxCrossEntropyLoss(label_smoothing=smoothing), X, y)


def test_flatten_then_dense_gradient(rng):
    net = Sequential(Flatten(), dense64(3, seed=9))
    X = rng.normal(size=(6, 1, 3, 2))
    y = rng.integers(0, 3, 6)
    net(X)
    assert net[1].in_units == 6
    check_gradients(net, fs.losses.SoftmaxCrossEntropyLoss(), X, y)


def test_two_dense_stack_gradient_flows_through_both(rng):
    net = Sequential(dense64(5, in_units=4, seed=10), dense64(3, seed=11))
    net[0].bias.set_data(rng.normal(size=5))
    X = rng.normal(size=(8, 4))
    y = rng.integers(0, 3, 8)
    check_gradients(net, fs.losses.SoftmaxCrossEntropyLoss(), X, y)
    assert len(net.parameters()) == 4
    assert np.abs(net[0].weight.grad).max() > 0 and np.abs(net[0].bias.grad).max() > 0


def test_dense_flatten_dense_gradient(rng):
    """A Flatten between layers passes the gradient back through (Tensor in, Tensor out)."""
    net = Sequential(dense64(4, in_units=3, seed=12), Flatten(), dense64(2, seed=13))
    X = rng.normal(size=(7, 3))
    y = rng.normal(size=(7, 2))
    check_gradients(net, fs.losses.L2Loss(), X, y)


def test_float32_gradient_close_to_float64(rng):
    X = rng.normal(size=(16, 6))
    y = rng.integers(0, 4, 16)
    n32 = Dense(4, in_units=6, rng=14)
    n64 = Dense(4, in_units=6, dtype=np.float64)
    n64.weight.set_data(n32.weight.data)
    loss = fs.losses.SoftmaxCrossEntropyLoss()
    loss(n32(X.astype(np.float32)), y).backward()
    loss(n64(X.astype(np.float32).astype(np.float64)), y).backward()
    assert n32.weight.grad.dtype == np.float32
    np.testing.assert_allclose(n32.weight.grad, n64.weight.grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(n32.bias.grad, n64.bias.grad, rtol=1e-4, atol=1e-5)


def test_backward_overwrites_gradients(rng):
    net = dense64(2, in_units=3, seed=15)
    X = rng.normal(size=(5, 3))
    y = rng.normal(size=(5, 2))
    loss = fs.losses.L2Loss()
    loss(net(X), y).backward()
    g1 = net.weight.grad.copy()
    loss(net(X), y).backward()
    np.testing.assert_array_equal(net.weight.grad, g1)
    net.zero_grad()
    assert not net.weight.grad.any() and not net.bias.grad.any()


# What the caller holds -- the input, the output, the gradient buffers -- can be changed in place
# between the forward pass and backward: the compiled backward must refuse, not write past them.
def _resize(a, shape):
    a.resize(shape, refcheck=False)  # only the Parameter holds it


def _set(obj, name, value):
    setattr(obj, name, value)


CHANGED_IN_PLACE = [
    ("input reshaped", lambda net, X: _set(X, "shape", (1, 20)), ValueError,
     r"input .* has changed in place .*\(1, 20\)"),
    ("input retyped", lambda net, X: _set(X, "dtype", np.float64), ValueError,
     r"changed in place .*float64"),
    ("input flattened", lambda net, X: _set(X, "shape", (20,)), ValueError,
     r"changed in place .*\(20,\)"),
    ("weight gradient resized", lambda net, X: _resize(net.weight.grad, (1,)), ValueError,
     r"gradient buffer of 'weight' has shape \(1,\); .* \(4, 3\)"),
    ("weight gradient enlarged", lambda net, X: _resize(net.weight.grad, (40, 30)), ValueError,
     r"gradient buffer of 'weight' has shape \(40, 30\)"),
    ("weight gradient retyped", lambda net, X: _set(net.weight.grad, "dtype", np.int32),
     TypeError, r"gradient buffer of 'weight' has dtype int32"),
    ("bias gradient read-only", lambda net, X: _set(net.bias.grad.flags, "writeable", False),
     ValueError, r"gradient buffer of 'bias' is read-only"),
]


@pytest.mark.parametrize("change, exc, match", [pytest.param(*c[1:], id=c[0])
                                                for c in CHANGED_IN_PLACE])
def test_backward_refuses_what_changed_in_place_since_the_forward_pass(change, exc, match):
    net = Dense(3, in_units=4)
    X = np.ones((5, 4), np.float32)
    Y = net(X)
    change(net, X)
    with pytest.raises(exc, match=match):
        Y.backward()
    if net.weight.grad.shape == (4, 3):
        assert not net.weight.grad.any()  # refused before anything was written


@pytest.mark.parametrize("use_bias, match", [
    (True, r"gradient buffers of 'weight' and 'bias' share memory"),
    (False, r"gradient buffer of 'weight' shares memory with the input")])
def test_backward_refuses_an_input_that_is_its_own_gradient_buffer(use_bias, match):
    net = Dense(4, in_units=4, use_bias=use_bias)
    Y = net(net.weight.grad)
    with pytest.raises(ValueError, match=match):
        Y.backward()


def test_backward_after_the_output_is_reshaped_in_place_is_unchanged(rng):
    X = rng.normal(size=(5, 4)).astype(np.float32)
    ref, net = Dense(3, in_units=4, rng=0), Dense(3, in_units=4, rng=0)
    ref(X).backward()
    Y = net(X)
    Y.shape = (1, 15)
    Y.backward()
    assert_bits_equal(net.weight.grad, ref.weight.grad)
    assert_bits_equal(net.bias.grad, ref.bias.grad)


# -- initializers -----------------------------------------------------------------------------------

def test_initialize_normal_redraws_with_the_new_sigma():
    net = Dense(64, in_units=400, rng=16)
    before = net.weight.data.copy()
    net.initialize(init.Normal(1.0))
    W = net.weight.data
    assert not np.array_equal(W, before)
    assert abs(W.std() - 1.0) < 0.03
    assert np.all(net.bias.data == 0)


def test_initialize_constant_and_zeros():
    net = Dense(4, in_units=5)
    net.initialize(init.Constant(0.25))
    assert np.all(net.weight.data == np.float32(0.25))
    assert np.all(net.bias.data == 0)
    net.initialize(init.Zeros())
    assert not net.weight.data.any()


def test_initialize_on_a_deferred_layer_applies_at_the_first_call():
    net = Sequential(Flatten(), Dense(3))
    net.initialize(init.Constant(-2.0))
    Y = net(np.ones((2, 1, 2, 2), np.float32))
    assert np.all(net[1].weight.data == -2.0)
    np.testing.assert_array_equal(Y, np.full((2, 3), -8.0, np.float32))


def test_initialize_force_reinit_and_bad_initializer():
    net = Dense(8, in_units=8, rng=17)
    before = net.weight.data.copy()
    net.initialize()  # nothing asked: weights kept
    np.testing.assert_array_equal(net.weight.data, before)
    net.initialize(force_reinit=True)
    assert not np.array_equal(net.weight.data, before)
    with pytest.raises(TypeError, match="init"):
        net.initialize("normal")
    with pytest.raises(ValueError, match="sigma"):
        init.Normal(-0.1)


def test_initializer_objects_directly():
    r = np.random.default_rng(0)
    a = init.Normal(0.5)((300, 300), np.float64, r)
    assert a.shape == (300, 300) and a.dtype == np.float64 and abs(a.std() - 0.5) < 0.01
    c = init.Constant(3)((2, 3), np.float32, r)
    assert c.dtype == np.float32 and np.all(c == 3)
    z = init.Zeros()((4,), np.float64, r)
    assert z.shape == (4,) and not z.any()


_SHAPE = r"must return an array of the shape it is given"


@pytest.mark.parametrize("which, bad, exc, message", [
    ("weight", lambda s, dt, r: np.ones(7, dt), ValueError,
     rf"weight_initializer {_SHAPE}, \(3, 2\), got shape \(7,\)"),
    ("weight", lambda s, dt, r: np.ones(s[::-1], dt), ValueError,
     rf"weight_initializer {_SHAPE}, \(3, 2\), got shape \(2, 3\)"),
    ("weight", lambda s, dt, r: 0.5, ValueError, rf"weight_initializer {_SHAPE}.*got shape \(\)"),
    ("weight", lambda s, dt, r: np.full(s, np.nan), ValueError,
     r"the weight_initializer's result must be finite"),
    ("weight", lambda s, dt, r: np.full(s, 1e300), ValueError,  # inf in the layer's float32
     r"the weight_initializer's result must be finite"),
    ("weight", lambda s, dt, r: np.ones(s, complex), TypeError,
     r"the weight_initializer's result must hold real numbers"),
    ("bias", lambda s, dt, r: np.zeros(1, dt), ValueError,
     rf"bias_initializer {_SHAPE}, \(2,\), got shape \(1,\)"),
])
def test_a_bad_initializer_result_is_refused_and_a_deferred_layer_stays_deferred(which, bad, exc,
                                                                               message):
    """A parameter keeps the shape it is first given: a wrong one would fail every later call."""
    kw = {f"{which}_initializer": bad}
    with pytest.raises(exc, match=message):
        Dense(2, in_units=3, **kw)
    layer = Dense(2, **kw)
    X = np.ones((1, 3), np.float32)
    with pytest.raises(exc, match=message):
        layer(X)
    assert layer.in_units is None and not layer.initialized
    layer.weight_initializer = layer.bias_initializer = init.Constant(0.5)  # fixed: it works
    assert_bits_equal(np.asarray(layer(X)), np.full((1, 2), 2.0, np.float32))
    assert layer.in_units == 3


def test_initialize_with_a_failing_initializer_keeps_weights_and_initializer():
    class SevenOnes(init.Initializer):
        def __call__(self, shape, dtype, rng):
            return np.ones(7, dtype)

    layer = Dense(2, in_units=3, rng=0)
    weights, initializer = layer.weight.data.copy(), layer.weight_initializer
    with pytest.raises(ValueError, match=rf"weight_initializer {_SHAPE}, \(3, 2\)"):
        layer.initialize(SevenOnes())
    assert_bits_equal(layer.weight.data, weights)
    assert layer.weight_initializer is initializer


# -- Sequential ---------------------------------------------------------------------------------------

def test_sequential_basics(rng):
    net = Sequential()
    with pytest.raises(RuntimeError, match="empty"):
        net(np.zeros((1, 2)))
    with pytest.raises(TypeError):
        net.add("not a block")
    net.add(Dense(3, rng=0), Dense(2, rng=1))
    assert len(net) == 2 and isinstance(net[0], Dense)
    X = rng.normal(size=(4, 5)).astype(np.float32)
    Y = net(X)
    W1, b1 = net[0].weight.data.astype(np.float64), net[0].bias.data.astype(np.float64)
    W2, b2 = net[1].weight.data.astype(np.float64), net[1].bias.data.astype(np.float64)
    ref = (X.astype(np.float64) @ W1 + b1) @ W2 + b2
    np.testing.assert_allclose(Y, ref, rtol=1e-5, atol=1e-7)
    assert net.parameters() == [net[0].weight, net[0].bias, net[1].weight, net[1].bias]


def test_the_same_block_twice_in_one_network_is_refused(rng):
    """Used twice, a layer would get only its last use's gradient and be updated twice."""
    d = Dense(3, in_units=3, rng=1)
    twice = r"Dense\(3 -> 3, float32\) would appear twice in this network"
    with pytest.raises(ValueError, match=twice):
        Sequential(d, d)
    with pytest.raises(ValueError, match=twice):
        Sequential(d, Sequential(Flatten(), d))
    net = Sequential(d)
    with pytest.raises(ValueError, match=twice):
        net.add(d)
    with pytest.raises(ValueError, match=r"Sequential\(Dense.*\) would appear twice"):
        net.add(net)  # a network inside itself
    with pytest.raises(TypeError, match="fastshallow blocks, got str"):
        net.add(Dense(2), "not a block")  # refused whole: the good block is not added either
    assert len(net) == 1 and net.parameters() == [d.weight, d.bias]
    # separate networks may share a layer: each call builds its own way back
    shared = Sequential(d, Dense(2, rng=0))
    assert shared.parameters()[:2] == [d.weight, d.bias]
    X = rng.normal(size=(4, 3)).astype(np.float32)
    # a part of a network that later gains a block the network already holds
    inner = Sequential(Flatten())
    outer = Sequential(inner, d)
    inner.add(d)
    assert inner(X).shape == (4, 3)  # on its own, inner is a valid network
    again = r"Dense\(3 -> 3, float32\) appears twice in this network"
    with pytest.raises(ValueError, match=again):
        outer(X)
    with pytest.raises(ValueError, match=again):
        outer.parameters()


def test_an_empty_batch_of_images_gives_an_empty_result():
    X = np.zeros((0, 1, 2, 2), np.float32)
    assert Flatten()(X).shape == (0, 4)
    for net in (Dense(3, in_units=4, rng=0), Sequential(Flatten(), Dense(3, rng=0))):
        Y = net(X)
        assert Y.shape == (0, 3) and Y.dtype == np.float32
        for p in net.parameters():
            p.grad[...] = 1.0
        Y.backward()  # the gradient of an empty sum
        for p in net.parameters():
            assert not p.grad.any()


# -- saving and loading ------------------------------------------------------------------------------

def trained_like(rng, dtype=np.float32):
    net = Sequential(Flatten(), Dense(3, dtype=dtype, rng=0))
    net(np.zeros((1, 1, 2, 2), dtype))
    net[1].weight.set_data(rng.normal(size=(4, 3)))
    net[1].bias.set_data(rng.normal(size=3))
    return net


def test_save_and_load_round_trip(tmp_path, rng, float_dtype):
    net = trained_like(rng, float_dtype)
    p = tmp_path / "model.npz"
    net.save(p)
    back = fs.nn.load(p)
    assert isinstance(back, Sequential) and isinstance(back[0], Flatten)
    assert back[1].dtype == float_dtype and back[1].in_units == 4
    for a, b in zip(net.parameters(), back.parameters()):
        assert_bits_equal(a.data, b.data)
    X = rng.normal(size=(5, 1, 2, 2)).astype(float_dtype)
    assert_bits_equal(np.asarray(net(X)), np.asarray(back(X)))
    assert not [f for f in os.listdir(tmp_path) if f != "model.npz"], "temporary files left"


def test_load_parameters_into_a_fresh_deferred_network(tmp_path, rng):
    net = trained_like(rng)
    p = str(tmp_path / "m.npz")
    net.save(p)
    fresh = Sequential(Flatten(), Dense(3))
    assert fresh.load_parameters(p) is fresh
    for a, b in zip(net.parameters(), fresh.parameters()):
        assert_bits_equal(a.data, b.data)
    with pytest.raises(ValueError, match="different architecture"):
        Sequential(Flatten(), Dense(4)).load_parameters(p)
    with pytest.raises(ValueError, match="different architecture"):
        Dense(3).load_parameters(p)


@pytest.mark.parametrize("target, where", [
    (lambda: Sequential(Dense(3, in_units=4, rng=5), Dense(2, in_units=5, rng=5)),
     r"layer 1, Dense\(5 -> 2, float32\)"),
    (lambda: Sequential(Dense(3, in_units=4, rng=5), Sequential(Dense(2, in_units=5, rng=5))),
     r"layer 1\.0, Dense\(5 -> 2, float32\)"),
    (lambda: Sequential(Dense(3, in_units=4, rng=5),
                        Dense(2, weight_initializer=lambda s, dt, r: np.ones(7, dt))),
     None),
])
def test_load_parameters_that_do_not_fit_change_nothing(tmp_path, target, where):
    path = str(tmp_path / "m.npz")
    saved = Sequential(Dense(3, in_units=4, rng=0), Dense(2, in_units=3, rng=0))
    if isinstance(target()[1], Sequential):
        saved = Sequential(saved[0], Sequential(saved[1]))
    saved.save(path)
    net = target()
    before = [p.data.copy() for p in net.parameters() if p.initialized]
    message = (rf"{re.escape(path)} does not fit {where}: the file's has 3 inputs; nothing was "
               "loaded") if where else r"weight_initializer must return an array of the shape"
    with pytest.raises(ValueError, match=message):
        net.load_parameters(path)
    after = [p.data for p in net.parameters() if p.initialized]
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert_bits_equal(a, b)


@pytest.mark.parametrize("shared", [True, False])
def test_a_refused_load_leaves_the_random_streams_where_they_were(tmp_path, shared):
    """A deferred layer draws its initial weights while the load is planned; when a later
    layer refuses the file, its first call must still draw what it would have drawn (from
    its own generator, or from the library's shared one)."""
    path = str(tmp_path / "m.npz")
    # a file whose layer 1 takes 3 inputs (never run: its sizes need not chain)
    Sequential(Dense(5, in_units=4, rng=0), Dense(2, in_units=3, rng=0)).save(path)

    def make():
        if shared:
            fs.seed(11)
        rng = None if shared else np.random.default_rng(11)
        return Sequential(Dense(5, rng=rng), Dense(2, in_units=5, rng=5))

    twin = make()
    twin(np.zeros((1, 4), np.float32))
    net = make()
    with pytest.raises(ValueError, match="nothing was loaded"):
        net.load_parameters(path)
    net(np.zeros((1, 4), np.float32))
    assert_bits_equal(net[0].weight.data, twin[0].weight.data)


def test_load_parameters_into_a_layer_of_another_input_size_names_it(tmp_path):
    path = str(tmp_path / "m.npz")
    Dense(2, in_units=3, rng=0).save(path)
    with pytest.raises(ValueError, match=r"does not fit this layer, Dense\(5 -> 2, float32\)"):
        Dense(2, in_units=5).load_parameters(path)


def test_saving_a_deferred_network_fails_cleanly(tmp_path):
    p = tmp_path / "m.npz"
    with pytest.raises(RuntimeError, match="not initialized"):
        Dense(3).save(p)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("bad", (np.nan, np.inf, -np.inf))
def test_a_diverged_network_is_not_saved(tmp_path, rng, bad):
    """load refuses NaN and inf parameters, so save refuses to write them: the previous file
    stays, and nothing else is left in the folder."""
    net = trained_like(rng)
    p = tmp_path / "m.npz"
    net.save(p)
    old = p.read_bytes()
    net[1].bias.data[2] = bad
    with pytest.raises(ValueError, match="parameter 1 .*NaN or inf.*nothing was saved"):
        net.save(p)
    assert p.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.npz"]


def test_save_and_load_take_a_bytes_path(tmp_path, rng):
    net = trained_like(rng)
    p = os.fsencode(tmp_path / "m.npz")
    net.save(p)
    for a, b in zip(net.parameters(), fs.nn.load(p).parameters()):
        assert_bits_equal(a.data, b.data)
    assert os.listdir(tmp_path) == ["m.npz"]


def test_interrupted_save_leaves_the_old_file_intact(tmp_path, rng, monkeypatch):
    net = trained_like(rng)
    p = tmp_path / "m.npz"
    net.save(p)
    old = p.read_bytes()
    net[1].weight.set_data(np.zeros((4, 3)))

    def broken_savez(f, *args, **kwargs):
        f.write(b"PK\x03\x04 half of a zip file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        net.save(p)
    assert p.read_bytes() == old
    assert os.listdir(tmp_path) == ["m.npz"], "temporary file left behind"
    monkeypatch.undo()
    back = fs.nn.load(p)
    assert back[1].weight.data.any()


def test_interrupted_first_save_leaves_no_file(tmp_path, rng, monkeypatch):
    net = trained_like(rng)

    def broken_savez(f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(KeyboardInterrupt):
        net.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def test_truncated_file_is_a_value_error_naming_it(tmp_path, rng):
    p = tmp_path / "trunc.npz"
    trained_like(rng).save(p)
    data = p.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 5):
        p.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="trunc.npz"):
            fs.nn.load(p)


def test_corrupted_weights_are_a_value_error_naming_it(tmp_path, rng):
    net = trained_like(rng)
    p = tmp_path / "corrupt.npz"
    net.save(p)
    data = bytearray(p.read_bytes())
    at = bytes(data).find(net[1].weight.data.tobytes())
    assert at > 0, "weights not stored raw in the archive"
    data[at + 5] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt.npz"):
        fs.nn.load(p)


@pytest.mark.parametrize("content", [b"", b"hello, world\n", bytes(range(256)) * 4,
                                     b"\x93NUMPY garbage"])
def test_garbage_file_is_a_value_error_naming_it(tmp_path, content):
    p = tmp_path / "garbage.npz"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="garbage.npz"):
        fs.nn.load(p)


def test_plain_npy_and_foreign_npz_are_refused(tmp_path):
    p = tmp_path / "plain.npy"
    np.save(p, np.zeros(3))
    with pytest.raises(ValueError, match="plain.npy"):
        fs.nn.load(p)
    q = tmp_path / "foreign.npz"
    np.savez(q, a=np.zeros(3))
    with pytest.raises(ValueError, match="foreign.npz"):
        fs.nn.load(q)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fs.nn.load(tmp_path / "nope.npz")


PICKLE_CALLS = []


def _record_unpickling():
    PICKLE_CALLS.append(1)
    return 0


class _Sneaky:
    def __reduce__(self):
        return (_record_unpickling, ())


def test_files_are_loaded_without_pickle(tmp_path, rng):
    net = trained_like(rng)
    p = tmp_path / "evil.npz"
    net.save(p)
    with np.load(p) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["p0"] = np.array([_Sneaky(), 1], dtype=object)
    np.savez(p, **arrays)
    # the file really does carry a pickle that runs code when unpickled...
    with np.load(p, allow_pickle=True) as z:
        z["p0"]
    assert PICKLE_CALLS == [1]
    PICKLE_CALLS.clear()
    # ...and fastshallow refuses it without running it
    with pytest.raises(ValueError, match="evil.npz"):
        fs.nn.load(p)
    assert PICKLE_CALLS == []


def _write_model(path, meta, arrays):
    arrays = dict(arrays)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **arrays)


def _dense_meta(**over):
    model = {"type": "Dense", "units": 1, "in_units": 2, "use_bias": True, "flatten": True,
             "dtype": "float32"}
    model.update(over)
    return {"format": "fastshallow-model-1", "model": model}


GOOD = {"p0": np.zeros((2, 1), np.float32), "p1": np.zeros(1, np.float32)}


def test_handmade_valid_file_loads(tmp_path):
    p = tmp_path / "ok.npz"
    _write_model(p, _dense_meta(), GOOD)
    net = fs.nn.load(p)
    assert isinstance(net, Dense) and net.weight.data.shape == (2, 1)


@pytest.mark.parametrize("case", [
    "wrong_format", "wrong_shape", "wrong_dtype", "nan", "missing_array", "extra_array",
    "unknown_block", "bad_units", "meta_not_json", "meta_is_a_list", "in_units_null",
    "model_not_a_dict",
])
def test_altered_files_are_value_errors_naming_the_file(tmp_path, case):
    p = tmp_path / "altered.npz"
    meta, arrays = _dense_meta(), dict(GOOD)
    if case == "wrong_format":
        meta["format"] = "something-else"
    elif case == "wrong_shape":
        arrays["p0"] = np.zeros((3, 1), np.float32)
    elif case == "wrong_dtype":
        arrays["p0"] = np.zeros((2, 1), np.float64)
    elif case == "nan":
        arrays["p0"] = np.full((2, 1), np.nan, np.float32)
    elif case == "missing_array":
        del arrays["p1"]
    elif case == "extra_array":
        arrays["p2"] = np.zeros(1, np.float32)
    elif case == "unknown_block":
        meta["model"]["type"] = "Conv2D"
    elif case == "bad_units":
        meta["model"]["units"] = -1
    elif case == "meta_is_a_list":
        meta = [1, 2, 3]
    elif case == "in_units_null":
        meta["model"]["in_units"] = None
    elif case == "model_not_a_dict":
        meta["model"] = ["Dense"]
    if case == "meta_not_json":
        arrays["__meta__"] = np.frombuffer(b"{not json", dtype=np.uint8)
        np.savez(p, **arrays)
    else:
        _write_model(p, meta, arrays)
    with pytest.raises(ValueError, match="altered.npz"):
        fs.nn.load(p)
