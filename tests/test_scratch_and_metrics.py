"""The book's from-scratch names (linreg, squared_loss, sgd, softmax, cross_entropy), metrics and
information-theory quantities, closed-form least squares, Timer / Accumulator, synthetic data,
ArrayDataset and DataLoader."""
from __future__ import annotations

import re
import time
import warnings

import numpy as np
import pytest

import fastshallow as fs
from fastshallow import Parameter
from conftest import assert_bits_equal

TRUE_W = np.array([2, -3.4])
TRUE_B = 4.2


# -- from scratch: linear regression ------------------------------------------------------------------

def test_book_linear_regression_from_scratch(rng):
    X, y = fs.synthetic_data(TRUE_W, TRUE_B, 1000, seed=11)
    lr, num_epochs, batch_size = 0.03, 3, 10
    w = Parameter(rng.normal(0, 0.01, (2, 1)))
    b = Parameter(np.zeros(1))
    data_iter = fs.load_array((X, y), batch_size, seed=12)
    epoch_losses = []
    for _ in range(num_epochs):
        for Xb, yb in data_iter:
            l = fs.squared_loss(fs.linreg(Xb, w, b), yb)
            l.sum().backward()
            fs.sgd([w, b], lr, batch_size)
        epoch_losses.append(float(np.mean(fs.squared_loss(fs.linreg(X, w, b), y))))
    assert np.abs(w.data.reshape(-1) - TRUE_W).max() < 2e-3
    assert abs(float(b.data[0]) - TRUE_B) < 2e-3
    assert epoch_losses[-1] < 1e-4
    assert epoch_losses[0] > epoch_losses[-1]


def test_linreg_and_squared_loss_values_and_gradients(rng):
    X = rng.normal(size=(6, 3))
    w = Parameter(rng.normal(size=(3, 1)))
    b = Parameter(np.array([0.7]))
    y = rng.normal(size=6)
    yhat = fs.linreg(X, w, b)
    assert yhat.shape == (6, 1)
    np.testing.assert_allclose(yhat, X @ w.data + 0.7, rtol=1e-13)
    l = fs.squared_loss(yhat, y)
    assert l.shape == (6, 1)  # elementwise, the book's form
    np.testing.assert_allclose(l, (X @ w.data + 0.7 - y[:, None]) ** 2 / 2, rtol=1e-13)
    l.sum().backward()
    R = X @ w.data + 0.7 - y[:, None]
    np.testing.assert_allclose(w.grad, X.T @ R, rtol=1e-12)
    np.testing.assert_allclose(b.grad, R.sum(0), rtol=1e-12)


def test_squared_loss_takes_one_target_per_row_and_refuses_other_rows(rng):
    yhat = rng.normal(size=(4, 1))
    for y in (rng.normal(size=4), rng.normal(size=(4, 1))):  # the book passes either
        np.testing.assert_array_equal(fs.squared_loss(yhat, y),
                                      (yhat - y.reshape(4, 1)) ** 2 / 2)
        np.testing.assert_array_equal(fs.squared_loss(yhat[:, 0], y),
                                      (yhat[:, 0] - y.reshape(4)) ** 2 / 2)
    # of y_hat's size, but transposed: read in y_hat's shape it pairs other examples' values
    for P, Y in ((np.arange(6.0).reshape(3, 2), np.arange(6.0).reshape(2, 3)),
                 (yhat, yhat.reshape(1, 4))):
        with pytest.raises(ValueError, match=r"y must have one target per prediction, row by "
                                             rf"row: y_hat has shape {re.escape(str(P.shape))}"):
            fs.squared_loss(P, Y)


def test_linreg_with_vector_w_and_scalar_bias_for_several_outputs(rng):
    X = rng.normal(size=(5, 3))
    w = Parameter(rng.normal(size=3))
    b = Parameter(np.array([1.5]))
    out = fs.linreg(X, w, b)
    assert out.shape == (5,)
    np.testing.assert_allclose(out, X @ w.data + 1.5, rtol=1e-13)
    y = rng.normal(size=5)
    fs.squared_loss(out, y).sum().backward()
    np.testing.assert_allclose(w.grad, X.T @ (X @ w.data + 1.5 - y), rtol=1e-12)
    # a single bias shared by several outputs receives the sum of their gradients
    W2 = Parameter(rng.normal(size=(3, 2)))
    b2 = Parameter(np.array([0.5]))
    Y = rng.normal(size=(5, 2))
    fs.squared_loss(fs.linreg(X, W2, b2), Y).sum().backward()
    np.testing.assert_allclose(b2.grad, [(X @ W2.data + 0.5 - Y).sum()], rtol=1e-12)


