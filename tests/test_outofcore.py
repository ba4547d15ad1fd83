"""Out-of-core training: shuffled chunks streamed from memory-mapped files, IDX files mapped
without reading them, the results against in-memory fits, and the peak resident memory of a
fit on a file larger than the memory it is allowed (measured in a subprocess)."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("sklearn")

import fastshallow  # noqa: E402
from fastshallow.datasets import DataFileError  # noqa: E402
from fastshallow.estimators import LinearRegression, SoftmaxRegression  # noqa: E402
from fastshallow.outofcore import fit_out_of_core, iter_chunks, open_idx  # noqa: E402

from conftest import assert_same_model, last_row, learned  # noqa: E402


def teacher_data(rng, n, k=20, c=5, dtype=np.float32):
    """Rows labelled by a random linear teacher (argmax of X W + noise)."""
    W = rng.standard_normal((k, c))
    X = rng.standard_normal((n, k)).astype(dtype)
    y = np.argmax(X @ W + 0.5 * rng.standard_normal((n, c)), axis=1)
    return X, y


def to_memmap(tmp_path, name, a):
    path = tmp_path / name
    m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    m[...] = a
    m.flush()
    del m
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)


# ---- iter_chunks -----------------------------------------------------------------------------

def test_every_row_once_per_epoch_in_shuffled_chunks(tmp_path):
    n = 10_007
    ids = np.arange(n, dtype=np.float64)
    X = to_memmap(tmp_path, "X.f64", np.stack([ids, -ids], axis=1))
    y = ids.astype(np.int64)
    seen, sizes = [], []
    for Xc, yc in iter_chunks(X, y, block_rows=100, chunk_rows=1000, random_state=0):
        assert isinstance(Xc, np.ndarray) and not isinstance(Xc, np.memmap)
        assert Xc.flags.c_contiguous and Xc.dtype == np.float64
        np.testing.assert_array_equal(Xc[:, 0], yc)  # rows and labels stay paired
        np.testing.assert_array_equal(Xc[:, 1], -yc)
        seen.append(yc)
        sizes.append(len(yc))
    order = np.concatenate(seen)
    np.testing.assert_array_equal(np.sort(order), y)  # each row exactly once
    assert max(sizes) == 1000 and len(sizes) == 11
    assert not np.array_equal(order, y)  # shuffled ...
    # ... across the whole file within one chunk, not just within neighbouring rows
    assert np.ptp(seen[0]) > n / 2
    # a new order every epoch, the same for the same seed
    again = np.concatenate([c[1] for c in iter_chunks(X, y, block_rows=100, chunk_rows=1000,
                                                      random_state=0)])
    np.testing.assert_array_equal(order, again)
    other = np.concatenate([c[1] for c in iter_chunks(X, y, block_rows=100, chunk_rows=1000,
                                                      random_state=1)])
    assert not np.array_equal(order, other)


def test_unshuffled_chunks_are_the_file_in_order():
    X = np.arange(50, dtype=np.float32).reshape(25, 2)
    chunks = list(iter_chunks(X, shuffle=False, block_rows=4, chunk_rows=8))
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), X)
    assert [len(c[0]) for c in chunks] == [8, 8, 8, 1]


def test_uint8_images_are_flattened_converted_and_scaled():
    imgs = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(4, 3, 3)
    (Xc,), = [c for c in iter_chunks(imgs, shuffle=False, scale=1 / 255)]
    assert Xc.dtype == np.float32 and Xc.shape == (4, 9)
    np.testing.assert_array_equal(Xc, imgs.reshape(4, 9) * np.float32(1 / 255))
    (Xd,), = [c for c in iter_chunks(imgs, shuffle=False, dtype=np.float64)]
    np.testing.assert_array_equal(Xd, imgs.reshape(4, 9))


def test_iter_chunks_refuses_bad_input():
    X = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match="rows"):
        next(iter_chunks(X, np.zeros(9)))
    with pytest.raises(TypeError, match="dtype"):
        next(iter_chunks(X, dtype=np.int32))
    with pytest.raises(ValueError, match="chunk_rows"):
        next(iter_chunks(X, chunk_rows=0))
    with pytest.raises(TypeError, match="real numbers"):
        next(iter_chunks(np.array([["a"]])))


def test_iter_chunks_checks_its_arguments_when_called():
    """Not at the first next(): a caller that sets things up between the two must not find
    out after having done so."""
    X = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match="chunk_rows"):
        iter_chunks(X, chunk_rows=0)
    with pytest.raises(ValueError, match="others\\[0\\]"):
        iter_chunks(X, np.zeros(9))


def test_foreign_byte_order_files_train_as_native(tmp_path, rng):
    """A big-endian file holds the same numbers: the same chunks (dtype and bits, labels
    included) and the same model as the native file."""
    X, y = teacher_data(rng, 300, k=4, c=3, dtype=np.float64)
    for dt in (np.dtype(np.float64), np.dtype(np.float32)):
        native = to_memmap(tmp_path, f"le.{dt.char}", X.astype(dt))
        swapped = to_memmap(tmp_path, f"be.{dt.char}", X.astype(dt.newbyteorder(">")))
        yb = y.astype(">i8")
        for scale in (None, 0.5):
            got = next(iter_chunks(swapped, yb, shuffle=False, scale=scale))
            ref = next(iter_chunks(native, y, shuffle=False, scale=scale))
            for g, r in zip(got, ref):
                assert g.dtype == r.dtype
                np.testing.assert_array_equal(g, r)
        kw = dict(chunk_rows=100, block_rows=50)
        a = fit_out_of_core(SoftmaxRegression(epochs=2, random_state=0), swapped, yb, **kw)
        b = fit_out_of_core(SoftmaxRegression(epochs=2, random_state=0), native, y, **kw)
        assert a.coef_.dtype == dt and a.classes_.dtype == b.classes_.dtype
        np.testing.assert_array_equal(a.coef_, b.coef_)


def vm_rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def test_pages_of_a_read_only_mapping_are_released(tmp_path):
    """After a pass, the pages read through the mapping no longer count as this process's
    resident memory (they were handed back with madvise); what remains is the allocator
    keeping a chunk or two of freed heap."""
    rows = 128 * 1024
    np.ones((rows, 256), np.float32).tofile(tmp_path / "big.f32")  # 128 MB
    X = np.memmap(tmp_path / "big.f32", np.float32, "r", shape=(rows, 256))
    before = vm_rss_kb()
    for _ in iter_chunks(X, block_rows=4096, chunk_rows=8192, random_state=0):
        pass
    released = vm_rss_kb() - before
    for _ in iter_chunks(X, block_rows=4096, chunk_rows=8192, random_state=0,
                         release_pages=False):
        pass
    kept = vm_rss_kb() - before
    assert released < 48 * 1024, released  # a few 8 MB chunks at most, not the file
    assert kept > 100 * 1024, kept  # the control: without release the file stays mapped


def test_copy_on_write_mappings_keep_their_pages(tmp_path):
    """A private (mode 'c') mapping may hold changes that exist nowhere else: never dropped."""
    path = tmp_path / "c.f32"
    np.zeros((4096, 64), np.float32).tofile(path)
    X = np.memmap(path, np.float32, "c", shape=(4096, 64))
    X[:, 0] = 7.0  # private changes
    chunks = list(iter_chunks(X, shuffle=False, block_rows=256, chunk_rows=256))
    assert all((c[0][:, 0] == 7.0).all() for c in chunks)
    assert (np.asarray(X[:, 0]) == 7.0).all()


# ---- open_idx --------------------------------------------------------------------------------

def idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def test_open_idx_maps_without_reading(tmp_path, rng):
    imgs = rng.integers(0, 256, (30, 4, 5), dtype=np.uint8)
    path = tmp_path / "imgs-idx3-ubyte"
    path.write_bytes(idx_bytes(imgs))
    m = open_idx(path)
    assert isinstance(m, np.memmap) and m.shape == (30, 4, 5) and m.dtype == np.uint8
    np.testing.assert_array_equal(m, imgs)
    with pytest.raises(ValueError):
        m[0, 0, 0] = 1  # read-only


def test_open_idx_refuses_gzip_and_truncated_files(tmp_path, rng):
    imgs = rng.integers(0, 256, (3, 2, 2), dtype=np.uint8)
    gz = tmp_path / "x.gz"
    gz.write_bytes(gzip.compress(idx_bytes(imgs)))
    with pytest.raises(DataFileError, match="gzip"):
        open_idx(gz)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(imgs)[:-1])
    with pytest.raises(DataFileError, match="bytes"):
        open_idx(short)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04" + bytes(8))
    with pytest.raises(DataFileError, match="magic"):
        open_idx(bad)
    with pytest.raises(DataFileError, match="cannot be read"):
        open_idx(tmp_path / "missing")


# ---- fit_out_of_core -------------------------------------------------------------------------

def test_one_chunk_is_exactly_fit(tmp_path, rng):
    """With the whole file in one chunk, the streamed fit is the in-memory fit, bit for bit:
    same weights drawn, same permutations."""
    X, y = teacher_data(rng, 3000)
    Xm = to_memmap(tmp_path, "X.f32", X)
    a = fit_out_of_core(SoftmaxRegression(epochs=3, momentum=0.9, random_state=2), Xm, y,
                        chunk_rows=3000, block_rows=3000)
    b = SoftmaxRegression(epochs=3, momentum=0.9, random_state=2).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)
    assert a.n_iter_ == 3 and a.n_features_in_ == 20


def test_streamed_fit_matches_in_memory_accuracy(tmp_path, rng):
    X, y = teacher_data(rng, 40_000)
    Xm, ym = to_memmap(tmp_path, "X.f32", X), to_memmap(tmp_path, "y.i64", y)
    # the file is sorted by class: chunks must mix rows from all over it
    order = np.argsort(y, kind="stable")
    Xs, ys = to_memmap(tmp_path, "Xs.f32", X[order]), to_memmap(tmp_path, "ys.i64", y[order])
    kw = dict(epochs=5, lr=0.1, schedule="cosine", random_state=0)
    ref = SoftmaxRegression(**kw).fit(X, y).score(X, y)
    for XX, yy in ((Xm, ym), (Xs, ys)):
        est = fit_out_of_core(SoftmaxRegression(**kw), XX, yy, chunk_rows=4000,
                              block_rows=500)
        assert est.coef_.dtype == np.float32
        assert abs(est.score(X, y) - ref) < 0.01, (est.score(X, y), ref)
        assert len(est.loss_curve_) == 5 and est.loss_curve_[-1] < est.loss_curve_[0]
        assert est._opt.schedule.total_steps == est._opt.num_steps  # cosine spans the run


def test_streamed_regression_and_weights(tmp_path, rng):
    X = rng.standard_normal((20_000, 8)).astype(np.float32)
    w_true = rng.standard_normal(8)
    y = (X @ w_true + 1.0).astype(np.float32)
    Xm = to_memmap(tmp_path, "X.f32", X)
    reg = fit_out_of_core(LinearRegression(epochs=4, random_state=0), Xm, y, chunk_rows=2048,
                          block_rows=256)
    np.testing.assert_allclose(reg.coef_, w_true, atol=1e-3)
    # weights are relative to the whole file: 2.0 everywhere is no weighting at all
    a = fit_out_of_core(LinearRegression(epochs=2, random_state=0), Xm, y,
                        sample_weight=np.full(len(y), 2.0), chunk_rows=2048, block_rows=256)
    b = fit_out_of_core(LinearRegression(epochs=2, random_state=0), Xm, y, chunk_rows=2048,
                        block_rows=256)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_a_cosine_schedule_spans_exactly_the_steps_of_the_shuffled_chunks(tmp_path, rng, seed):
    """22 rows in blocks of 5 (the last has 2), chunks of 3 blocks, minibatches of 8: a chunk
    holding the short block takes 2 minibatches, else 2 or 1 -- the count depends on the
    shuffled order.  It is counted exactly, so the schedule ends with the run (an estimate
    from the unshuffled chunks fell short, and the steps after it had rate 0)."""
    X, y = teacher_data(rng, 22, k=3, c=2)
    est = fit_out_of_core(SoftmaxRegression(lr=0.05, momentum=0.9, schedule="cosine",
                                            batch_size=8, epochs=2, random_state=seed),
                          to_memmap(tmp_path, "X.f32", X), y, block_rows=5, chunk_rows=15)
    assert est._opt.num_steps == est._opt.schedule.total_steps
    # ... and a partial_fit after it, all of whose steps have rate 0, says so
    with pytest.raises(ValueError, match=r"partial_fit would not change the model"):
        est.partial_fit(X, y)
    est.set_params(schedule=None).partial_fit(X, y)


@pytest.mark.parametrize("kind", [np.int64, np.random.RandomState])
def test_numpy_seeds_make_the_chunk_order_reproducible(tmp_path, rng, kind):
    """The estimator's random_state is taken as fit takes it (a NumPy integer is the int, a
    RandomState gives a seed): the same seed, the same bits; so is fit_out_of_core's own."""
    X, y = teacher_data(rng, 3000)
    Xm = to_memmap(tmp_path, "X.f32", X)
    kw = dict(chunk_rows=500, block_rows=100)
    a, b = (fit_out_of_core(SoftmaxRegression(epochs=2, random_state=kind(3)), Xm, y, **kw)
            for _ in range(2))
    np.testing.assert_array_equal(a.coef_, b.coef_)
    if kind is np.int64:
        ref = fit_out_of_core(SoftmaxRegression(epochs=2, random_state=3), Xm, y, **kw)
        np.testing.assert_array_equal(a.coef_, ref.coef_)
    c, d = (fit_out_of_core(SoftmaxRegression(epochs=2, random_state=0), Xm, y,
                            random_state=kind(5), **kw) for _ in range(2))
    np.testing.assert_array_equal(c.coef_, d.coef_)


