"""SGD (plain, momentum, weight decay) against NumPy formulas; learning-rate schedules; argument
checks."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

import fastshallow as fs
from fastshallow.autograd import Parameter
from fastshallow.optim import SGD, ConstantSchedule, CosineSchedule, StepSchedule

from conftest import assert_close


def make_params(rng, dtype=np.float64, shapes=((4, 3), (3,))):
    ps = []
    for i, s in enumerate(shapes):
        p = Parameter(rng.normal(size=s).astype(dtype), name=f"p{i}")
        p.grad[...] = rng.normal(size=s)
        ps.append(p)
    return ps


# -- one step -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_one_step_is_the_formula(rng, float_dtype, wd):
    ps = make_params(rng, float_dtype)
    lr, bs = 0.3, 7
    before = [p.data.astype(np.float64) for p in ps]
    grads = [p.grad.copy() for p in ps]
    SGD(ps, lr=lr, weight_decay=wd).step(batch_size=bs)
    for p, p0, g in zip(ps, before, grads):
        assert p.data.dtype == float_dtype
        g64 = g.astype(np.float64)
        ref = p0 - lr * (g64 / bs + wd * p0)
        assert_close(p.data, ref, scale=np.abs(p0) + lr * (np.abs(g64) / bs + wd * np.abs(p0)))
        np.testing.assert_array_equal(p.grad, g)  # the gradient is left alone


def test_step_updates_in_place(rng):
    ps = make_params(rng)
    views = [p.data for p in ps]
    SGD(ps, lr=0.1).step(batch_size=2)
    assert all(v is p.data for v, p in zip(views, ps))


def test_sgd_accepts_a_network(rng):
    net = fs.nn.Dense(2, in_units=3, dtype=np.float64, rng=0)
    opt = SGD(net, lr=0.1)
    assert opt.params == net.parameters()


# -- momentum ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_momentum_over_several_steps_matches_numpy_loop(rng, wd):
    ps = make_params(rng)
    mom, lr, bs = 0.9, 0.05, 4
    ref = [p.data.copy() for p in ps]
    vel = [np.zeros_like(r) for r in ref]
    opt = SGD(ps, lr=lr, momentum=mom, weight_decay=wd)
    for _ in range(6):
        for p in ps:
            p.grad[...] = rng.normal(size=p.grad.shape)
        for i, p in enumerate(ps):
            d = p.grad / bs + wd * ref[i]
            vel[i] = mom * vel[i] + d
            ref[i] = ref[i] - lr * vel[i]
        opt.step(batch_size=bs)
    for p, r, v, ov in zip(ps, ref, vel, opt.velocity):
        np.testing.assert_allclose(p.data, r, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ov, v, rtol=1e-12, atol=1e-14)


def test_momentum_differs_from_plain_sgd_after_two_steps(rng):
    a, b = make_params(rng), make_params(rng)
    for p, q in zip(a, b):
        q.set_data(p.data)
        q.grad[...] = p.grad
    plain, mom = SGD(a, lr=0.1), SGD(b, lr=0.1, momentum=0.5)
    plain.step(1)
    mom.step(1)
    np.testing.assert_allclose(a[0].data, b[0].data, rtol=1e-14)  # first step: same
    plain.step(1)
    mom.step(1)
    assert not np.allclose(a[0].data, b[0].data)
    assert plain.velocity is None


# -- schedules ------------------------------------------------------------------------------------------

def test_constant_schedule():
    s = ConstantSchedule()
    assert [s.factor(i) for i in (0, 1, 1000)] == [1.0, 1.0, 1.0]
    np.testing.assert_array_equal(s.factors(5, 4), np.ones(4))


@pytest.mark.parametrize("final", [0.0, 0.1])
def test_cosine_endpoints_midpoint_and_monotonicity(final):
    total = 50
    s = CosineSchedule(total, final_factor=final)
    assert s.factor(0) == pytest.approx(1.0, abs=1e-15)
    assert s.factor(total) == pytest.approx(final, abs=1e-15)
    assert s.factor(total + 100) == pytest.approx(final, abs=1e-15)
    assert s.factor(total // 2) == pytest.approx(final + (1 - final) / 2, abs=1e-12)
    f = s.factors(0, total + 1)
    assert f.shape == (total + 1,)
    assert np.all(np.diff(f) < 0), "strictly decreasing over the schedule"
    assert f.min() >= final - 1e-15 and f.max() <= 1.0
    np.testing.assert_allclose(
        f, final + (1 - final) * 0.5 * (1 + np.cos(np.pi * np.arange(total + 1) / total)),
        rtol=1e-12, atol=1e-15)


def test_cosine_warmup_is_linear_then_decays():
    total, warm = 40, 8
    s = CosineSchedule(total, warmup_steps=warm)
    w = s.factors(0, warm)
    np.testing.assert_allclose(w, np.arange(1, warm + 1) / warm, rtol=1e-15)
    assert np.all(np.diff(w) > 0) and w[0] > 0
    rest = s.factors(warm, total - warm + 1)
    assert rest[0] == pytest.approx(1.0)
    assert np.all(np.diff(rest) < 0)
    assert s.factor(total) == pytest.approx(0.0, abs=1e-15)
    assert max(s.factors(0, total + 5)) <= 1.0


def test_step_schedule_drops():
    s = StepSchedule(3, gamma=0.5)
    got = s.factors(0, 10)
    np.testing.assert_allclose(got, [1, 1, 1, .5, .5, .5, .25, .25, .25, .125], rtol=0)
    np.testing.assert_allclose(s.factors(4, 3), got[4:7], rtol=0)


@pytest.mark.parametrize("make, name", [
    (lambda: CosineSchedule(0), "total_steps"),
    (lambda: CosineSchedule(10, warmup_steps=10), "warmup_steps"),
    (lambda: CosineSchedule(10, warmup_steps=-1), "warmup_steps"),
    (lambda: CosineSchedule(10, final_factor=1.5), "final_factor"),
    (lambda: StepSchedule(0), "step_size"),
    (lambda: StepSchedule(2, gamma=0.0), "gamma"),
    (lambda: StepSchedule(2, gamma=2.0), "gamma"),
    (lambda: StepSchedule(2, gamma=float("nan")), "gamma"),
])
def test_bad_schedule_arguments(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_learning_rate_follows_the_schedule(rng):
    p = Parameter(np.zeros(3), name="p")
    opt = SGD([p], lr=0.4, schedule=StepSchedule(2, gamma=0.5))
    expected = [0.4, 0.4, 0.2, 0.2, 0.1]
    for k, lr in enumerate(expected):
        assert opt.learning_rate == pytest.approx(lr, rel=1e-15)
        assert opt.num_steps == k
        before = p.data.copy()
        p.grad[...] = 1.0
        opt.step(batch_size=1)
        # the step used exactly that learning rate
        np.testing.assert_allclose(before - p.data, lr, rtol=1e-14)


@pytest.mark.parametrize("attr, bad", [
    ("lr", -0.5), ("lr", 0.0), ("lr", float("nan")), ("lr", float("inf")), ("lr", "0.1"),
    ("momentum", 1.5), ("momentum", -0.5), ("momentum", 1.0), ("weight_decay", -1.0),
    ("weight_decay", float("inf")), ("schedule", lambda step: 1.0)])
def test_a_hyperparameter_changed_to_a_bad_value_is_refused_when_assigned(attr, bad):
    """As the constructor refuses it (same error): both training paths read these attributes
    at their own times, and neither can undo a step taken with a bad value."""
    with pytest.raises((TypeError, ValueError)) as made:
        SGD([Parameter(np.ones(3))], **{"lr": 0.1, attr: bad})
    p = Parameter(np.ones(3))
    opt = SGD([p], lr=0.1, momentum=0.5, weight_decay=0.01)
    before = getattr(opt, attr)
    with pytest.raises(type(made.value), match=f"^{re.escape(str(made.value))}$"):
        setattr(opt, attr, bad)
    assert getattr(opt, attr) is before
    p.grad[...] = 1.0
    opt.step(1)
    np.testing.assert_allclose(p.data, 1.0 - 0.1 * (1.0 + 0.01))


@pytest.mark.parametrize("factor", [-5.0, float("nan"), float("inf")])
def test_a_schedule_giving_a_bad_rate_is_refused_at_the_step(factor):
    class Bad(fs.optim.Schedule):
        def factor(self, step):
            return factor

    p = Parameter(np.ones(3))
    opt = SGD([p], lr=0.1, schedule=Bad())
    p.grad[...] = 1.0
    with pytest.raises(ValueError, match="learning rate must be a finite number >= 0"):
        opt.step(1)
    np.testing.assert_array_equal(p.data, 1.0)  # untouched
    assert opt.num_steps == 0


@pytest.mark.parametrize("factor", [0.0, 1e-50], ids=["zero", "zero-in-float32"])
def test_a_rate_of_zero_is_a_step_that_changes_no_parameter_on_both_paths(rng, factor):
    """A schedule that has decayed to 0 (CosineSchedule after its end) steps at rate 0: counted,
    the parameters left as they were, on the per-batch loop and the fused path alike -- also
    a rate that is > 0 in float64 but 0 in the float32 the update runs in."""
    X, y = rng.standard_normal((50, 4)).astype(np.float32), rng.integers(0, 3, 50)
    past_the_end = CosineSchedule(1, final_factor=factor)
    velocities = []
    for fused in (True, False):
        net = fs.nn.Dense(3, in_units=4, rng=0)
        W, b = net.weight.data.copy(), net.bias.data.copy()
        opt = SGD(net, lr=0.1, momentum=0.9, schedule=past_the_end)
        opt.num_steps = 1
        fs.train_epoch(net, fs.load_array((X, y), 16, seed=0),
                       fs.losses.SoftmaxCrossEntropyLoss(), opt, fused=fused)
        assert opt.num_steps == 5
        np.testing.assert_array_equal(net.weight.data, W)
        np.testing.assert_array_equal(net.bias.data, b)
        velocities.append(opt.velocity)
    for a, b in zip(*velocities):  # the buffers took in the gradients on both paths alike
        assert np.abs(a).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lr, wd, what", [(1e39, 0.0, "learning rate"),
                                          (0.1, 1e39, "weight_decay")])
def test_a_rate_or_decay_infinite_in_float32_is_refused_before_any_update(lr, wd, what):
    """The update runs in the parameters' dtype: 1e39 is finite in float64, inf in float32."""
    wide, narrow = Parameter(np.ones(3)), Parameter(np.ones(2, np.float32))
    for p in (wide, narrow):
        p.grad[...] = 1.0
    opt = SGD([wide, narrow], lr=lr, weight_decay=wd)
    with pytest.raises(ValueError, match=rf"{what} must be at most 3.40282e\+38 for float32"):
        opt.step(1)
    # checked before the float64 parameter ahead of it was updated
    np.testing.assert_array_equal(wide.data, 1.0)
    np.testing.assert_array_equal(narrow.data, 1.0)
    assert opt.num_steps == 0
    opt.params = [wide]  # float64 alone: a finite rate and decay, so it steps
    opt.step(1)
    assert opt.num_steps == 1