def test_scratch_sgd_is_the_formula(rng):
    w = Parameter(rng.normal(size=(2, 1)))
    b = Parameter(np.zeros(1))
    w.grad[...] = rng.normal(size=(2, 1))
    b.grad[...] = [3.0]
    w0 = w.data.copy()
    fs.sgd([w, b], 0.03, 10)
    np.testing.assert_allclose(w.data, w0 - 0.03 * w.grad / 10, rtol=1e-14)
    np.testing.assert_allclose(b.data, [-0.03 * 3.0 / 10], rtol=1e-14)
    with pytest.raises(TypeError, match=r"params\[1\]"):
        fs.sgd([w, np.zeros(1)], 0.03, 10)
    with pytest.raises(ValueError, match="lr"):
        fs.sgd([w], -1.0, 10)
    with pytest.raises(ValueError, match="batch_size"):
        fs.sgd([w], 0.1, 0)


def test_scratch_sgd_checks_every_parameter_before_updating_any():
    ok = Parameter(np.ones(3), name="ok")
    ok.grad[...] = 1.0
    with pytest.raises(RuntimeError, match="parameter 'weight' is not initialized yet"):
        fs.sgd([ok, fs.nn.Dense(2).weight], 0.5, 1)
    np.testing.assert_array_equal(ok.data, 1.0)
    bad = Parameter(np.ones(2), name="bad")
    bad.data.dtype = np.int64  # reassigned in place: the update would read it as float64
    with pytest.raises(TypeError, match=r"parameter 'bad' must have dtype float32 or float64, "
                                        r"got int64"):
        fs.sgd([ok, bad], 0.5, 1)
    np.testing.assert_array_equal(ok.data, 1.0)
    frozen = Parameter(np.ones(2), name="frozen")
    frozen.data.flags.writeable = False
    with pytest.raises(ValueError, match=r"parameter 'frozen' is read-only"):
        fs.sgd([ok, frozen], 0.5, 1)
    np.testing.assert_array_equal(ok.data, 1.0)
    fs.sgd([ok], 0.5, 1)
    np.testing.assert_array_equal(ok.data, 0.5)


def test_linreg_bad_arguments(rng):
    w, b = Parameter(np.zeros((2, 1))), Parameter(np.zeros(1))
    with pytest.raises(ValueError, match="2 columns"):
        fs.linreg(np.zeros((4, 3)), w, b)
    with pytest.raises(TypeError, match="w"):
        fs.linreg(np.zeros((4, 2)), np.zeros((2, 1)), b)
    with pytest.raises(ValueError, match="b"):
        fs.linreg(np.zeros((4, 2)), Parameter(np.zeros((2, 3))), Parameter(np.zeros(2)))
    with pytest.raises(ValueError, match="one target per prediction"):
        fs.squared_loss(np.zeros((4, 1)), np.zeros(3))


def test_linreg_refuses_a_0d_w():
    with pytest.raises(ValueError, match=r"w must have shape \(k,\) or \(k, m\) \(one row per "
                                         r"column of X\), got shape \(\)"):
        fs.linreg(np.ones((3, 1)), Parameter(np.float64(2.0)), Parameter(np.zeros(1)))


# -- from scratch: softmax and cross-entropy --------------------------------------------------------

def test_scratch_softmax_rows_sum_to_one(rng, float_dtype):
    X = rng.normal(size=(4, 5)).astype(float_dtype)
    P = fs.softmax(X)
    assert P.shape == (4, 5) and P.dtype == float_dtype
    assert (P > 0).all()
    tol = 1e-6 if float_dtype == np.float32 else 1e-14
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=tol)
    E = np.exp(X.astype(np.float64))
    np.testing.assert_allclose(P, E / E.sum(1, keepdims=True), rtol=tol * 10)
    assert fs.softmax(np.array([[1, 2, 3]])).dtype == np.float32  # integers accepted


def test_scratch_softmax_is_the_naive_one():
    huge = np.array([[100.0, 0.0]], np.float32)
    with np.errstate(all="raise"):  # and it does not warn either
        P = fs.softmax(huge)
    assert np.isnan(P).any()
    assert np.isnan(fs.softmax(np.array([[1000.0, 1.0]]))).any()
    # the library's stable softmax handles the same input
    stable = fs.kernels.softmax(huge)
    assert np.isfinite(stable).all()
    np.testing.assert_allclose(stable, [[1.0, 0.0]], rtol=1e-6, atol=1e-40)