def test_a_pandas_frame_is_converted_and_what_is_not_an_array_is_refused(rng):
    pd = pytest.importorskip("pandas")
    X, y = teacher_data(rng, 300, k=4, c=3)
    kw = dict(chunk_rows=100, block_rows=50)
    ref = fit_out_of_core(SoftmaxRegression(epochs=2, random_state=0), X, y, **kw)
    got = fit_out_of_core(SoftmaxRegression(epochs=2, random_state=0), pd.DataFrame(X),
                          pd.Series(y), **kw)
    np.testing.assert_array_equal(got.coef_, ref.coef_)
    assert [len(c[0]) for c in iter_chunks(pd.DataFrame(X), **kw)] == [100, 100, 100]
    with pytest.raises(TypeError, match="X must be an array with rows .* got list"):
        fit_out_of_core(SoftmaxRegression(), X.tolist(), y)


def test_chunks_are_whole_blocks(rng):
    """chunk_rows below an explicit block_rows cannot be whole blocks: refused, not silently
    made a block; below the default block size, the blocks are made that small."""
    X, y = teacher_data(rng, 300, k=4, c=3)
    with pytest.raises(ValueError, match=r"chunk_rows \(10\) must be at least block_rows "
                                         r"\(100\): a chunk is made of whole blocks"):
        fit_out_of_core(SoftmaxRegression(), X, y, chunk_rows=10, block_rows=100)
    assert {len(c[0]) for c in iter_chunks(X, chunk_rows=10)} == {10}
    assert {len(c[0]) for c in iter_chunks(X, chunk_rows=25, block_rows=10)} == {20}


