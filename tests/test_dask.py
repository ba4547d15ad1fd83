"""Scale-out on Dask: ``dask_ml.wrappers.Incremental`` around the estimators and the
data-parallel ``fit_dask`` (local SGD + model averaging), on a LocalCluster of two workers on
127.0.0.1 started once for the module."""
from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("sklearn")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
dask_ml_wrappers = pytest.importorskip("dask_ml.wrappers")

import dask  # noqa: E402

import fastshallow as fs  # noqa: E402
from fastshallow.distributed import _fit_averaged, fit_dask  # noqa: E402
from fastshallow.estimators import LinearRegression, SoftmaxRegression  # noqa: E402
from fastshallow.outofcore import fit_out_of_core  # noqa: E402

from conftest import assert_same_model, last_row, learned  # noqa: E402

Incremental = dask_ml_wrappers.Incremental


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       protocol="tcp://", host="127.0.0.1",
                                       dashboard_address=None)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def partitioned(client, arrays, parts: int):
    """Dask arrays whose row blocks are `parts` equal pieces already living on the workers
    (scattered, so the graphs never carry the data)."""
    out = []
    for a in arrays:
        pieces = np.array_split(a, parts)
        futures = client.scatter(pieces)
        blocks = [da.from_delayed(dask.delayed(f), shape=p.shape, dtype=p.dtype)
                  for f, p in zip(futures, pieces)]
        out.append(da.concatenate(blocks, axis=0))
    return out


def teacher_data(rng, n, k=20, c=4):
    W = rng.standard_normal((k, c))
    X = rng.standard_normal((n, k)).astype(np.float32)
    y = np.argmax(X @ W + 0.5 * rng.standard_normal((n, c)), axis=1)
    return X, y


def test_cluster_listens_on_loopback(client):
    addrs = [client.scheduler.address] + list(client.scheduler_info()["workers"])
    assert all(a.startswith("tcp://127.0.0.1:") for a in addrs), addrs
    assert len(client.scheduler_info()["workers"]) == 2


def test_incremental_is_sequential_sgd_over_the_blocks(client, rng):
    X, y = teacher_data(rng, 8000)
    labels = np.array(["a", "b", "c", "d"])[y]
    dX, dy = partitioned(client, [X, labels], 4)
    inc = Incremental(SoftmaxRegression(random_state=0), random_state=0)
    for _ in range(5):
        inc.partial_fit(dX, dy, classes=np.unique(labels))
    est = inc.estimator_
    assert est.n_iter_ == 20  # one partial_fit per block and pass
    ref = SoftmaxRegression(epochs=5, random_state=0).fit(X, labels)
    assert abs(inc.score(X, labels) - ref.score(X, labels)) < 0.01
    assert inc.predict(X[:5]).dtype == labels.dtype
    # the same blocks in the same order, by hand: the same model
    order = np.random.RandomState(0).permutation(4)  # dask_ml's block shuffle, first pass
    one = Incremental(SoftmaxRegression(random_state=0), random_state=0).fit(
        dX, dy, classes=np.unique(labels)).estimator_
    manual = SoftmaxRegression(random_state=0)
    for b in order:
        s = slice(2000 * b, 2000 * (b + 1))
        manual.partial_fit(X[s], labels[s], classes=np.unique(labels))
    np.testing.assert_array_equal(one.coef_, manual.coef_)


def test_incremental_regression(client, rng):
    X = rng.standard_normal((6000, 6)).astype(np.float32)
    w = rng.standard_normal(6)
    y = (X @ w - 2.0).astype(np.float32)
    dX, dy = partitioned(client, [X, y], 3)
    inc = Incremental(LinearRegression(random_state=0))
    for _ in range(3):
        inc.partial_fit(dX, dy)
    np.testing.assert_allclose(inc.estimator_.coef_, w, atol=1e-3)