def test_scratch_cross_entropy_picks_the_label_probability():
    y_hat = np.array([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5]])
    y = np.array([0, 2])
    np.testing.assert_allclose(fs.cross_entropy(y_hat, y), [-np.log(0.1), -np.log(0.5)],
                               rtol=1e-15)
    # a probability that underflowed to zero gives inf: the fragility the chapter warns about
    assert np.isinf(fs.cross_entropy(np.array([[1.0, 0.0]]), [1]))[0]
    with pytest.raises(ValueError, match="< 3"):
        fs.cross_entropy(y_hat, [0, 3])
    with pytest.raises(ValueError, match="2 entries"):
        fs.cross_entropy(y_hat, [0])


def test_scratch_cross_entropy_of_softmax_matches_stable_loss(rng):
    Z = rng.normal(size=(7, 4))
    y = rng.integers(0, 4, 7)
    np.testing.assert_allclose(fs.cross_entropy(fs.softmax(Z), y),
                               fs.losses.SoftmaxCrossEntropyLoss()(Z, y), rtol=1e-12)


# -- metrics -----------------------------------------------------------------------------------------

def test_accuracy_counts():
    y_hat = np.array([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5]])
    y = np.array([0, 2])
    assert fs.accuracy(y_hat, y) == 1.0
    assert fs.accuracy(y_hat, y) / len(y) == 0.5
    assert fs.accuracy(np.array([2, 2, 1, 0]), np.array([2, 1, 1, 0])) == 3.0
    assert fs.accuracy(np.array([1, 0]), np.array([1.0, 0.0])) == 2.0


def test_accuracy_refuses_shapes_it_would_flatten():
    with pytest.raises(ValueError, match=r"y_hat must be class scores \(n, classes\) or "
                                         r"labels \(n,\), got shape \(2, 3, 4\)"):
        fs.accuracy(np.zeros((2, 3, 4)), np.zeros(24))
    for y in (np.zeros((2, 2)), np.zeros((1, 4)), np.zeros((4, 1, 1))):
        with pytest.raises(ValueError, match=rf"y must hold one label per row, shape \(n,\) "
                                             rf"or \(n, 1\), got shape {re.escape(str(y.shape))}"):
            fs.accuracy(np.zeros((4, 3)), y)
    # one label per row, as a column too; label values that are no class are misses
    S = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert fs.accuracy(S, np.array([[1], [0], [0], [0]])) == 3.0
    assert fs.accuracy(S, np.array([1.0, -0.0, 1.5, -1])) == 2.0


def test_accuracy_on_random_scores(rng):
    S = rng.normal(size=(50, 4))
    y = rng.integers(0, 4, 50)
    acc = fs.accuracy(S, y)
    assert isinstance(acc, float)
    assert acc == sum(int(np.argmax(S[i]) == y[i]) for i in range(50))
    with pytest.raises(ValueError, match="one label per prediction"):
        fs.accuracy(S, y[:-1])


def test_entropy_known_values():
    for k in (2, 5, 10):
        u = np.full(k, 1 / k)
        assert fs.entropy(u) == pytest.approx(np.log(k), rel=1e-14)
        onehot = np.eye(k)[0]
        assert fs.entropy(onehot) == 0.0
        # any p against a uniform model: H(p, u) = log k
        p = np.arange(1, k + 1) / (k * (k + 1) / 2)
        assert fs.cross_entropy_between(p, u) == pytest.approx(np.log(k), rel=1e-14)
        assert fs.kl_divergence(onehot, u) == pytest.approx(np.log(k), rel=1e-14)
        assert fs.kl_divergence(u, u) == 0.0
    assert fs.entropy([0.5, 0.25, 0.25]) == pytest.approx(1.5 * np.log(2), rel=1e-14)


def test_kl_divergence_is_never_negative_and_entropy_never_minus_zero():
    # q within rounding of p: the terms' rounding sums to about -3e-17 unclamped
    kl = fs.kl_divergence([0.3, 0.7], [0.3 + 1e-12, 0.7 - 1e-12])
    assert kl >= 0
    kl = fs.kl_divergence(np.array([[0.3, 0.7]] * 3), np.array([[0.3 + 1e-12, 0.7 - 1e-12]] * 3))
    assert (kl >= 0).all()
    for p in ([0, 1, 0], [[1.0, 0.0], [0.0, 1.0]]):
        H = np.asarray(fs.entropy(p))
        assert (H == 0).all() and not np.signbit(H).any()