def test_warm_start_and_foreign_estimators(tmp_path, rng):
    from sklearn.linear_model import SGDClassifier

    X, y = teacher_data(rng, 8000, c=3)
    Xm = to_memmap(tmp_path, "X.f32", X)
    est = fit_out_of_core(SoftmaxRegression(epochs=1, warm_start=True, random_state=0), Xm, y)
    first = est.loss_curve_[0]
    fit_out_of_core(est, Xm, y)
    assert est.loss_curve_[0] < first
    sk = fit_out_of_core(SGDClassifier(loss="log_loss", random_state=0), Xm, y, epochs=2,
                         chunk_rows=2000)
    assert sk.score(X, y) > 0.7
    with pytest.raises(TypeError, match=r"partial_fit.*LinearRegression\(solver='closed_form'\) "
                                        r"does not have: set_params\(solver='sgd'\)"):
        fit_out_of_core(LinearRegression(solver="closed_form"), Xm, y.astype(float))
    with pytest.raises(ValueError, match="rows"):
        fit_out_of_core(SoftmaxRegression(), Xm, y[:-1])


def test_verbose_reports_whole_epochs_not_chunks(rng, capsys):
    X, y = teacher_data(rng, 1000, c=3)
    est = fit_out_of_core(SoftmaxRegression(epochs=2, verbose=1, random_state=0), X, y,
                          chunk_rows=250, block_rows=50)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["epoch 1", "epoch 2"]
    losses = [float(line.split("loss ")[1].split(",")[0]) for line in lines]
    np.testing.assert_allclose(losses, est.loss_curve_, rtol=1e-5)


