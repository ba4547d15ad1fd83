"""The scikit-learn estimators: scikit-learn's own estimator checks, labels, dtypes, sample
weights, partial_fit, warm starts, determinism, the closed form, and (marked ``fashion``) the
accuracy on Fashion-MNIST against ``fs.train`` with the same settings."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastshallow as fs  # noqa: E402
from fastshallow.estimators import LinearRegression, SoftmaxRegression  # noqa: E402

from conftest import assert_same_model, learned  # noqa: E402

# No check of scikit-learn's suite is expected to fail for these estimators; a check that ever
# must be would be listed here (and in the estimator's docstring) with the reason.
EXPECTED_FAILED_CHECKS: dict = {}


@parametrize_with_checks(
    [SoftmaxRegression(), LinearRegression(), LinearRegression(solver="closed_form")],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS.get(type(est).__name__, {}))
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ---- data ------------------------------------------------------------------------------------

def blobs(rng, n=600, k=8, c=3, dtype=np.float64, spread=3.0):
    centers = rng.normal(0, spread, (c, k))
    y = rng.integers(0, c, n)
    X = centers[y] + rng.normal(0, 1, (n, k))
    return X.astype(dtype), y


def regression(rng, n=400, k=5, m=None, dtype=np.float64, noise=0.01):
    X = rng.standard_normal((n, k))
    W = rng.standard_normal((k,) if m is None else (k, m))
    y = X @ W + 0.5 + noise * rng.standard_normal((n,) if m is None else (n, m))
    return X.astype(dtype), y.astype(dtype), W


# ---- labels and dtypes -----------------------------------------------------------------------

@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "emu"]), np.array([-7, 3, 100]),
                                    np.array([2.0, 10.0, 11.0])], ids=["str", "int", "float"])
def test_arbitrary_labels_are_mapped_to_indices(rng, labels):
    X, t = blobs(rng)
    y = labels[t]
    clf = SoftmaxRegression(random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    pred = clf.predict(X)
    assert pred.dtype == y.dtype
    assert set(pred) <= set(labels)
    assert clf.score(X, y) > 0.95
    P = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.classes_[P.argmax(1)], pred)
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(P), atol=1e-10)
    # the same model as one trained on the indices 0..2 directly
    ref = SoftmaxRegression(random_state=0).fit(X, np.searchsorted(np.sort(labels), y))
    np.testing.assert_array_equal(clf.coef_, ref.coef_)


def test_binary_decision_function_is_the_score_difference(rng):
    X, t = blobs(rng, c=2)
    y = np.array(["no", "yes"])[t]
    clf = SoftmaxRegression(random_state=0).fit(X, y)
    assert clf.coef_.shape == (2, X.shape[1])
    d = clf.decision_function(X)
    Z = X @ clf.coef_.T + clf.intercept_
    np.testing.assert_allclose(d, Z[:, 1] - Z[:, 0], rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(clf.classes_[(d > 0).astype(int)], clf.predict(X))


@pytest.mark.parametrize("est", [SoftmaxRegression(random_state=0),
                                 LinearRegression(random_state=0),
                                 LinearRegression(solver="closed_form")], ids=repr)
def test_float32_is_trained_in_float32_and_float64_in_float64(rng, est):
    X, y = blobs(rng) if isinstance(est, SoftmaxRegression) else regression(rng)[:2]
    for dtype in (np.float32, np.float64):
        m = clone(est).fit(X.astype(dtype), y)
        assert m.coef_.dtype == dtype
        out = m.predict_proba(X.astype(dtype)) if isinstance(m, SoftmaxRegression) \
            else m.predict(X.astype(dtype))
        assert out.dtype == dtype
    m = clone(est).fit(X.astype(np.int64), y)  # other numbers: float64
    assert m.coef_.dtype == np.float64


@pytest.mark.parametrize("cls,float_dtype", [
    (SoftmaxRegression, np.dtype(np.float32)), (SoftmaxRegression, np.dtype(np.float64)),
    (LinearRegression, np.dtype(np.float32))], ids=["softmax-f4", "softmax-f8", "linear-f4"])
def test_foreign_byte_order_trains_as_native(rng, cls, float_dtype):
    """'>f4' holds float32 numbers: the same dtype and bits as the native array, for fit,
    partial_fit and predict (validate_data alone would make it float64), and native labels.
    ('>f8' regression targets and features always became float64, so that case is no test.)"""
    X, y = blobs(rng, n=200, dtype=float_dtype) if cls is SoftmaxRegression else \
        regression(rng, n=200, dtype=float_dtype)[:2]
    Xb, yb = X.astype(X.dtype.newbyteorder(">")), y.astype(y.dtype.newbyteorder(">"))
    ref = cls(epochs=2, random_state=0).fit(X, y)
    got = cls(epochs=2, random_state=0).fit(Xb, yb)
    assert got.coef_.dtype == float_dtype
    np.testing.assert_array_equal(got.coef_, ref.coef_)
    assert got.predict(Xb).dtype == ref.predict(X).dtype
    np.testing.assert_array_equal(got.predict(Xb), ref.predict(X))
    kw = {"classes": np.unique(yb)} if cls is SoftmaxRegression else {}
    part = cls(random_state=0).partial_fit(Xb, yb, **kw)
    np.testing.assert_array_equal(part.coef_, cls(random_state=0).partial_fit(X, y, **(
        {"classes": np.unique(y)} if kw else {})).coef_)
    if cls is SoftmaxRegression:
        assert got.classes_.dtype == part.classes_.dtype == ref.classes_.dtype


def test_float32_and_float64_fits_agree(rng):
    X, y = blobs(rng)
    a = SoftmaxRegression(random_state=0).fit(X.astype(np.float32), y)
    b = SoftmaxRegression(random_state=0).fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-3, atol=1e-4)


# ---- what fit computes -----------------------------------------------------------------------

def test_fit_is_the_fused_training_loop(rng):
    """fit == ArrayDataset + DataLoader + Dense + loss + SGD through fs.train_epoch(fused=True),
    bit for bit, with the generator seeded by random_state drawing the weights then the
    permutations."""
    X, y = blobs(rng, n=1000, dtype=np.float32)
    est = SoftmaxRegression(lr=0.2, batch_size=64, epochs=3, momentum=0.5, weight_decay=1e-3,
                            random_state=7).fit(X, y)
    g = np.random.default_rng(7)
    net = fs.nn.Dense(3, in_units=X.shape[1], dtype=np.float32, rng=g)
    loader = fs.DataLoader(fs.ArrayDataset(X, y), 64, shuffle=True, seed=g)
    opt = fs.optim.SGD(net.parameters(), lr=0.2, momentum=0.5, weight_decay=1e-3)
    losses = [fs.train_epoch(net, loader, fs.losses.SoftmaxCrossEntropyLoss(), opt,
                             fused=True)[0] for _ in range(3)]
    np.testing.assert_array_equal(est.coef_, net.weight.data.T)
    np.testing.assert_array_equal(est.intercept_, net.bias.data)
    np.testing.assert_allclose(est.loss_curve_, losses, rtol=1e-12)
    assert est.n_iter_ == 3


def test_same_seed_same_bits_for_any_thread_count(rng):
    X, y = blobs(rng, n=3000, k=40, dtype=np.float32)
    a = SoftmaxRegression(random_state=3, num_threads=1).fit(X, y)
    b = SoftmaxRegression(random_state=3, num_threads=2).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    c = SoftmaxRegression(random_state=4).fit(X, y)
    assert not np.array_equal(a.coef_, c.coef_)


def test_linear_regression_sgd_recovers_the_weights(rng):
    X, y, W = regression(rng, n=2000)
    reg = LinearRegression(lr=0.05, batch_size=16, epochs=5, random_state=0).fit(X, y)
    np.testing.assert_allclose(reg.coef_, W, atol=2e-3)
    assert abs(reg.intercept_ - 0.5) < 2e-3
    assert reg.coef_.shape == (5,) and np.ndim(reg.intercept_) == 0
    assert reg.score(X, y) > 0.9999


def test_multi_output_regression(rng):
    X, Y, W = regression(rng, n=2000, m=3)
    cf = LinearRegression(solver="closed_form").fit(X, Y)
    w, b = fs.least_squares(X, Y)
    np.testing.assert_allclose(cf.coef_, w.T, rtol=1e-10)
    np.testing.assert_allclose(cf.intercept_, b, rtol=1e-10)
    sgd = LinearRegression(lr=0.1, batch_size=16, epochs=8, random_state=0).fit(X, Y)
    assert sgd.coef_.shape == (3, 5) and sgd.intercept_.shape == (3,)
    assert sgd.predict(X).shape == (2000, 3)
    np.testing.assert_allclose(sgd.coef_, W.T, atol=5e-3)


def test_closed_form_ridge_is_the_minimum_sgd_converges_to(rng):
    """With weight decay, the closed form solves the SGD objective (intercept penalized too):
    full-batch gradient descent run long enough lands on it."""
    X, y, _ = regression(rng, n=200, k=4, noise=0.3)
    cf = LinearRegression(solver="closed_form", weight_decay=0.05).fit(X, y)
    gd = LinearRegression(lr=0.3, batch_size=200, epochs=600, weight_decay=0.05,
                          random_state=0).fit(X, y)
    np.testing.assert_allclose(gd.coef_, cf.coef_, atol=1e-9)
    assert abs(gd.intercept_ - cf.intercept_) < 1e-9
    assert np.linalg.norm(cf.coef_) < np.linalg.norm(fs.least_squares(X, y)[0])


def test_divergence_is_reported(rng):
    X, y, _ = regression(rng)
    with pytest.raises(fs.TrainingDiverged, match="learning rate"):
        LinearRegression(lr=1e4, random_state=0).fit(X * 100, y)
    with pytest.raises(fs.TrainingDiverged):
        LinearRegression(lr=1e4, random_state=0).fit(X * 100, y, sample_weight=np.ones(len(y)))


# ---- sample_weight ---------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: SoftmaxRegression(batch_size=10_000, epochs=20, momentum=0.5, weight_decay=1e-3,
                              random_state=0),
    lambda: LinearRegression(batch_size=10_000, epochs=20, momentum=0.5, weight_decay=1e-3,
                             random_state=0),
    lambda: LinearRegression(solver="closed_form"),
    lambda: LinearRegression(solver="closed_form", weight_decay=0.1),
], ids=["softmax-sgd", "linear-sgd", "closed-form", "closed-form-ridge"])
@pytest.mark.parametrize("n,k", [(60, 5), (12, 30)], ids=["tall", "wide"])
def test_integer_weights_equal_repeated_rows(rng, make, n, k):
    """Weights 0..3 give the model of the data with each row repeated that many times (for
    SGD on full batches, where the update does not depend on how rows fall into batches)."""
    X = rng.standard_normal((n, k))
    if isinstance(make(), SoftmaxRegression):
        y = rng.integers(0, 3, n)
        y[:3] = [0, 1, 2]
    else:
        y = X @ rng.standard_normal(k) + rng.normal(0, 0.1, n)
    w = rng.integers(0, 4, n)
    w[:3] = 1
    weighted = make().fit(X, y, sample_weight=w)
    repeated = make().fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(weighted.intercept_, repeated.intercept_, rtol=1e-9,
                               atol=1e-11)
    assert weighted.score(X, y, sample_weight=w) == pytest.approx(
        repeated.score(np.repeat(X, w, axis=0), np.repeat(y, w)))


@pytest.mark.parametrize("cls", [SoftmaxRegression, LinearRegression])
def test_weighted_minibatch_loop_matches_the_fused_path(rng, cls, float_dtype):
    """Unit weights through the per-minibatch kernel loop give what the fused kernels give."""
    X, y = blobs(rng, n=700, dtype=float_dtype) if cls is SoftmaxRegression else \
        regression(rng, n=700, dtype=float_dtype)[:2]
    kw = dict(batch_size=32, epochs=3, momentum=0.9, lr=0.05, weight_decay=1e-4,
              schedule="cosine", random_state=1)
    fused = cls(**kw).fit(X, y)
    loop = cls(**kw).fit(X, y, sample_weight=np.full(len(y), 2.5))
    tol = dict(rtol=1e-5, atol=1e-6) if float_dtype == np.float32 else dict(rtol=1e-12,
                                                                            atol=1e-13)
    np.testing.assert_allclose(loop.coef_, fused.coef_, **tol)
    np.testing.assert_allclose(loop.intercept_, fused.intercept_, **tol)
    np.testing.assert_allclose(loop.loss_curve_, fused.loss_curve_, rtol=1e-5)


def test_weights_shift_the_minibatch_fit(rng):
    """On overlapping classes, up-weighting one class makes the minibatch SGD fit predict it
    more often -- about as often as repeating its rows does."""
    X, y = blobs(rng, n=3000, c=2, spread=0.5)
    w = np.where(y == 1, 4.0, 1.0)
    kw = dict(batch_size=64, epochs=10, random_state=0)
    plain = SoftmaxRegression(**kw).fit(X, y).predict(X).mean()
    weighted = SoftmaxRegression(**kw).fit(X, y, sample_weight=w).predict(X).mean()
    reps = np.repeat(np.arange(len(y)), w.astype(int))
    repeated = SoftmaxRegression(**kw).fit(X[reps], y[reps]).predict(X).mean()
    assert weighted > plain + 0.05
    assert abs(weighted - repeated) < 0.03


@pytest.mark.parametrize("make", [
    lambda: SoftmaxRegression(batch_size=8, epochs=3, random_state=0),
    lambda: LinearRegression(batch_size=8, epochs=3, random_state=0),
    lambda: LinearRegression(solver="closed_form"),
], ids=["softmax", "linear-sgd", "closed-form"])
@pytest.mark.parametrize("w", [5e-324, 1e307, np.finfo(np.float64).max])
def test_uniform_weights_of_any_size_are_no_weights(rng, make, w):
    """Weights are relative however large or small: their sum overflowing float64 (or being
    subnormal) must not turn them all into 0 (or inf)."""
    X, y = blobs(rng, n=40, k=3) if isinstance(make(), SoftmaxRegression) else \
        regression(rng, n=40, k=3)[:2]
    ref = make().fit(X, y, sample_weight=np.ones(len(y)))
    got = make().fit(X, y, sample_weight=np.full(len(y), w))
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.intercept_, ref.intercept_, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.loss_curve_, ref.loss_curve_, rtol=1e-12)


@pytest.mark.parametrize("w", [5e-324, 1e307])
def test_score_with_uniform_weights_of_any_size_is_the_plain_score(rng, w):
    X, y = blobs(rng, n=60, spread=0.5)
    Xr, yr, _ = regression(rng, n=60, noise=0.5)
    for est, XX, yy in ((SoftmaxRegression(random_state=0).fit(X, y), X, y),
                        (LinearRegression(random_state=0).fit(Xr, yr), Xr, yr)):
        plain = est.score(XX, yy)
        assert 0 < plain < 1
        assert est.score(XX, yy, sample_weight=np.full(len(yy), w)) == pytest.approx(plain)


def test_bad_sample_weight(rng):
    X, y = blobs(rng, n=50)
    est = SoftmaxRegression()
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        est.fit(X, y, sample_weight=-np.ones(50))
    with pytest.raises(ValueError, match="positive sum"):
        est.fit(X, y, sample_weight=np.zeros(50))
    with pytest.raises(ValueError, match="50 weights"):
        est.fit(X, y, sample_weight=np.ones(49))
    with pytest.raises(ValueError, match="finite"):
        est.fit(X, y, sample_weight=np.full(50, np.nan))
    with pytest.raises(TypeError):
        est.fit(X, y, sample_weight=np.array(["a"] * 50))


# ---- partial_fit, warm_start, hyper-parameters -----------------------------------------------

def test_partial_fit_needs_classes_first_and_keeps_them(rng):
    X, y = blobs(rng)
    clf = SoftmaxRegression(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2, 3])  # a class not seen yet is fine
    assert clf.classes_.tolist() == [0, 1, 2, 3] and clf.n_iter_ == 1
    for _ in range(5):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 6 and clf.score(X, y) > 0.95
    assert clf.loss_curve_[-1] < clf.loss_curve_[1]
    with pytest.raises(ValueError, match="not the same as on the first call"):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(X, np.full(len(y), 9))
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :3], y)


def test_partial_fit_epochs_equal_fit(rng):
    """fit(X, y) with epochs=E is E calls of partial_fit on the same data (same seed)."""
    X, y = blobs(rng, dtype=np.float32)
    a = SoftmaxRegression(epochs=4, momentum=0.9, random_state=5).fit(X, y)
    b = SoftmaxRegression(momentum=0.9, random_state=5)
    for _ in range(4):
        b.partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_array_equal(a.coef_, b.coef_)
    r = LinearRegression(epochs=3, random_state=5)
    Xr, yr, _ = regression(rng)
    a = clone(r).fit(Xr, yr)
    for _ in range(3):
        r.partial_fit(Xr, yr)
    np.testing.assert_array_equal(a.coef_, r.coef_)


@pytest.mark.parametrize("param, value", [("lr", 1e-12), ("weight_decay", 1e3)])
def test_partial_fit_follows_set_params(rng, param, value):
    """A setting changed between partial_fit calls applies to the next call, as in
    scikit-learn: a learning rate of 1e-12 leaves the model where it was, a large weight decay
    pulls it far (each against a copy trained on with the old setting)."""
    X, y = blobs(rng)
    clf = SoftmaxRegression(random_state=0).partial_fit(X, y, classes=np.unique(y))
    same = SoftmaxRegression(random_state=0).partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_array_equal(same.coef_, clf.coef_)
    before = clf.coef_.copy()
    clf.set_params(**{param: value}).partial_fit(X, y)
    same.partial_fit(X, y)
    moved, moved_old = np.abs(clf.coef_ - before).max(), np.abs(same.coef_ - before).max()
    if param == "lr":
        assert moved < 1e-9 < moved_old
    else:  # an update with a decay of 1e3 at lr 0.1 flips and grows the weights
        assert moved > 10 * moved_old


def test_weighted_fit_reports_a_last_update_that_diverges(rng):
    """One minibatch, weighted: its loss is finite, the update it makes is not, and nothing
    later shows it -- but the fit says so, and leaves the estimator as it was."""
    X = rng.normal(size=(20, 3)) * 1e6
    y = X @ np.array([1.0, 2.0, 3.0])
    reg = LinearRegression(lr=1e300, batch_size=64, epochs=1, random_state=0)
    with pytest.raises(fs.TrainingDiverged, match="epoch 1, minibatch 1, the epoch's last"):
        reg.fit(X, y, sample_weight=np.ones(20))
    assert not hasattr(reg, "coef_")


def test_partial_fit_only_for_sgd():
    assert hasattr(LinearRegression(), "partial_fit")
    assert not hasattr(LinearRegression(solver="closed_form"), "partial_fit")


def test_partial_fit_converts_to_the_model_dtype(rng):
    X, y = blobs(rng)
    clf = SoftmaxRegression(random_state=0).partial_fit(X.astype(np.float32), y,
                                                        classes=[0, 1, 2])
    clf.partial_fit(X, y)
    assert clf.coef_.dtype == np.float32


def test_warm_start_continues_from_the_current_solution(rng):
    X, y = blobs(rng, n=2000, c=4, spread=0.7)
    cold = SoftmaxRegression(epochs=2, random_state=0).fit(X, y)
    warm = SoftmaxRegression(epochs=2, random_state=0, warm_start=True).fit(X, y)
    np.testing.assert_array_equal(cold.coef_, warm.coef_)  # the first fit is the same
    first_loss = warm.loss_curve_[0]
    warm.fit(X, y)
    assert warm.loss_curve_[0] < first_loss  # started where it stopped, not from scratch
    cold.fit(X, y)
    assert cold.loss_curve_[0] == pytest.approx(first_loss)
    with pytest.raises(ValueError, match="classes"):
        warm.fit(X, np.where(y == 3, 2, y))
    # coef_ is the truth: a hand-set coef_ is where a warm start continues from
    warm.coef_ = np.zeros_like(warm.coef_)
    warm.intercept_ = np.zeros_like(warm.intercept_)
    warm.set_params(epochs=1).fit(X, y)
    assert warm.loss_curve_[0] > cold.loss_curve_[-1]


@pytest.mark.parametrize("params,match", [
    (dict(lr=0), "lr"), (dict(lr=float("nan")), "lr"), (dict(batch_size=0), "batch_size"),
    (dict(epochs=0), "epochs"), (dict(momentum=1.0), "momentum"),
    (dict(weight_decay=-1), "weight_decay"), (dict(schedule="linear"), "schedule"),
    (dict(num_threads=0), "num_threads"), (dict(random_state=-1), "random_state"),
])
def test_bad_hyper_parameters_are_refused_at_fit(rng, params, match):
    X, y = blobs(rng, n=30)
    est = SoftmaxRegression(**params)  # accepted by __init__, as scikit-learn requires
    with pytest.raises((ValueError, TypeError), match=match):
        est.fit(X, y)


@pytest.mark.parametrize("cls,call,match", [
    (SoftmaxRegression, lambda m, X, y: m.fit(X[:, :5], np.where(y == 0, 7, y),
                                              sample_weight=np.ones(len(y) - 1)), "100 weights"),
    (SoftmaxRegression, lambda m, X, y: m.fit(X[:, :5], y, sample_weight=-np.ones(len(y))),
     ">= 0"),
    (SoftmaxRegression, lambda m, X, y: m.set_params(num_threads=5000).fit(X, y),
     "num_threads"),
    (LinearRegression, lambda m, X, y: m.fit(X, np.c_[y, y], sample_weight=np.ones(len(y) - 1)),
     "100 weights"),
    (LinearRegression, lambda m, X, y: m.set_params(solver="closed_form").fit(
        X[:, :2], y, sample_weight=[np.nan] * len(y)), "finite"),
], ids=["softmax-short-weights", "softmax-negative-weights", "softmax-num_threads",
        "linear-short-weights", "closed-form-nan-weights"])
def test_refused_calls_leave_a_fitted_model_as_it_was(rng, cls, call, match):
    """Before, these changed n_features_in_, classes_, the target shape or the weights
    themselves, and then raised: a model that predicted wrong or not at all."""
    X, y = blobs(rng, n=100) if cls is SoftmaxRegression else regression(rng, n=100)[:2]
    model = cls(epochs=2, random_state=0).fit(X, y)
    before, pred = learned(model), model.predict(X)
    with pytest.raises(ValueError, match=match):
        call(model, X, y)
    model.set_params(num_threads=None, **({"solver": "sgd"} if cls is LinearRegression else {}))
    assert_same_model(model, before)
    np.testing.assert_array_equal(model.predict(X), pred)


def test_a_failed_call_leaves_the_model_as_it_was(rng):
    """TrainingDiverged in the middle of partial_fit: the layer, the optimizer (momentum, step
    count) and the shuffling generator are all put back, so that the next call continues as
    if the failed one had never been made.  A first fit that fails leaves no model."""
    X, y = blobs(rng, n=300)
    est = SoftmaxRegression(batch_size=32, momentum=0.9, random_state=0)
    est.partial_fit(X, y, classes=[0, 1, 2])
    twin, before = copy.deepcopy(est), learned(est)
    with pytest.raises(fs.TrainingDiverged):  # confident and wrong: the steps overflow
        est.partial_fit(X * 1e300, rng.permutation(y))
    assert_same_model(est, before)
    np.testing.assert_array_equal(est.partial_fit(X, y).coef_, twin.partial_fit(X, y).coef_)
    Xr, yr, _ = regression(rng)
    reg = LinearRegression(random_state=0)
    with pytest.raises(fs.TrainingDiverged):
        reg.fit(Xr * 1e100, yr)
    assert learned(reg) == {}
    with pytest.raises(NotFittedError):
        reg.predict(Xr)


def test_bad_solver(rng):
    X, y, _ = regression(rng, n=30)
    with pytest.raises(ValueError, match="solver"):
        LinearRegression(solver="normal").fit(X, y)


def test_schedules(rng):
    X, y = blobs(rng)
    SoftmaxRegression(schedule="cosine", lr=0.5, random_state=0).fit(X, y)
    est = SoftmaxRegression(schedule=fs.optim.StepSchedule(5, 0.5), random_state=0)
    est.partial_fit(X, y, classes=[0, 1, 2])
    assert est._opt.schedule is not est.schedule  # the estimator's parameter is not mutated
    with pytest.raises(ValueError, match="cosine"):
        SoftmaxRegression(schedule="cosine").partial_fit(X, y, classes=[0, 1, 2])


@pytest.mark.parametrize("make", [lambda: SoftmaxRegression(schedule="cosine", random_state=0),
                                  lambda: LinearRegression(schedule="cosine", random_state=0)],
                         ids=["softmax", "linear"])
def test_partial_fit_after_a_decayed_schedule_says_so_and_follows_set_params(rng, make):
    """After a cosine fit every further step has rate 0: partial_fit says so rather than
    change nothing, and leaves the model as it was; a schedule set with set_params applies to
    the next call, its steps counted from there."""
    est = make()
    X, y = blobs(rng) if isinstance(est, SoftmaxRegression) else regression(rng, n=600)[:2]
    est.fit(X, y)  # 10 epochs of 3 steps
    before = learned(est)
    with pytest.raises(ValueError, match=r"partial_fit would not change the model: the "
                                         r"learning-rate schedule CosineSchedule\(total_steps=30"
                                         r".*set_params\(schedule=None\)"):
        est.partial_fit(X, y)
    assert_same_model(est, before)
    est.set_params(schedule=None).partial_fit(X, y)
    assert isinstance(est._opt.schedule, fs.optim.ConstantSchedule)
    assert est._opt.num_steps == 3 and est.n_iter_ == 11
    assert np.abs(est.coef_ - before["coef_"]).max() > 1e-4  # it trained
    with pytest.raises(ValueError, match="only fit knows"):  # 'cosine' needs fit's length
        est.set_params(schedule="cosine").partial_fit(X, y)


def test_an_estimator_pickled_before_the_schedule_was_recorded_follows_set_params(rng):
    """A fitted estimator pickled by an earlier version has no record of the schedule its
    optimizer was made from: it is the `schedule` it was pickled with, so set_params still
    takes effect (as the refusal's message tells the user to do)."""
    import pickle

    X, y = blobs(rng)
    est = SoftmaxRegression(schedule="cosine", random_state=0).fit(X, y)
    del est._schedule_from  # as pickled before it existed
    est = pickle.loads(pickle.dumps(est))
    with pytest.raises(ValueError, match="partial_fit would not change the model"):
        est.partial_fit(X, y)
    before = learned(est)
    est.set_params(schedule=None).partial_fit(X, y)
    assert isinstance(est._opt.schedule, fs.optim.ConstantSchedule)
    assert np.abs(est.coef_ - before["coef_"]).max() > 1e-4


def test_a_stream_past_the_end_of_its_schedule_is_refused(rng):
    """CosineSchedule(total_steps=4) over calls of 3 steps each: the second call ends it (its
    last two steps at rate 0, as the schedule says), the third would only take steps at rate
    0 and is refused; a new schedule set for the rest of the stream starts at its step 0."""
    X, y = blobs(rng, n=600)
    est = SoftmaxRegression(schedule=fs.optim.CosineSchedule(4), random_state=0)
    est.partial_fit(X, y, classes=[0, 1, 2]).partial_fit(X, y)
    assert est._opt.num_steps == 6
    before = learned(est)
    with pytest.raises(ValueError, match=r"CosineSchedule\(total_steps=4, final_factor=0.0, "
                                         r"warmup_steps=0\) gives rate 0 to all of this call's "
                                         r"3 steps \(steps 6 to 8\)"):
        est.partial_fit(X, y)
    assert_same_model(est, before)
    est.set_params(schedule=fs.optim.StepSchedule(2, 0.5)).partial_fit(X, y)
    assert est._opt.num_steps == 3 and est._opt.learning_rate == pytest.approx(0.1 * 0.5)
    assert np.abs(est.coef_ - before["coef_"]).max() > 1e-4


def test_a_rate_that_is_zero_in_the_models_dtype_is_refused(rng):
    """lr=1e-46 is 0 in float32: fit 'trained' with constant losses, and partial_fit blamed
    the schedule."""
    X, y = blobs(rng, n=100)
    est = SoftmaxRegression(lr=1e-46, random_state=0)
    with pytest.raises(ValueError, match=r"lr=1e-46 is 0 in float32, the model's dtype"):
        est.fit(X.astype(np.float32), y)
    assert not hasattr(est, "coef_")
    est.fit(X.astype(np.float64), y)  # a float64 number
    fresh = SoftmaxRegression(lr=1e-46)
    with pytest.raises(ValueError, match=r"lr=1e-46 is 0 in float32"):
        fresh.partial_fit(X.astype(np.float32), y, classes=[0, 1, 2])
    assert not hasattr(fresh, "coef_")
    # a rate infinite in float32 is the optimizer's to refuse, without NumPy's cast warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"at most 3.40282e\+38 for float32"):
            SoftmaxRegression(lr=1e39).fit(X.astype(np.float32), y)


def test_string_regression_targets_are_refused_naming_y(rng):
    X, _, _ = regression(rng, n=10)
    with pytest.raises(ValueError, match="y must hold numbers .*could not convert string"):
        LinearRegression().fit(X, np.array(["a"] * 10))
    # as in scikit-learn, strings that hold numbers are numbers
    got = LinearRegression(random_state=0).fit(X, np.array(["1.5"] * 10))
    np.testing.assert_array_equal(got.coef_, LinearRegression(random_state=0).fit(
        X, np.full(10, 1.5)).coef_)


def test_random_state_kinds(rng):
    X, y = blobs(rng, n=200)
    a = SoftmaxRegression(random_state=np.random.RandomState(0)).fit(X, y)
    b = SoftmaxRegression(random_state=np.random.default_rng(0)).fit(X, y)
    c = SoftmaxRegression(random_state=0).fit(X, y)
    np.testing.assert_array_equal(b.coef_, c.coef_)
    assert a.score(X, y) > 0.9
    with pytest.raises(TypeError, match="random_state"):
        SoftmaxRegression(random_state="zero").fit(X, y)


def test_verbose_prints_epochs(rng, capsys):
    X, y = blobs(rng, n=100)
    SoftmaxRegression(epochs=2, verbose=1, random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert out.count("epoch ") == 2 and "loss" in out


# ---- Fashion-MNIST ---------------------------------------------------------------------------

def fs_train_accuracy(seed, lr, momentum=0.0, cosine=False):
    """fs.train with the book's pipeline (uint8 loader, Flatten + Dense(10))."""
    fs.seed(seed)
    train_iter, test_iter = fs.load_data_fashion_mnist(256, seed=seed, download=False)
    net = fs.nn.Sequential(fs.nn.Flatten(), fs.nn.Dense(10))
    sched = fs.optim.CosineSchedule(10 * len(train_iter)) if cosine else None
    trainer = fs.optim.SGD(net.parameters(), lr=lr, momentum=momentum, schedule=sched)
    hist = fs.train(net, train_iter, test_iter, fs.losses.SoftmaxCrossEntropyLoss(), 10,
                    trainer, verbose=False)
    assert hist.fused
    return hist.test_acc[-1]


@pytest.mark.fashion
def test_fashion_mnist_recommended_recipe_matches_fs_train(fashion_rows):
    Xtr, ytr, Xte, yte = fashion_rows
    clf = SoftmaxRegression(lr=0.05, momentum=0.9, schedule="cosine", random_state=0)
    acc = clf.fit(Xtr, ytr).score(Xte, yte)
    ref = fs_train_accuracy(0, 0.05, 0.9, cosine=True)
    assert acc >= 0.83 and ref >= 0.83, (acc, ref)
    assert abs(acc - ref) <= 0.01, (acc, ref)
    assert clf.coef_.dtype == np.float32 and clf.n_iter_ == 10


@pytest.mark.fashion
def test_fashion_mnist_book_settings_match_fs_train(fashion_rows):
    """The defaults are the book's (batch 256, lr 0.1, 10 epochs, constant rate), whose last
    iterate is noisy (+-0.005 from seed to seed): compared as means over three seeds."""
    Xtr, ytr, Xte, yte = fashion_rows
    accs = [SoftmaxRegression(random_state=s).fit(Xtr, ytr).score(Xte, yte) for s in (0, 1, 2)]
    refs = [fs_train_accuracy(s, 0.1) for s in (0, 1, 2)]
    assert np.mean(accs) >= 0.825 and abs(np.mean(accs) - np.mean(refs)) <= 0.01, (accs, refs)