def test_information_identities_on_random_distributions(rng):
    P = rng.dirichlet(np.ones(6), size=20)
    Q = rng.dirichlet(np.ones(6), size=20)
    H = fs.entropy(P)
    Hpq = fs.cross_entropy_between(P, Q)
    kl = fs.kl_divergence(P, Q)
    assert H.shape == Hpq.shape == kl.shape == (20,)
    np.testing.assert_allclose(H, -(P * np.log(P)).sum(1), rtol=1e-13)
    np.testing.assert_allclose(Hpq, -(P * np.log(Q)).sum(1), rtol=1e-13)
    np.testing.assert_allclose(kl, Hpq - H, rtol=1e-10, atol=1e-13)
    assert (kl > 0).all()
    assert (Hpq >= H).all()  # Gibbs' inequality
    np.testing.assert_allclose(fs.kl_divergence(P, P), 0, atol=1e-15)
    np.testing.assert_allclose(fs.cross_entropy_between(P, P), H, rtol=1e-14)
    # not symmetric
    assert not np.allclose(kl, fs.kl_divergence(Q, P))


def test_zero_probabilities():
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([1.0, 0.0, 0.0])
    assert fs.entropy(p) == pytest.approx(np.log(2))
    assert np.isinf(fs.kl_divergence(p, q))  # q rules out what p allows
    assert fs.kl_divergence(q, p) == pytest.approx(np.log(2))
    assert np.isfinite(fs.cross_entropy_between(q, p))


@pytest.mark.parametrize("bad", [[0.5, 0.6], [1.2, -0.2], [np.nan, 1.0], [np.inf, 0.0], [],
                                 [0.3, 0.3]])
def test_invalid_distributions_rejected(bad):
    with pytest.raises(ValueError, match="p"):
        fs.entropy(bad)
    with pytest.raises(ValueError):
        fs.kl_divergence([0.5, 0.5], bad)
    with pytest.raises(ValueError):
        fs.cross_entropy_between(bad, [0.5, 0.5])


def test_mismatched_distribution_shapes_and_types():
    with pytest.raises(ValueError, match="same shape"):
        fs.kl_divergence([0.5, 0.5], [1 / 3] * 3)
    with pytest.raises(ValueError, match="same shape"):
        fs.cross_entropy_between([0.5, 0.5], [1 / 3] * 3)
    with pytest.raises(TypeError, match="p"):
        fs.entropy(["a", "b"])


# -- closed form ---------------------------------------------------------------------------------------

def test_least_squares_recovers_book_parameters():
    X, y = fs.synthetic_data(TRUE_W, TRUE_B, 1000, seed=21)
    w, b = fs.least_squares(X, y)
    assert w.shape == (2,) and isinstance(b, float)
    assert np.abs(w - TRUE_W).max() < 1e-3
    assert abs(b - TRUE_B) < 1e-3
    # the exact minimizer: same as lstsq on [X, 1]
    A = np.hstack([X.astype(np.float64), np.ones((1000, 1))])
    ref, *_ = np.linalg.lstsq(A, y.astype(np.float64), rcond=None)
    np.testing.assert_allclose(np.append(w, b), ref, rtol=1e-10, atol=1e-12)


def test_least_squares_multi_output(rng):
    W = rng.normal(size=(3, 2))
    B = np.array([1.0, -2.0])
    X, Y = fs.synthetic_data(W, B, 500, seed=22, dtype=np.float64)
    assert Y.shape == (500, 2)
    w, b = fs.least_squares(X, Y)
    assert w.shape == (3, 2) and b.shape == (2,)
    np.testing.assert_allclose(w, W, atol=3e-3)
    np.testing.assert_allclose(b, B, atol=3e-3)
    for j in range(2):  # each output is its own regression
        wj, bj = fs.least_squares(X, Y[:, j])
        np.testing.assert_allclose(w[:, j], wj, rtol=1e-10, atol=1e-12)
        assert b[j] == pytest.approx(bj, rel=1e-10)


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_least_squares_at_the_ends_of_the_float_range(rng, capfd, fit_intercept):
    """Finite data of any size gives the answer that scaling predicts: near 1e308, where
    centering and LAPACK's sums of squares overflowed (LAPACK printed an error and the SVD
    failed to converge), and near 1e-300; scaling by powers of two is exact, so the bits are
    the unscaled problem's."""
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 3.0 + rng.normal(0, 0.1, 40)
    w, b = fs.least_squares(X, y, fit_intercept)
    for ex, ey in ((1020, 1021), (-990, -1000), (1000, -20)):
        ws, bs = fs.least_squares(X * 2.0**ex, y * 2.0**ey, fit_intercept)
        assert_bits_equal(ws, w * 2.0**(ey - ex))
        assert bs == b * 2.0**ey
    # targets of very different sizes fitted together: each column as if fitted alone
    w2, b2 = fs.least_squares(X, np.c_[y, y], fit_intercept)
    wm, bm = fs.least_squares(X, np.c_[y * 2.0**1000, y * 2.0**-50], fit_intercept)
    assert_bits_equal(wm, w2 * [2.0**1000, 2.0**-50])
    assert_bits_equal(bm, b2 * [2.0**1000, 2.0**-50])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w, b = fs.least_squares([[1e308], [1.5e308], [-1e308]], [1.0, 1.0, 1.0], fit_intercept)
    assert abs(w[0]) < 1e-300 and b == pytest.approx(1.0 if fit_intercept else 0.0)
    assert capfd.readouterr().err == ""