def test_fit_dask_matches_the_single_machine_fit(client, rng):
    X, y = teacher_data(rng, 20_000)
    dX, dy = partitioned(client, [X, y], 4)
    kw = dict(lr=0.05, momentum=0.9, schedule="cosine", epochs=5, random_state=0)
    single = SoftmaxRegression(**kw).fit(X, y).score(X, y)
    avg = fit_dask(SoftmaxRegression(**kw), dX, dy, lr_scale=4)
    assert avg.n_iter_ == 5 and len(avg.loss_curve_) == 5
    assert avg.coef_.dtype == np.float32 and avg.n_features_in_ == 20
    assert abs(avg.score(X, y) - single) < 0.01
    again = fit_dask(SoftmaxRegression(**kw), dX, dy, lr_scale=4, client=client)
    np.testing.assert_array_equal(avg.coef_, again.coef_)  # seeded: reproducible
    one_shot = fit_dask(SoftmaxRegression(**kw), dX, dy, rounds=1, local_epochs=5)
    assert abs(one_shot.score(X, y) - single) < 0.02


def test_fit_dask_regression_weights_and_rechunking(client, rng):
    X = rng.standard_normal((4000, 5))
    W = rng.standard_normal((5, 2))
    Y = X @ W + 1.0
    dX = da.from_array(X, chunks=(1000, 2))  # column blocks are joined to whole rows
    dY = da.from_array(Y, chunks=(500, 2))  # and y's row blocks matched to X's
    reg = fit_dask(LinearRegression(batch_size=32, epochs=20, random_state=0), dX, dY)
    np.testing.assert_allclose(reg.coef_, W.T, atol=1e-3)
    assert reg.intercept_.shape == (2,) and reg.predict(X).shape == (4000, 2)
    y1 = Y[:, 0]
    r1 = fit_dask(LinearRegression(batch_size=32, epochs=20, random_state=0), dX,
                  da.from_array(y1, 1000),
                  sample_weight=da.from_array(np.full(4000, 3.0), 1000))
    assert r1.coef_.shape == (5,) and np.ndim(r1.intercept_) == 0
    np.testing.assert_allclose(r1.coef_, W[:, 0], atol=1e-3)


def test_averaging_weights_partitions_by_rows(rng):
    """The average is weighted by rows: a partition twice as large counts twice."""
    X, y = teacher_data(rng, 3000, c=3)
    blocks = [(X[:2000], y[:2000], None), (X[2000:], y[2000:], None)]
    seen = []

    def run(calls):
        out = [fn(*args) for fn, args in calls]
        seen.append(out)
        return out

    est = _fit_averaged(SoftmaxRegression(epochs=1, random_state=0), blocks, [2000, 1000], 20,
                        np.float32, run, classes=np.arange(3), rounds=1, local_epochs=1,
                        local_threads=None, weight_scale=None, random_state=0)
    (a, b), = seen
    np.testing.assert_allclose(est.coef_, (2 * a[0].astype(np.float64) + b[0]) / 3,
                               rtol=1e-6, atol=1e-7)


def test_fit_dask_refuses_what_it_cannot_do(client, rng):
    X, y = teacher_data(rng, 100)
    with pytest.raises(TypeError, match="dask array"):
        fit_dask(SoftmaxRegression(), X, y)
    from sklearn.linear_model import SGDClassifier

    with pytest.raises(TypeError, match="Incremental"):
        fit_dask(SGDClassifier(), da.from_array(X, 50), da.from_array(y, 50))
    with pytest.raises(ValueError, match="y must have shape"):
        fit_dask(SoftmaxRegression(), da.from_array(X, 50), da.from_array(y[:-1], 50))


def test_fit_dask_refuses_the_closed_form_and_unknown_chunk_sizes(client, rng):
    X, y = teacher_data(rng, 200)
    dX, dy = da.from_array(X, 50), da.from_array(y, 50)
    with pytest.raises(TypeError, match=r"LinearRegression\(solver='closed_form'\) is not "
                                        r"trained by SGD: set_params\(solver='sgd'\)"):
        fit_dask(LinearRegression(solver="closed_form"), dX, da.from_array(X[:, 0], 50))
    unknown = dX[dX[:, 0] < 10]  # a boolean mask: every row, in blocks of unknown size
    for args, name in (((unknown, dy), "X"), ((dX, dy[dy < 10]), "y")):
        with pytest.raises(ValueError, match=rf"{name} has unknown chunk sizes .*call "
                                             rf"{name}.compute_chunk_sizes\(\) first"):
            fit_dask(SoftmaxRegression(), *args)