ONES = np.ones(300)


@pytest.mark.parametrize("cls,change,match", [
    (SoftmaxRegression, dict(sample_weight=ONES[1:]), "sample_weight must be a 1-D array of 300"),
    (SoftmaxRegression, dict(sample_weight=last_row(ONES, -0.5)), "sample_weight must be >= 0"),
    (SoftmaxRegression, dict(sample_weight=last_row(ONES, np.nan)), "sample_weight must be fin"),
    (SoftmaxRegression, dict(chunk_rows=0), "chunk_rows"),
    (SoftmaxRegression, dict(dtype=np.int32), "dtype"),
    (SoftmaxRegression, dict(scale=float("nan")), "scale"),
    (SoftmaxRegression, dict(X=lambda X: X + 0j), "real numbers"),
    (SoftmaxRegression, dict(classes=[0, 1]), "not in classes"),
    (SoftmaxRegression, dict(num_threads=5000), "num_threads"),
    (LinearRegression, dict(y=lambda y: last_row(y.astype(float), np.inf)), "y must be finite"),
], ids=["short-weights", "negative-weight", "nan-weight", "chunk_rows", "int-dtype", "nan-scale",
        "complex-X", "classes", "num_threads", "inf-target"])
def test_refused_calls_leave_the_estimator_as_it_was(rng, cls, change, match):
    """Everything that can be checked before training is, before the estimator changes --
    also what is in the last row of the weights or the targets -- and the error names the
    argument."""
    X, y = teacher_data(rng, 300, k=4, c=3, dtype=np.float64)
    est = cls(epochs=2, random_state=0).fit(X, y)
    before, pred = learned(est), est.predict(X)
    kw = dict(change, chunk_rows=change.get("chunk_rows", 50), block_rows=50)
    XX, yy = kw.pop("X", lambda X: X)(X), kw.pop("y", lambda y: y)(y)
    est.set_params(num_threads=kw.pop("num_threads", None))
    with pytest.raises((TypeError, ValueError), match=match):
        fit_out_of_core(est, XX, yy, **kw)
    est.set_params(num_threads=None)
    assert_same_model(est, before)
    np.testing.assert_array_equal(est.predict(X), pred)