def test_momentum_buffers_must_fit_the_parameters():
    p = Parameter(np.zeros(4, np.float32))
    opt = SGD([p], lr=0.1, momentum=0.9)
    opt.step(1)
    opt.params[0] = Parameter(np.zeros(1 << 16, np.float32))
    with pytest.raises(ValueError, match=r"momentum buffer of 'param' is not a writeable "
                                         r"C-contiguous float32 array of shape \(65536,\)"):
        opt.step(1)
    # nothing is half-updated: a bad buffer behind a good one stops the step before both
    good, new = Parameter(np.ones(3, np.float32)), Parameter(np.ones(5, np.float32))
    opt = SGD([good, Parameter(np.ones(2, np.float32))], lr=0.1, momentum=0.9)
    opt.step(1)
    good.grad[...] = 1.0
    opt.params[1] = new
    with pytest.raises(ValueError, match="momentum buffer"):
        opt.step(1)
    np.testing.assert_array_equal(good.data, 1.0)
    opt.params[1:] = [Parameter(np.ones(2, np.float32)), Parameter(np.zeros(4, np.float32))]
    with pytest.raises(ValueError, match="2 momentum buffers for 3 parameters"):
        opt.step(1)


def _read_only(v):
    v.flags.writeable = False
    return v


def test_a_read_only_parameter_is_refused_by_the_step_as_by_fs_sgd():
    p = Parameter(np.ones(3))
    p.data.flags.writeable = False
    p.grad[...] = 1.0
    with pytest.raises(ValueError, match="parameter 'param' is read-only"):
        SGD([p], lr=0.5).step(1)
    np.testing.assert_array_equal(p.data, 1.0)