def test_least_squares_without_intercept(rng):
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.0, 2.0, 3.0]) + 5.0
    w, b = fs.least_squares(X, y, fit_intercept=False)
    assert b == 0.0
    ref, *_ = np.linalg.lstsq(X, y, rcond=None)
    np.testing.assert_allclose(w, ref, rtol=1e-10)
    w1, b1 = fs.least_squares(X, y)
    np.testing.assert_allclose(w1, [1, 2, 3], rtol=1e-10)
    assert b1 == pytest.approx(5.0, rel=1e-10)
    _, B = fs.least_squares(X, np.column_stack([y, y]), fit_intercept=False)
    np.testing.assert_array_equal(B, [0.0, 0.0])


def test_least_squares_rank_deficient_gives_minimum_norm(rng):
    x1, x2 = rng.normal(size=(2, 300))
    X = np.column_stack([x1, x1, x2])  # duplicated column
    y = 3.0 * x1 - 1.0 * x2 + 0.5 + rng.normal(0, 0.01, 300)
    w, b = fs.least_squares(X, y)
    assert np.isfinite(w).all()
    # the weight of x1 is shared equally between the two copies (the minimum-norm split)
    assert w[0] == pytest.approx(w[1], rel=1e-8)
    # predictions are those of the full-rank problem
    w_full, b_full = fs.least_squares(np.column_stack([x1, x2]), y)
    np.testing.assert_allclose(X @ w + b, np.column_stack([x1, x2]) @ w_full + b_full,
                               rtol=1e-9, atol=1e-9)
    # and w is the pseudo-inverse solution of the centered problem
    Xc = X - X.mean(0)
    np.testing.assert_allclose(w, np.linalg.pinv(Xc) @ (y - y.mean()), rtol=1e-8, atol=1e-10)
    assert np.linalg.norm(w) < np.linalg.norm(w + np.array([1.0, -1.0, 0.0]))