def test_a_failure_midway_puts_the_estimator_back(rng):
    """A NaN in the last row of X shows only when its chunk is trained: by then earlier chunks
    have changed the model, and the call puts it back -- ours and scikit-learn's."""
    from sklearn.linear_model import SGDClassifier

    X, y = teacher_data(rng, 300, k=4, c=3, dtype=np.float64)
    bad = last_row(X, np.nan)
    for est in (SoftmaxRegression(epochs=2, random_state=0, warm_start=True),
                SGDClassifier(random_state=0)):
        fit_out_of_core(est, X, y, chunk_rows=50, block_rows=50, random_state=1)
        before, pred = learned(est), est.predict(X)
        with pytest.raises(ValueError, match="NaN"):
            fit_out_of_core(est, bad, y, chunk_rows=50, block_rows=50, random_state=0)
        assert_same_model(est, before)
        np.testing.assert_array_equal(est.predict(X), pred)


@pytest.mark.parametrize("w", [5e-324, 1e307])
def test_uniform_weights_of_any_size_are_no_weights(rng, w):
    """Weights relative to the file's mean must survive their sum overflowing (or being
    subnormal): before, 1e307 everywhere made every weight 0 and nothing was learned."""
    X, y = teacher_data(rng, 300, k=4, c=3, dtype=np.float64)
    for cls, t in ((SoftmaxRegression, y), (LinearRegression, X @ np.arange(4.0))):
        kw = dict(chunk_rows=50, block_rows=50)
        ref = fit_out_of_core(cls(epochs=2, random_state=0), X, t, sample_weight=ONES, **kw)
        got = fit_out_of_core(cls(epochs=2, random_state=0), X, t,
                              sample_weight=np.full(300, w), **kw)
        np.testing.assert_allclose(got.coef_, ref.coef_, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(got.loss_curve_, ref.loss_curve_, rtol=1e-12)


# ---- peak resident memory --------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    from fastshallow.estimators import SoftmaxRegression
    from fastshallow.outofcore import fit_out_of_core

    def hwm_mb():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

    path, n, k, release = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    X = np.memmap(path, np.float32, "r", shape=(n, k))
    y = np.memmap(path + ".y", np.int64, "r", shape=(n,))
    base = hwm_mb()
    t = time.perf_counter()
    est = fit_out_of_core(SoftmaxRegression(epochs=1, random_state=0), X, y,
                          release_pages=release)
    secs = time.perf_counter() - t
    print(json.dumps({"baseline_mb": base, "peak_mb": hwm_mb(), "secs": secs,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "loss": est.loss_curve_[-1]}))
""")


def write_teacher_file(path, n, k, c=10, seed=0, block=1 << 17):
    """n x k float32 rows written block by block (never the whole array in memory)."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((k, c)).astype(np.float32)
    with open(path, "wb") as fx, open(f"{path}.y", "wb") as fy:
        for s in range(0, n, block):
            Xb = rng.standard_normal((min(block, n - s), k), dtype=np.float32)
            fx.write(Xb.tobytes())
            fy.write(np.argmax(Xb @ W, axis=1).astype(np.int64).tobytes())


def measure_child(path, n, k, release: bool) -> dict:
    pkg_root = os.path.dirname(os.path.dirname(fastshallow.__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [pkg_root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), str(n), str(k),
                        "1" if release else "0"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_peak_resident_memory_stays_bounded(tmp_path):
    """A 512 MB memory-mapped float32 file trains with its pages never all resident: the
    peak RSS grows by a few chunks (64 MB each), not by the file.  Without releasing the
    pages (the control) the peak grows by about the file size.  The 2 GB measurement is in
    benches/bench_estimators.py."""
    n, k = 1_342_177, 100  # 512 MiB of float32
    path = tmp_path / "X.f32"
    write_teacher_file(path, n, k)
    size_mb = os.path.getsize(path) / 2**20
    got = measure_child(path, n, k, release=True)
    control = measure_child(path, n, k, release=False)
    print(f"\n{size_mb:.0f} MB file: peak RSS {got['peak_mb']:.0f} MB (baseline "
          f"{got['baseline_mb']:.0f} MB, {got['secs']:.2f} s); without releasing pages "
          f"{control['peak_mb']:.0f} MB")
    assert got["peak_mb"] - got["baseline_mb"] < 200, got
    assert got["peak_mb"] < 500, got
    assert control["peak_mb"] - control["baseline_mb"] > 0.8 * size_mb, control
    assert got["loss"] < 1.0


@pytest.mark.fashion
def test_fashion_mnist_from_an_idx_file(tmp_path, fashion_cache):
    """Train straight from the raw (decompressed) IDX image file, memory-mapped, with the
    uint8 -> [0, 1] scaling done per chunk: the accuracy of the in-memory fit."""
    from fastshallow.datasets import FashionMNIST

    tr = FashionMNIST(train=True, download=False)
    te = FashionMNIST(train=False, download=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.asarray(tr.data)))
    images = open_idx(path)
    kw = dict(lr=0.05, momentum=0.9, schedule="cosine", random_state=0)
    est = fit_out_of_core(SoftmaxRegression(**kw), images, tr.targets, scale=1 / 255,
                          chunk_rows=15_000)
    Xte = te.data.reshape(len(te), -1).astype(np.float32) / np.float32(255)
    Xtr = tr.data.reshape(len(tr), -1).astype(np.float32) / np.float32(255)
    ref = SoftmaxRegression(**kw).fit(Xtr, tr.targets).score(Xte, te.targets)
    acc = est.score(Xte, te.targets)
    assert acc >= 0.83 and abs(acc - ref) <= 0.01, (acc, ref)