@pytest.mark.parametrize("make", [
    lambda v: v[::-1],  # written past its end before this was checked
    lambda v: np.repeat(v, 2, axis=0)[::2],
    np.asfortranarray,
    _read_only,
    lambda v: v.astype(np.float64),
], ids=["reversed", "strided", "fortran", "read-only", "float64"])
def test_momentum_buffers_put_in_by_hand_are_checked_like_the_parameters(make):
    """The velocity list is public: a buffer put there must be a writeable C-contiguous array
    of its parameter's shape and dtype, and nothing is updated when one is not (the fused path:
    test_training_guards)."""
    W = Parameter(np.ones((4, 3), np.float32))
    opt = SGD([W], lr=0.1, momentum=0.9)
    opt.velocity[0] = make(np.zeros((4, 3), np.float32))
    W.grad[...] = 1.0
    with pytest.raises(ValueError, match="momentum buffer of 'param' is not a writeable"):
        opt.step(1)
    np.testing.assert_array_equal(W.data, 1.0)
    assert opt.num_steps == 0


@pytest.mark.parametrize("buffer, message", [
    ("data", r"parameter 'second' must have dtype float32 or float64, got int64"),
    ("grad", r"the gradient of 'second' has dtype int64, the parameter float64")])
def test_a_buffer_whose_dtype_was_reassigned_is_refused_before_any_update(buffer, message):
    """An array's dtype can be reassigned in place, and the compiled update reads raw memory.
    (int64 has float64's size: unchecked, this gives garbage rather than a crash.)"""
    first, second = Parameter(np.ones(3), name="first"), Parameter(np.ones(2), name="second")
    for p in (first, second):
        p.grad[...] = 1.0
    opt = SGD([first, second], lr=0.5)
    getattr(second, buffer).dtype = np.int64
    with pytest.raises(TypeError, match=message):
        opt.step(1)
    np.testing.assert_array_equal(first.data, 1.0)  # checked before the first update
    assert opt.num_steps == 0
    # float64 again, though not the very same dtype object: it steps
    getattr(second, buffer).dtype = np.dtype(np.float64, metadata={"why": "test"})
    opt.step(1)
    np.testing.assert_array_equal(first.data, 0.5)
    np.testing.assert_array_equal(second.data, 0.5)