def test_least_squares_bad_inputs(rng):
    X = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="X"):
        fs.least_squares(X[:, 0], rng.normal(size=10))
    with pytest.raises(ValueError, match="10 rows"):
        fs.least_squares(X, rng.normal(size=9))
    with pytest.raises(ValueError, match="y"):
        fs.least_squares(X, rng.normal(size=(10, 2, 1)))
    with pytest.raises(ValueError, match="finite"):
        fs.least_squares(np.where(X > 1, np.nan, X), rng.normal(size=10))
    with pytest.raises(ValueError, match="at least one example"):
        fs.least_squares(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(TypeError, match="X"):
        fs.least_squares(np.array([["a", "b"]]), [1.0])


# -- Timer and Accumulator ------------------------------------------------------------------------------

def test_timer():
    t = fs.Timer()
    time.sleep(0.02)
    d = t.stop()
    assert d >= 0.015
    t.start()
    d2 = t.stop()
    assert len(t.times) == 2 and t.times == [d, d2]
    assert t.sum() == pytest.approx(d + d2)
    assert t.avg() == pytest.approx((d + d2) / 2)
    np.testing.assert_allclose(t.cumsum(), [d, d + d2])
    assert fs.Timer().avg() == 0.0  # no interval stopped yet
    assert len(fs.Timer().times) == 0


def test_accumulator():
    acc = fs.Accumulator(3)
    assert len(acc) == 3 and acc[0] == 0.0
    acc.add(1, 2.5, np.float32(4))
    acc.add(2, 0.5, 1)
    assert [acc[0], acc[1], acc[2]] == [3.0, 3.0, 5.0]
    assert acc[1:] == [3.0, 5.0]
    with pytest.raises(ValueError, match="3 values"):
        acc.add(1, 2)
    acc.reset()
    assert acc.data == [0.0, 0.0, 0.0]
    for n in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n"):
            fs.Accumulator(n)


# -- synthetic data, ArrayDataset, DataLoader ----------------------------------------------------------

def test_synthetic_data():
    X, y = fs.synthetic_data(TRUE_W, TRUE_B, 2000, seed=31)
    assert X.shape == (2000, 2) and y.shape == (2000,)
    assert X.dtype == np.float32 and y.dtype == np.float32
    resid = y.astype(np.float64) - (X.astype(np.float64) @ TRUE_W + TRUE_B)
    assert 0.008 < resid.std() < 0.012 and abs(resid.mean()) < 2e-3
    assert abs(X.std() - 1) < 0.05
    X2, y2 = fs.synthetic_data(TRUE_W, TRUE_B, 2000, seed=31)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    X3, _ = fs.synthetic_data(TRUE_W, TRUE_B, 2000, seed=32)
    assert not np.array_equal(X, X3)
    _, y0 = fs.synthetic_data(TRUE_W, TRUE_B, 10, noise=0.0, seed=1, dtype=np.float64)
    X0, _ = fs.synthetic_data(TRUE_W, TRUE_B, 10, noise=0.0, seed=1, dtype=np.float64)
    np.testing.assert_allclose(y0, X0 @ TRUE_W + TRUE_B, rtol=1e-14)


def _order(loader):
    return np.concatenate([np.asarray(b) for b in loader])


def test_dataloader_length():
    ds = fs.ArrayDataset(np.arange(23))
    assert len(fs.DataLoader(ds, 5)) == 5
    assert len(fs.DataLoader(ds, 5, drop_last=True)) == 4
    assert len(fs.DataLoader(ds, 23)) == 1
    assert len(fs.DataLoader(ds, 100)) == 1
    assert len(fs.DataLoader(ds, 100, drop_last=True)) == 0
    for dl in (fs.DataLoader(ds, 5), fs.DataLoader(ds, 5, drop_last=True, shuffle=True, seed=0)):
        sizes = [len(b) for b in dl]
        assert len(sizes) == len(dl)
    assert [len(b) for b in fs.DataLoader(ds, 5)] == [5, 5, 5, 5, 3]
    assert [len(b) for b in fs.DataLoader(ds, 5, drop_last=True)] == [5, 5, 5, 5]


def test_dataloader_visits_every_example_once_and_reshuffles_each_epoch():
    n = 97
    dl = fs.DataLoader(fs.ArrayDataset(np.arange(n)), 10, shuffle=True, seed=5)
    epochs = [_order(dl) for _ in range(3)]
    for e in epochs:
        np.testing.assert_array_equal(np.sort(e), np.arange(n))
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(n))


def test_dataloader_same_seed_same_sequence():
    ds = fs.ArrayDataset(np.arange(50))
    a = fs.DataLoader(ds, 8, shuffle=True, seed=9)
    b = fs.DataLoader(ds, 8, shuffle=True, seed=9)
    c = fs.DataLoader(ds, 8, shuffle=True, seed=10)
    seq_a = [_order(a) for _ in range(3)]
    seq_b = [_order(b) for _ in range(3)]
    seq_c = [_order(c) for _ in range(3)]
    for x, y in zip(seq_a, seq_b):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(seq_a, seq_c))


def test_dataloader_without_shuffle_keeps_order_and_drop_last_drops_tail():
    ds = fs.ArrayDataset(np.arange(23))
    np.testing.assert_array_equal(_order(fs.DataLoader(ds, 4)), np.arange(23))
    dl = fs.DataLoader(ds, 4, shuffle=True, drop_last=True, seed=1)
    e = _order(dl)
    assert len(e) == 20 and len(np.unique(e)) == 20


