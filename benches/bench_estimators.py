"""The scikit-learn estimators: speed and accuracy against scikit-learn, the Dask paths against a
single machine, and the peak memory of an out-of-core fit on a 2 GB memory-mapped file.

    python -m pytest benches/bench_estimators.py -q -s --benchmark-columns=median,iqr,rounds
    python benches/bench_estimators.py          # the same measurements as a printed report

(``--benchmark-only`` would skip the three checks below, which time things themselves.)

Groups and checks (Fashion-MNIST, 60000 training rows of 784 float32 pixels in [0, 1], 10
epochs, batch 256 where it applies; test accuracy on the 10000 test images):

- ``fashion softmax 10 epochs``: ``fastshallow.estimators.SoftmaxRegression()`` (the book's
  settings: lr 0.1, constant), the same with the recommended recipe (lr 0.05, momentum 0.9,
  cosine), and scikit-learn's ``SGDClassifier(loss='log_loss', max_iter=10, tol=None)`` (one
  binary logistic model per class, one row at a time, 10 epochs);
  ``test_speedup_vs_sgdclassifier`` times both in the same run and requires fastshallow to be
  at least 10x faster *and* more accurate;
- ``test_dask_paths``: a single-machine fit against ``fit_dask`` (model averaging, plain and
  with ``lr_scale=4``, and one-shot) and ``dask_ml.wrappers.Incremental`` on 4 partitions
  through a 2-worker LocalCluster on 127.0.0.1; reports accuracies and seconds, requires the
  recommended paths within 0.01;
- ``test_memmap_2gb_peak_rss``: writes a 2 GiB float32 file (5368709 x 100, labels from a
  linear teacher) into a temporary folder and trains one epoch from its memory map in a fresh
  subprocess, which reports its peak resident set (VmHWM; ru_maxrss too, see the test's
  note); requires < 500 MB.

The real Fashion-MNIST files are needed (Debian's dataset-fashion-mnist or $FASTSHALLOW_DATA);
a private temporary cache is used.  Timings on a busy machine vary: the ratios are measured
within one run, both sides under the same load.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

EPOCHS = 10
BOOK = dict(lr=0.1)
RECIPE = dict(lr=0.05, momentum=0.9, schedule="cosine")


# ---- data ------------------------------------------------------------------------------------

def load_fashion():
    """(Xtr, ytr, Xte, yte) as float32 rows in [0, 1], through a private cache that is removed
    afterwards (the rows are copies, so nothing refers to it)."""
    from fastshallow.datasets import FashionMNIST

    old = os.environ.get("XDG_CACHE_HOME")
    with tempfile.TemporaryDirectory(prefix="fs-bench-cache-") as cache:
        os.environ["XDG_CACHE_HOME"] = cache
        try:
            tr = FashionMNIST(train=True, download=False)
            te = FashionMNIST(train=False, download=False)
            s = np.float32(1 / 255)
            return (tr.data.reshape(len(tr), -1).astype(np.float32) * s,
                    np.array(tr.targets),
                    te.data.reshape(len(te), -1).astype(np.float32) * s,
                    np.array(te.targets))
        finally:
            if old is None:
                os.environ.pop("XDG_CACHE_HOME", None)
            else:
                os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="module")
def fashion():
    return load_fashion()


# ---- the three trainers ----------------------------------------------------------------------

def fit_fastshallow(Xtr, ytr, **kw):
    from fastshallow.estimators import SoftmaxRegression

    return SoftmaxRegression(epochs=EPOCHS, random_state=0, **kw).fit(Xtr, ytr)


def fit_sgdclassifier(Xtr, ytr):
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(loss="log_loss", max_iter=EPOCHS, tol=None, random_state=0).fit(Xtr,
                                                                                          ytr)


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def compare_with_sgdclassifier(data, repeats: int = 5) -> dict:
    """Best-of-`repeats` seconds of fastshallow (book settings and recipe), one run of
    SGDClassifier, the test accuracies, and the speed ratio."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    Xtr, ytr, Xte, yte = data
    res = {}
    for name, kw in (("fastshallow-book", BOOK), ("fastshallow-recipe", RECIPE)):
        runs = [timed(fit_fastshallow, Xtr, ytr, **kw) for _ in range(repeats)]
        res[name] = {"seconds": min(s for _, s in runs), "acc": runs[0][0].score(Xte, yte)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk, secs = timed(fit_sgdclassifier, Xtr, ytr)
    res["sklearn-SGDClassifier"] = {"seconds": secs, "acc": sk.score(Xte, yte)}
    res["speedup"] = secs / res["fastshallow-book"]["seconds"]
    return res


@pytest.mark.parametrize("impl", ["fastshallow-book", "fastshallow-recipe",
                                  "sklearn-SGDClassifier"])
def test_fashion_fit(benchmark, impl, fashion):
    Xtr, ytr, Xte, yte = fashion
    benchmark.group = f"fashion softmax {EPOCHS} epochs"
    if impl == "sklearn-SGDClassifier":
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = benchmark.pedantic(fit_sgdclassifier, args=(Xtr, ytr), rounds=1,
                                       iterations=1)
    else:
        kw = BOOK if impl == "fastshallow-book" else RECIPE
        model = benchmark.pedantic(fit_fastshallow, args=(Xtr, ytr), kwargs=kw, rounds=5,
                                   iterations=1)
    benchmark.extra_info["test_accuracy"] = round(float(model.score(Xte, yte)), 4)


def test_speedup_vs_sgdclassifier(fashion):
    r = compare_with_sgdclassifier(fashion)
    print("\n" + json.dumps(r, indent=1))
    book, sk = r["fastshallow-book"], r["sklearn-SGDClassifier"]
    assert r["speedup"] >= 10, r
    assert book["acc"] > sk["acc"] and r["fastshallow-recipe"]["acc"] > sk["acc"], r
    assert book["acc"] >= 0.82 and r["fastshallow-recipe"]["acc"] >= 0.83, r


# ---- Dask ------------------------------------------------------------------------------------

def dask_paths(data, parts: int = 4) -> dict:
    import dask
    import dask.array as da
    import distributed
    from dask_ml.wrappers import Incremental

    import fastshallow as fs
    from fastshallow.distributed import fit_dask
    from fastshallow.estimators import SoftmaxRegression

    Xtr, ytr, Xte, yte = data
    res = {}
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                       protocol="tcp://", host="127.0.0.1",
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        def scatter(a):
            pieces = np.array_split(a, parts)
            futs = client.scatter(pieces)
            return da.concatenate([da.from_delayed(dask.delayed(f), p.shape, p.dtype)
                                   for f, p in zip(futs, pieces)])

        dX, dy = scatter(Xtr), scatter(ytr)
        rows = len(Xtr) // parts
        for label, kw in (("book", BOOK), ("recipe", RECIPE)):
            est, s = timed(SoftmaxRegression(epochs=EPOCHS, random_state=0, **kw).fit, Xtr, ytr)
            res[f"{label}/single"] = {"acc": est.score(Xte, yte), "seconds": s}
            for name, fkw in (("fit_dask", {}), ("fit_dask lr_scale=4", {"lr_scale": parts}),
                              ("fit_dask one-shot", {"rounds": 1, "local_epochs": EPOCHS})):
                est, s = timed(fit_dask, SoftmaxRegression(epochs=EPOCHS, random_state=0, **kw),
                               dX, dy, **fkw)
                res[f"{label}/{name}"] = {"acc": est.score(Xte, yte), "seconds": s}
            ikw = dict(kw)
            if ikw.get("schedule") == "cosine":
                ikw["schedule"] = fs.optim.CosineSchedule(EPOCHS * parts * -(-rows // 256))
            inc = Incremental(SoftmaxRegression(random_state=0, **ikw), random_state=0)
            t = time.perf_counter()
            for _ in range(EPOCHS):
                inc.partial_fit(dX, dy, classes=np.arange(10))
            res[f"{label}/Incremental"] = {"acc": inc.score(Xte, yte),
                                           "seconds": time.perf_counter() - t}
    finally:
        client.close()
        cluster.close()
    return res


def test_dask_paths(fashion):
    r = dask_paths(fashion)
    print("\n" + "\n".join(f"{k:32s} acc {v['acc']:.4f}  {v['seconds']:.2f} s"
                           for k, v in r.items()))
    single = r["recipe/single"]["acc"]
    assert abs(r["recipe/fit_dask lr_scale=4"]["acc"] - single) <= 0.01, r
    assert abs(r["recipe/Incremental"]["acc"] - single) <= 0.01, r


# ---- 2 GB memory-mapped fit ------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    from fastshallow.estimators import SoftmaxRegression
    from fastshallow.outofcore import fit_out_of_core

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024

    path, n, k, release = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
    X = np.memmap(path, np.float32, "r", shape=(n, k))
    y = np.memmap(path + ".y", np.int64, "r", shape=(n,))
    base = status("VmHWM")
    t = time.perf_counter()
    est = fit_out_of_core(SoftmaxRegression(epochs=1, random_state=0), X, y,
                          release_pages=release)
    secs = time.perf_counter() - t
    Xs = np.asarray(X[:100_000]); ys = np.asarray(y[:100_000])
    print(json.dumps({"baseline_mb": base, "peak_mb": status("VmHWM"),
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "seconds": secs, "train_acc_first_100k": est.score(Xs, ys),
                      "loss_curve": est.loss_curve_}))
""")


def write_teacher_file(path, n, k, c=10, seed=0, block=1 << 17):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((k, c)).astype(np.float32)
    with open(path, "wb") as fx, open(f"{path}.y", "wb") as fy:
        for s in range(0, n, block):
            Xb = rng.standard_normal((min(block, n - s), k), dtype=np.float32)
            fx.write(Xb.tobytes())
            fy.write(np.argmax(Xb @ W, axis=1).astype(np.int64).tobytes())


def memmap_peak_rss(gib: float = 2.0, k: int = 100, release: bool = True,
                    folder=None) -> dict:
    import fastshallow

    n = int(gib * 2**30) // (4 * k)
    with tempfile.TemporaryDirectory(dir=folder, prefix="fs-memmap-") as tmp:
        path = os.path.join(tmp, "X.f32")
        t = time.perf_counter()
        write_teacher_file(path, n, k)
        write_s = time.perf_counter() - t
        size = os.path.getsize(path)
        root = os.path.dirname(os.path.dirname(fastshallow.__file__))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        r = subprocess.run([sys.executable, "-c", CHILD, path, str(n), str(k),
                            "1" if release else "0"], capture_output=True, text=True, env=env)
        if r.returncode:
            raise RuntimeError(r.stderr[-3000:])
        out = json.loads(r.stdout.strip().splitlines()[-1])
    out.update(file_mb=size / 2**20, rows=n, features=k, write_seconds=write_s)
    return out


def test_memmap_2gb_peak_rss():
    """The peak is VmHWM of the child's own address space.  (ru_maxrss is reported too, but on
    Linux it carries over the peak of the address space the child was forked with -- the
    benchmark process's, with Fashion-MNIST loaded -- across the exec; it is a bound only when
    the parent is small, as it is when this file runs alone: ``-k memmap``.)"""
    r = memmap_peak_rss(2.0)
    print("\n" + json.dumps(r, indent=1))
    assert r["file_mb"] >= 2047
    assert r["peak_mb"] < 500, r


# ---- as a script -----------------------------------------------------------------------------

def main() -> None:
    import fastshallow as fs

    fs.show_config()
    data = load_fashion()
    r = compare_with_sgdclassifier(data)
    print(f"\nFashion-MNIST softmax regression, {EPOCHS} epochs (best of 5 for fastshallow):")
    for name in ("fastshallow-book", "fastshallow-recipe", "sklearn-SGDClassifier"):
        print(f"  {name:24s} {r[name]['seconds']:8.3f} s   test acc {r[name]['acc']:.4f}")
    print(f"  speedup over SGDClassifier (book settings): {r['speedup']:.1f}x")
    print("\nDask, 4 partitions, 2 workers on 127.0.0.1:")
    for k, v in dask_paths(data).items():
        print(f"  {k:32s} test acc {v['acc']:.4f}   {v['seconds']:.2f} s")
    m = memmap_peak_rss(2.0)
    print(f"\nOut of core: {m['file_mb']:.0f} MB float32 memmap ({m['rows']} x {m['features']}), "
          f"one epoch in {m['seconds']:.2f} s: peak RSS {m['peak_mb']:.0f} MB "
          f"(ru_maxrss {m['maxrss_mb']:.0f} MB; {m['baseline_mb']:.0f} MB after imports), "
          f"train acc {m['train_acc_first_100k']:.4f}")


if __name__ == "__main__":
    main()