def test_a_parameter_resized_in_place_is_refused_before_any_update():
    """ndarray.resize changes an array's size in place; the update reads as many gradient
    elements as the parameter has.  (Shrunk here, so that unchecked it reads too few.)"""
    first, second = Parameter(np.ones(3), name="first"), Parameter(np.ones(4), name="second")
    for p in (first, second):
        p.grad[...] = 1.0
    second.data.resize((2,), refcheck=False)
    with pytest.raises(ValueError, match=r"the gradient of 'second' has shape \(4,\), the "
                                         r"parameter \(2,\)"):
        SGD([first, second], lr=0.5).step(1)
    np.testing.assert_array_equal(first.data, 1.0)


def test_a_subclass_learning_rate_is_used():
    class WarmUp(SGD):
        @property
        def learning_rate(self):
            return self.lr * min(1.0, (self.num_steps + 1) / 10)

    p = Parameter(np.zeros(1))
    opt = WarmUp([p], lr=1.0)
    p.grad[...] = 1.0
    opt.step(1)
    np.testing.assert_allclose(p.data, -0.1)


def test_learning_rate_with_cosine_schedule():
    p = Parameter(np.zeros(2))
    sched = CosineSchedule(10, final_factor=0.1)
    opt = SGD([p], lr=0.2, schedule=sched)
    seen = []
    for _ in range(12):
        seen.append(opt.learning_rate)
        opt.step(1)
    np.testing.assert_allclose(seen, 0.2 * sched.factors(0, 12), rtol=1e-15)
    assert seen[-1] == pytest.approx(0.02)