def test_dataloader_keeps_features_and_labels_together(rng):
    n = 41
    X = np.column_stack([np.arange(n), rng.normal(size=n)]).astype(np.float32)
    y = np.arange(n) * 10
    seen = []
    for Xb, yb in fs.load_array((X, y), 6, seed=3):
        assert Xb.dtype == np.float32 and Xb.shape[1] == 2
        np.testing.assert_array_equal(Xb[:, 0] * 10, yb)
        np.testing.assert_array_equal(Xb, X[yb // 10])
        seen.extend(yb.tolist())
    assert sorted(seen) == list(range(0, 10 * n, 10))


def _address(a):
    return a.__array_interface__["data"][0]


def test_dataloader_reuses_a_batch_only_once_it_is_dropped(rng):
    # Batches of 128 KiB: smaller ones are fresh arrays (see BatchBuffers.MIN_BYTES).
    X = rng.normal(size=(4096, 64)).astype(np.float32)
    y = np.arange(4096)
    loader = fs.load_array((X, y), 512, seed=0)
    kept = list(loader)  # every batch is still referenced: none may be overwritten
    assert len({_address(Xb) for Xb, _ in kept}) == len(kept)
    for Xb, yb in kept:
        np.testing.assert_array_equal(Xb, X[yb])
    # Batches dropped as the loop moves on are written again: a few buffers serve the epoch.
    seen = set()
    for Xb, yb in loader:
        np.testing.assert_array_equal(Xb, X[yb])
        seen.add(_address(Xb))
    assert len(seen) <= 3
    view = None
    for i, (Xb, yb) in enumerate(loader):  # a view of a batch keeps it too
        if i == 0:
            view, first = Xb[2:], yb.copy()
    np.testing.assert_array_equal(view, X[first][2:])


@pytest.mark.parametrize("dtype", [np.float16, ">f4", ">f8", np.int32])
def test_dataloader_gathers_other_feature_dtypes_with_numpy(rng, dtype):
    # Only native float32/float64 rows go to the compiled gather; the rest keep their dtype.
    X = (rng.normal(size=(300, 7)) * 10).astype(dtype)
    for Xb, yb in fs.load_array((X, np.arange(300)), 64, seed=0):
        assert Xb.dtype == X.dtype
        np.testing.assert_array_equal(Xb, X[yb])


def test_dataloader_reads_arrays_replaced_in_the_dataset_safely(rng):
    # ds.arrays is a plain list: what the loader gathers unchecked is worked out from the arrays
    # as they are at the start of each epoch, never from what they were at construction.
    ds = fs.ArrayDataset(np.ones((64, 1000), np.float32), np.arange(64))
    ds.arrays[0] = rng.normal(size=(64, 3)).astype(np.float32)  # narrower
    for Xb, yb in fs.DataLoader(ds, 16, shuffle=True, seed=0):
        np.testing.assert_array_equal(Xb, ds.arrays[0][yb])
    ds.arrays[0] = rng.normal(size=(64, 3))  # float64 now
    Xb, yb = ds.get_batch([5, 1])
    assert Xb.dtype == np.float64
    np.testing.assert_array_equal(Xb, ds.arrays[0][[5, 1]])
    ds.arrays[0] = np.zeros((10, 3), np.float32)  # shorter than the dataset: NumPy refuses
    with pytest.raises(IndexError):
        list(fs.DataLoader(ds, 64))


def test_dataloader_survives_an_array_reinterpreted_mid_epoch():
    # Assigning .dtype reinterprets an array in place: the epoch keeps the rows (and their
    # dtype) it planned with, so it neither overruns the batch nor the array.
    X = np.arange(2 * 4096, dtype=np.float32).reshape(4096, 2)
    ds = fs.ArrayDataset(X, np.arange(4096))
    it = iter(fs.DataLoader(ds, 1024))
    next(it)
    X.dtype = np.float64  # now (4096, 1) float64 over the same bytes
    for Xb, yb in it:
        assert Xb.dtype == np.float32 and Xb.shape == (len(yb), 2)
        np.testing.assert_array_equal(Xb.view(np.float64)[:, 0], X[yb, 0])


def test_dataloader_respects_a_subclass_length():
    class Twice(fs.ArrayDataset):  # more indices than rows: NumPy's bounds check must say so
        def __len__(self):
            return 2 * self._n

    ds = Twice(np.ones((100, 4), np.float32))
    with pytest.raises(IndexError):
        ds.get_batch([150])
    with pytest.raises(IndexError):
        list(fs.DataLoader(ds, 64))


def test_dataloader_uses_a_subclass_own_take():
    class Shifted(fs.ArrayDataset):
        def _take(self, idx, buffers=None):
            X, y = super()._take(idx, buffers)
            return X + 100, y

    ds = Shifted(np.zeros((6, 2), np.float32), np.arange(6))
    assert (ds.get_batch([0])[0] == 100).all()
    for Xb, _ in fs.DataLoader(ds, 4):
        assert (Xb == 100).all()


def test_dataloader_two_interleaved_passes(rng):
    X = rng.normal(size=(2048, 32))
    loader = fs.load_array((X, np.arange(2048)), 512, seed=1)
    for (Xa, ya), (Xb, yb) in zip(loader, loader):
        np.testing.assert_array_equal(Xa, X[ya])
        np.testing.assert_array_equal(Xb, X[yb])
        assert _address(Xa) != _address(Xb)


def test_load_array_is_train_false_keeps_order():
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    y = np.arange(6)
    batches = list(fs.load_array((X, y), 4, is_train=False))
    np.testing.assert_array_equal(batches[0][0], X[:4])
    np.testing.assert_array_equal(batches[1][1], y[4:])
    with pytest.raises(TypeError, match="data_arrays"):
        fs.load_array(X, 4)


def test_dataloader_over_a_plain_sequence():
    items = [(np.full(2, i, np.float32), i) for i in range(7)]
    batches = list(fs.DataLoader(items, 3))
    assert len(batches) == 3
    Xb, yb = batches[0]
    assert Xb.shape == (3, 2)
    np.testing.assert_array_equal(yb, [0, 1, 2])


def test_dataloader_refuses_a_tuple_of_arrays_for_the_dataset():
    """(X, y) is a dataset's arrays, not a dataset: indexed, it would give whole arrays as
    examples (one batch of shape (2, 10, 1)), or NumPy's 'all input arrays must have the same
    shape'."""
    X, y = np.zeros((10, 1)), np.zeros((10, 1))
    for arrays in ((X, y), (X, y[:, 0]), (X,)):
        with pytest.raises(TypeError, match=r"dataset must be a dataset \(one example per "
                                            r"index\), got a tuple of .* use "
                                            r"fs\.load_array\(\(X, y\), batch_size\) or "
                                            r"fs\.DataLoader\(fs\.ArrayDataset\(X, y\), "
                                            r"batch_size\)"):
            fs.DataLoader(arrays, 4)
    # a list of examples (pairs, or single arrays such as images), and an empty one, are
    # datasets
    assert len(fs.DataLoader([(X[i], y[i]) for i in range(10)], 4)) == 3
    assert [b.shape for b in fs.DataLoader(list(X), 4)] == [(4, 1), (4, 1), (2, 1)]
    assert len(fs.DataLoader([], 4)) == 0


@pytest.mark.parametrize("bs, exc", [(0, ValueError), (-1, ValueError), (2.5, TypeError),
                                     ("4", TypeError), (None, TypeError), (True, TypeError)])
def test_dataloader_bad_batch_size(bs, exc):
    ds = fs.ArrayDataset(np.arange(5))
    with pytest.raises(exc, match="batch_size"):
        fs.DataLoader(ds, bs)
    with pytest.raises(exc, match="batch_size"):
        fs.load_array((np.zeros((5, 2)), np.zeros(5)), bs)


def test_dataloader_bad_dataset():
    with pytest.raises(TypeError, match="dataset"):
        fs.DataLoader(42, 4)


def test_array_dataset_checks():
    with pytest.raises(ValueError, match="same length"):
        fs.ArrayDataset(np.zeros((5, 2)), np.zeros(4))
    X = np.zeros((5, 2))
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fs.ArrayDataset(X, np.zeros(5))
    X[3, 1] = np.inf
    with pytest.raises(ValueError, match="finite"):
        fs.ArrayDataset(X, np.zeros(5))
    with pytest.raises(ValueError, match="at least one array"):
        fs.ArrayDataset()
    with pytest.raises(TypeError):
        fs.ArrayDataset(np.array(["a", "b"]))
    ds = fs.ArrayDataset(np.zeros((5, 2)), np.arange(5))
    assert len(ds) == 5
    x, y = ds[2]
    assert x.shape == (2,) and y == 2


@pytest.mark.parametrize("flag", ["no", "False", 2, None])
def test_array_dataset_check_finite_must_be_a_bool(flag):
    with pytest.raises(TypeError, match=r"check_finite must be True or False"):
        fs.ArrayDataset(np.array([np.nan]), check_finite=flag)
    ds = fs.ArrayDataset(np.array([np.nan]), check_finite=np.False_)
    assert np.isnan(ds.arrays[0][0])


def test_array_dataset_refuses_a_scalar():
    # data.py means to refuse 0-d arrays ("must have at least one dimension")
    with pytest.raises(ValueError, match="scalar"):
        fs.ArrayDataset(np.float64(3.0))


@pytest.mark.filterwarnings("error")
def test_scratch_cross_entropy_gradient_past_float32_says_nothing():
    # Section 3.6 with too large a rate: the loop's TrainingDiverged says it all.  A picked
    # probability of exp(-95) (a float32 subnormal) sends -1 / p, past the largest float32,
    # back: inf, as the chapter's version gives, and no overflow warning before the error.
    W = Parameter(np.array([[0.0, -95.0]], np.float32))
    b = Parameter(np.zeros(2, np.float32))
    loss = fs.cross_entropy(fs.softmax(fs.linreg(np.ones((1, 1), np.float32), W, b)),
                            np.array([1]))
    assert np.float32(94) < loss[0] < np.float32(96)
    loss.backward()
    assert np.isinf(W.grad).any()