def test_fit_dask_skips_partitions_without_rows(client, rng):
    """A partition emptied by a filter carries no weight: the fit is the one without it."""
    X, y = teacher_data(rng, 400)
    keep = da.from_array(np.arange(400) < 300, 100)
    dX, dy = da.from_array(X, 100), da.from_array(y, 100)
    fX, fy = dX[keep], dy[keep]
    fX.compute_chunk_sizes()
    fy.compute_chunk_sizes()
    assert fX.chunks[0] == (100, 100, 100, 0)
    got = fit_dask(SoftmaxRegression(epochs=2, random_state=0), fX, fy)
    ref = fit_dask(SoftmaxRegression(epochs=2, random_state=0), dX[:300], dy[:300])
    np.testing.assert_array_equal(got.coef_, ref.coef_)


@pytest.mark.parametrize("kind", [np.int64, np.random.RandomState])
def test_fit_dask_numpy_seeds_are_reproducible(client, rng, kind):
    """The estimator's random_state is taken as fit takes it (a NumPy integer is the int, a
    RandomState gives a seed), and so is fit_dask's own."""
    X, y = teacher_data(rng, 400)
    dX, dy = da.from_array(X, 100), da.from_array(y, 100)
    a, b = (fit_dask(SoftmaxRegression(epochs=2, random_state=kind(3)), dX, dy)
            for _ in range(2))
    np.testing.assert_array_equal(a.coef_, b.coef_)
    if kind is np.int64:
        ref = fit_dask(SoftmaxRegression(epochs=2, random_state=3), dX, dy)
        np.testing.assert_array_equal(a.coef_, ref.coef_)
    c, d = (fit_dask(SoftmaxRegression(epochs=2, random_state=0), dX, dy,
                     random_state=kind(5)) for _ in range(2))
    np.testing.assert_array_equal(c.coef_, d.coef_)


def test_fit_dask_foreign_byte_order_is_native(client, rng):
    """'>f4' blocks hold float32 numbers: a float32 model, bit for bit the native one."""
    X, y = teacher_data(rng, 400)
    a = fit_dask(SoftmaxRegression(epochs=2, random_state=0),
                 da.from_array(X.astype(">f4"), 200), da.from_array(y.astype(">i8"), 200))
    b = fit_dask(SoftmaxRegression(epochs=2, random_state=0), da.from_array(X, 200),
                 da.from_array(y, 200))
    assert a.coef_.dtype == np.float32 and a.classes_.dtype == b.classes_.dtype
    np.testing.assert_array_equal(a.coef_, b.coef_)


@pytest.mark.parametrize("shape", [(0, 4), (10, 0)])
def test_fit_dask_says_when_the_data_are_empty(client, shape):
    with pytest.raises(ValueError, match="X is empty"):
        fit_dask(SoftmaxRegression(), da.zeros(shape, chunks=5),
                 da.zeros(shape[0], chunks=5, dtype=np.int64))


@pytest.mark.parametrize("params,change,match", [
    ({}, dict(sample_weight=last_row(np.ones(200), -1.0)), "sample_weight must be >= 0"),
    ({}, dict(sample_weight=last_row(np.ones(200), np.nan)), "sample_weight must be finite"),
    ({}, dict(sample_weight=np.ones(200) + 1j), "sample_weight must hold real numbers"),
    ({}, dict(local_threads=5000), "local_threads"),
    ({"lr": 10.0}, dict(lr_scale=1e308), "lr \\* lr_scale"),
    ({}, dict(X=lambda X: last_row(X, np.nan)), "NaN"),  # seen only by a worker, midway
], ids=["negative-weight", "nan-weight", "complex-weight", "local_threads", "lr-overflow",
        "nan-in-X"])
def test_fit_dask_failures_leave_the_estimator_as_it_was(client, rng, params, change, match):
    X, y = teacher_data(rng, 200)
    est = fit_dask(SoftmaxRegression(epochs=2, random_state=0), da.from_array(X, 50),
                   da.from_array(y, 50))
    before, pred = learned(est), est.predict(X)
    kw = dict(change)
    XX = kw.pop("X", lambda X: X)(X)
    if "sample_weight" in kw:
        kw["sample_weight"] = da.from_array(kw["sample_weight"], 50)
    est.set_params(**params)
    with pytest.raises((TypeError, ValueError), match=match):
        fit_dask(est, da.from_array(XX, 50), da.from_array(y, 50), **kw)
    assert_same_model(est, before)
    np.testing.assert_array_equal(est.predict(X), pred)