# -- argument checks --------------------------------------------------------------------------------

@pytest.mark.parametrize("lr, exc", [(0.0, ValueError), (-0.1, ValueError),
                                     (float("nan"), ValueError), (float("inf"), ValueError),
                                     ("0.1", TypeError), (None, TypeError)])
def test_bad_learning_rate(rng, lr, exc):
    with pytest.raises(exc, match="lr"):
        SGD(make_params(rng), lr=lr)


@pytest.mark.parametrize("m", [1.0, 1.5, -0.1, float("nan")])
def test_bad_momentum(rng, m):
    with pytest.raises(ValueError, match="momentum"):
        SGD(make_params(rng), lr=0.1, momentum=m)


@pytest.mark.parametrize("wd", [-1e-3, float("nan"), float("inf")])
def test_bad_weight_decay(rng, wd):
    with pytest.raises(ValueError, match="weight_decay"):
        SGD(make_params(rng), lr=0.1, weight_decay=wd)


@pytest.mark.parametrize("params", [[], (), [np.zeros(3)], "abc", 5, None,
                                    [Parameter(np.zeros(2)), np.zeros(2)]])
def test_bad_params(params):
    with pytest.raises(TypeError, match="params"):
        SGD(params, lr=0.1)


def test_a_parameter_listed_twice_is_refused():
    """Sequential refuses a block added twice for the same reason: updated twice a step."""
    w, b = Parameter(np.ones(2), name="w"), Parameter(np.ones(1), name="b")
    with pytest.raises(ValueError, match="'w' is in params more than once"):
        SGD([w, b, w], lr=0.1)
    net = fs.nn.Dense(2, in_units=3)
    with pytest.raises(ValueError, match="'bias' is in params more than once"):
        SGD(net.parameters() + [net.bias], lr=0.1)


def test_bad_schedule_object(rng):
    with pytest.raises(TypeError, match="schedule"):
        SGD(make_params(rng), lr=0.1, schedule=lambda step: 1.0)


@pytest.mark.parametrize("bs, exc", [(0, ValueError), (-1, ValueError), (2.0, TypeError),
                                     (True, TypeError)])
def test_bad_batch_size_changes_nothing(rng, bs, exc):
    ps = make_params(rng)
    before = [p.data.copy() for p in ps]
    opt = SGD(ps, lr=0.1, momentum=0.9)
    with pytest.raises(exc, match="batch_size"):
        opt.step(batch_size=bs)
    assert opt.num_steps == 0
    for p, b in zip(ps, before):
        np.testing.assert_array_equal(p.data, b)


def test_zero_grad(rng):
    ps = make_params(rng)
    opt = SGD(ps, lr=0.1)
    opt.zero_grad()
    assert all(not p.grad.any() for p in ps)
    before = [p.data.copy() for p in ps]
    opt.step(3)  # zero gradient, no decay: nothing moves
    for p, b in zip(ps, before):
        np.testing.assert_array_equal(p.data, b)


def test_weight_decay_alone_shrinks_geometrically(rng):
    p = Parameter(rng.normal(size=5))
    p0 = p.data.copy()
    opt = SGD([p], lr=0.1, weight_decay=0.5)
    for _ in range(4):
        p.zero_grad()
        opt.step(1)
    np.testing.assert_allclose(p.data, p0 * (1 - 0.1 * 0.5) ** 4, rtol=1e-13)
    assert math.isclose(opt.learning_rate, 0.1)