@pytest.mark.parametrize("kind", ["classes", "dimensions"])
def test_every_fit_refuses_a_warm_start_on_other_targets_alike(client, rng, kind):
    """fit_dask trained on from the other classes' coefficients; fit_out_of_core took targets
    changed from 1-D to 2-D and refused other classes in partial_fit's words."""
    X, y = teacher_data(rng, 200)
    if kind == "classes":
        est = SoftmaxRegression(epochs=1, warm_start=True, random_state=0).fit(X, y)
        other, match = y + 1, r"warm_start=True, but y has the classes \[1, 2, 3, 4\], the "
    else:
        t = X @ rng.normal(size=X.shape[1])
        est = LinearRegression(epochs=1, warm_start=True, random_state=0).fit(X, t)
        other, match = t[:, None], "warm_start=True, but y changed between 1-D and 2-D"
    before = learned(est)
    for fit in (lambda: est.fit(X, other), lambda: fit_out_of_core(est, X, other),
                lambda: fit_dask(est, da.from_array(X, 50), da.from_array(other, 50))):
        with pytest.raises(ValueError, match=match):
            fit()
        assert_same_model(est, before)


def test_fit_dask_verbose_reports_rounds(client, rng, capsys):
    X, y = teacher_data(rng, 200)
    est = fit_dask(SoftmaxRegression(epochs=2, verbose=1, random_state=0), da.from_array(X, 50),
                   da.from_array(y, 50))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["round 1 of 2", "round 2 of 2"]
    losses = [float(line.split("loss ")[1].split(",")[0]) for line in lines]
    np.testing.assert_allclose(losses, est.loss_curve_, rtol=1e-5)


@pytest.mark.parametrize("w", [5e-324, 1e307])
def test_fit_dask_uniform_weights_of_any_size_are_no_weights(client, rng, w):
    X, y = teacher_data(rng, 200)
    dX, dy = da.from_array(X, 50), da.from_array(y, 50)
    ref = fit_dask(SoftmaxRegression(epochs=2, random_state=0), dX, dy,
                   sample_weight=da.ones(200, chunks=50))
    got = fit_dask(SoftmaxRegression(epochs=2, random_state=0), dX, dy,
                   sample_weight=da.full(200, w, chunks=50))
    np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got.loss_curve_, ref.loss_curve_, rtol=1e-6)


@pytest.mark.fashion
def test_fashion_mnist_in_four_partitions(client, fashion_rows):
    """Both Dask paths within 0.01 test accuracy of the single-machine fit (the recommended
    recipe, 10 epochs, 4 partitions of 15000 rows)."""
    Xtr, ytr, Xte, yte = fashion_rows
    dX, dy = partitioned(client, [Xtr, ytr], 4)
    kw = dict(lr=0.05, momentum=0.9, random_state=0)
    single = SoftmaxRegression(schedule="cosine", **kw).fit(Xtr, ytr).score(Xte, yte)
    avg = fit_dask(SoftmaxRegression(schedule="cosine", **kw), dX, dy, lr_scale=4)
    avg_acc = avg.score(Xte, yte)
    steps = 10 * 4 * -(-15_000 // 256)  # a cosine over the passes of partial_fit
    inc = Incremental(SoftmaxRegression(schedule=fs.optim.CosineSchedule(steps), **kw),
                      random_state=0)
    for _ in range(10):
        inc.partial_fit(dX, dy, classes=np.arange(10))
    inc_acc = inc.score(Xte, yte)
    print(f"\nsingle {single:.4f}, fit_dask {avg_acc:.4f}, Incremental {inc_acc:.4f}")
    assert single >= 0.83
    assert abs(avg_acc - single) <= 0.01, (avg_acc, single)
    assert abs(inc_acc - single) <= 0.01, (inc_acc, single)
