"""Training loops: the fused compiled path against the per-batch loop, determinism across
thread counts, divergence, and the book's updater-as-a-callable style."""
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastshallow as fs
from conftest import assert_bits_equal

N_CLASSES = 7


class ScaledImages(fs.ArrayDataset):
    """uint8 rows scaled by 1/255 on the way in, like Fashion-MNIST with ToTensor."""

    scale = np.float32(1 / 255)

    def as_arrays(self):
        X, y = self.arrays
        return X.reshape(len(X), -1), y, self.scale, X.shape[1:]

    def get_batch(self, idx):
        X, y = self.arrays
        return fs.kernels.gather_rows(X, idx, scale=self.scale), y[idx]


def blobs(rng, n=1500, k=37, uint8=False, classes=N_CLASSES):
    """Separable-ish classes: each class has its own mean pattern."""
    centers = rng.uniform(0, 1, (classes, k))
    y = rng.integers(0, classes, n)
    X = centers[y] + rng.normal(0, 0.35, (n, k))
    if uint8:
        return np.clip(X * 180, 0, 255).astype(np.uint8), y.astype(np.int64)
    return X.astype(np.float32), y.astype(np.int64)


def make(kind, rng, dtype=np.float32, uint8=False, scaled=False, k=None, outputs=None):
    """Softmax on 37 features and N_CLASSES classes by default; regression on 13 features
    (shorter than a float32 vector) and one output.  `outputs` sets the classes or outputs."""
    if kind == "softmax":
        classes = outputs or N_CLASSES
        X, y = blobs(rng, k=k or 37, uint8=uint8, classes=classes)
        if uint8 or scaled:  # scaled float rows: 255 times too large, scaled on the way in
            ds = ScaledImages(X if uint8 else (X * 255).astype(dtype), y)
        else:
            ds = fs.ArrayDataset(X.astype(dtype), y)
        return ds, fs.losses.SoftmaxCrossEntropyLoss(), classes
    w = rng.normal(size=(k or 13, outputs) if outputs else k or 13)
    if uint8:  # pixels in, targets a linear function of the scaled pixels plus noise
        X = rng.integers(0, 256, (1200, len(w)), dtype=np.uint8)
        y = (X * ScaledImages.scale) @ w + 0.7 + rng.normal(0, 0.01, (1200,) + w.shape[1:])
        ds = ScaledImages(X, y.astype(dtype))
    else:
        X, y = fs.synthetic_data(w, 0.7, 1200, seed=rng, dtype=dtype)
        ds = ScaledImages((X * 255).astype(dtype), y) if scaled else fs.ArrayDataset(X, y)
    loss = fs.losses.L2Loss() if kind == "l2" else fs.losses.HuberLoss(0.5)
    return ds, loss, outputs or 1


def run(ds, loss, units, *, fused, dtype=np.float32, momentum=0.0, wd=0.0, schedule=None,
        epochs=3, lr=0.05, batch=64, threads=None, seed=3):
    it = fs.DataLoader(ds, batch, shuffle=True, seed=seed)
    net = fs.nn.Dense(units, dtype=dtype, rng=seed)
    sched = fs.optim.CosineSchedule(epochs * len(it)) if schedule == "cosine" else None
    opt = fs.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=wd,
                       schedule=sched)
    hist = fs.train(net, it, None, loss, epochs, opt, fused=fused, verbose=False,
                    progress=False, num_threads=threads)
    assert hist.fused == fused
    return net, hist


CASES = [
    dict(kind="softmax"),
    dict(kind="softmax", uint8=True),
    # the ways the fused step reads rows in place: uint8, scaled floats, rows shorter than a
    # vector (k < 16), and the last partial vector of a row (k = 37 above)
    dict(kind="softmax", scaled=True),
    dict(kind="softmax", uint8=True, k=9),
    dict(kind="softmax", scaled=True, k=5, dtype=np.float64),
    dict(kind="softmax", momentum=0.9, schedule="cosine"),
    dict(kind="softmax", wd=1e-3, momentum=0.5),
    dict(kind="softmax", dtype=np.float64),
    # 11 to 16 classes over rows long enough that the AVX2 gradient carries its sums in more
    # than one panel of columns (13 x 784 doubles, 16 x 600 floats): scaled and uint8 rows
    dict(kind="softmax", scaled=True, outputs=13, k=784, dtype=np.float64),
    dict(kind="softmax", uint8=True, outputs=16, k=600),
    dict(kind="l2"),
    dict(kind="l2", momentum=0.9, dtype=np.float64),
    dict(kind="huber", schedule="cosine", lr=0.5, epochs=4),
    # One output with rows of up to 128 floats or 64 doubles takes its own path (each row read
    # once, held in registers; so does l2 on 13 doubles above).  On AVX-512 (vectors of 16
    # floats): a partial last vector of 4 floats, one and three whole vectors of floats, 8 of
    # doubles, scaled rows with a partial vector of 8 floats and of 4 doubles; on AVX2 (8
    # floats): 12 vectors and 4 floats, 2 and 6 vectors, 16 of doubles, and scaled rows of 5
    # whole vectors of either.  129 floats do not.
    dict(kind="l2", k=100, lr=0.1, epochs=4),
    dict(kind="l2", k=16, wd=1e-3, momentum=0.5, lr=0.1, epochs=4),
    dict(kind="huber", k=48, schedule="cosine", lr=0.5, epochs=4),
    dict(kind="l2", k=64, dtype=np.float64, lr=0.1, epochs=4),
    dict(kind="l2", k=40, scaled=True, lr=0.1, epochs=4),
    dict(kind="huber", k=20, scaled=True, dtype=np.float64, schedule="cosine", lr=0.5, epochs=4),
    dict(kind="l2", k=129, lr=0.1, epochs=4),
    # More than 16 outputs: weights in panels of 16 floats / 8 doubles, the gradient through
    # the panel product (two to five panels; with 17, 20 and 33 outputs the last is partial).
    # The regression losses average over the outputs, hence the larger learning rates.
    dict(kind="softmax", outputs=20),
    dict(kind="softmax", uint8=True, outputs=33, k=100, momentum=0.9),
    dict(kind="softmax", outputs=24, dtype=np.float64, wd=1e-3),
    dict(kind="l2", outputs=17, wd=1e-3, lr=1.0, epochs=4),
    dict(kind="huber", outputs=40, k=64, scaled=True, dtype=np.float64, lr=20.0, epochs=4),
    # Regression from uint8 rows (scaled on the way in): one output, a few, and panels.
    dict(kind="l2", uint8=True, k=100, momentum=0.9, lr=0.02, epochs=6),
    dict(kind="huber", uint8=True, k=37, outputs=3, lr=0.5, epochs=6),
    dict(kind="l2", uint8=True, k=20, outputs=17, wd=1e-3, lr=1.0, epochs=6),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(
    f"{k}={getattr(v, '__name__', v)}" for k, v in c.items()))
def test_fused_path_matches_per_batch_loop(case, rng):
    case = dict(case)
    kind, uint8 = case.pop("kind"), case.pop("uint8", False)
    scaled, k, outputs = case.pop("scaled", False), case.pop("k", None), case.pop("outputs", None)
    dtype = case.get("dtype", np.float32)
    ds, loss, units = make(kind, rng, dtype, uint8, scaled, k, outputs)
    net_loop, h_loop = run(ds, loss, units, fused=False, **case)
    net_fused, h_fused = run(ds, loss, units, fused=True, **case)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for a, b in zip(net_loop.parameters(), net_fused.parameters()):
        np.testing.assert_allclose(b.data, a.data, rtol=tol, atol=tol * np.abs(a.data).max())
    np.testing.assert_allclose(h_fused.train_loss, h_loop.train_loss, rtol=1e-4)
    if kind == "softmax":
        np.testing.assert_allclose(h_fused.train_acc, h_loop.train_acc, atol=2 / len(ds))
        # the problem is learnable (less so with few features or many classes; chance is 1/7
        # or less): training did something
        assert h_fused.train_acc[-1] > (0.5 if outputs else 0.8 if (k or 37) >= 37 else 0.3)
    else:
        # pixels scaled to [0, 1] are far from centred, which slows plain SGD down (the bias
        # and the weights pull against each other): less progress is asked of them
        assert h_fused.train_loss[-1] < (0.5 if uint8 else 0.05) * h_fused.train_loss[0]


@pytest.mark.parametrize("kind, k, classes, plan", [
    ("softmax", 300, N_CLASSES, "rows"), ("softmax", 784, 16, "rows"),
    ("softmax", 300, 20, "panels"),
    ("l2", 300, 1, "shares"), ("l2", 100, 1, "shares")])
def test_fused_training_is_bit_identical_for_1_2_and_3_threads(kind, k, classes, plan, rng):
    """Each phase of a fused minibatch is split among the threads by their measured speed, so
    the split moves from run to run; no value may depend on it.  Softmax takes the
    weight-gradient rows path (or with more than 16 classes the panel product), linear
    regression the per-chunk shares (fs_fused_share_rows; 64 rows of a batch of 256), added up
    by the threads as a chain, with each row held in registers (k = 100: 7 AVX-512 vectors, 13
    AVX2 ones)."""
    from fastshallow._ext import kernels

    assert kernels().fused_plan(256, k, classes, np.float32, 1 if kind == "softmax" else 4) == plan
    # Big enough that the kernels really start a second thread.
    if kind == "softmax":
        X, y = blobs(rng, n=4000, k=k, uint8=True, classes=classes)
        ds, loss, units = ScaledImages(X, y), fs.losses.SoftmaxCrossEntropyLoss(), classes
    else:
        X, y = fs.synthetic_data(rng.normal(size=k), 0.1, 4000, seed=rng)
        ds, loss, units = fs.ArrayDataset(X, y), fs.losses.L2Loss(), 1
    one, h1 = run(ds, loss, units, fused=True, threads=1, batch=256, momentum=0.9, lr=0.01)
    for threads in (2, 3):
        more, h = run(ds, loss, units, fused=True, threads=threads, batch=256, momentum=0.9,
                      lr=0.01)
        for a, b in zip(one.parameters(), more.parameters()):
            assert_bits_equal(a.data, b.data, f"{threads} threads")
        assert h1.train_loss == h.train_loss


def test_per_batch_loop_is_bit_identical_for_1_and_2_threads(rng, monkeypatch):
    # The loop's calls (256 x 300 x 7) are below DEFAULT_SERIAL_WORK, where the default count
    # runs on one thread: lowered here, they start teams as asked-for counts do.
    from fastshallow import _config

    monkeypatch.setattr(_config, "DEFAULT_SERIAL_WORK", _config.SERIAL_WORK)
    assert 256 * 300 * N_CLASSES >= 4 * _config.SERIAL_WORK
    X, y = blobs(rng, n=3000, k=300)
    ds = fs.ArrayDataset(X, y)
    nets = []
    for threads in (1, 2):
        fs.set_num_threads(threads)
        try:
            nets.append(run(ds, fs.losses.SoftmaxCrossEntropyLoss(), N_CLASSES, fused=False,
                            batch=256, epochs=2)[0])
        finally:
            fs.set_num_threads(None)
    for a, b in zip(*[n.parameters() for n in nets]):
        assert_bits_equal(a.data, b.data)


@pytest.mark.parametrize("fused", [True, False])
def test_divergence_is_reported_with_epoch_and_batch(fused, rng):
    """...and the optimizer has counted the steps taken, that minibatch's included (the
    schedule's clock), on both paths alike."""
    ds, loss, units = make("l2", rng)
    net = fs.nn.Dense(units, rng=3)
    opt = fs.optim.SGD(net.parameters(), lr=1e6)
    with pytest.raises(fs.TrainingDiverged,
                       match=r"epoch 1, minibatch (\d+) \(learning rate 1e\+06\).*smaller") as e:
        fs.train(net, fs.DataLoader(ds, 64, shuffle=True, seed=3), None, loss, 3, opt,
                 fused=fused, verbose=False, progress=False)
    batch = int(re.search(r"minibatch (\d+)", str(e.value))[1])
    assert 1 < batch < len(ds) // 64 and opt.num_steps == batch


def test_huge_but_finite_softmax_loss_is_not_divergence(rng):
    # Softmax cross-entropy gradients are bounded: a huge learning rate makes huge weights and
    # losses, but finite ones -- both paths must agree that this is not divergence.
    X, y = blobs(rng)
    ds = fs.ArrayDataset(X * 1e3, y)
    for fused in (True, False):
        net, hist = run(ds, fs.losses.SoftmaxCrossEntropyLoss(), N_CLASSES, fused=fused,
                        lr=1e30)
        assert all(math.isfinite(v) for v in hist.train_loss)


def test_fused_true_refuses_what_it_cannot_run(rng):
    X, y = blobs(rng, n=100)
    it = fs.DataLoader(fs.ArrayDataset(X, y), 10)
    net = fs.nn.Sequential(fs.nn.Dense(8), fs.nn.Dense(N_CLASSES))
    net(X[:1])
    opt = fs.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="not a single Dense layer"):
        fs.train(net, it, None, fs.losses.SoftmaxCrossEntropyLoss(), 1, opt, fused=True,
                 verbose=False)
    # ... and the per-batch loop trains the two-layer network instead
    hist = fs.train(net, it, None, fs.losses.SoftmaxCrossEntropyLoss(), 2, opt, verbose=False)
    assert not hist.fused and hist.train_loss[1] < hist.train_loss[0]


def test_book_style_callable_updater(rng):
    X, y = fs.synthetic_data([2, -3.4], 4.2, 1000, seed=rng)
    it = fs.load_array((X, y), 10, seed=1)
    w = fs.Parameter(rng.normal(0, 0.01, (2, 1)))
    b = fs.Parameter(np.zeros(1))

    class Net(fs.nn.Block):
        def forward(self, X):
            return fs.linreg(X, w, b)

    hist = fs.train(Net(), it, None, fs.losses.L2Loss(), 3,
                    lambda batch_size: fs.sgd([w, b], 0.03, batch_size), verbose=False)
    assert not hist.fused
    assert np.abs(w.data.ravel() - [2, -3.4]).max() < 2e-3 and abs(b.data[0] - 4.2) < 2e-3
    assert all(math.isnan(a) for a in hist.train_acc)


def test_history_printing_and_callback(rng, capsys):
    X, y = blobs(rng, n=600)
    train_it = fs.DataLoader(fs.ArrayDataset(X[:500], y[:500]), 50, shuffle=True, seed=0)
    test_it = fs.DataLoader(fs.ArrayDataset(X[500:], y[500:]), 50)
    net = fs.nn.Dense(N_CLASSES)
    seen = []
    hist = fs.train(net, train_it, test_it, fs.losses.SoftmaxCrossEntropyLoss(), 3,
                    fs.optim.SGD(net.parameters(), lr=0.5), progress=False,
                    callback=lambda e, h: seen.append((e, len(h))))
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and out[0].startswith("epoch 1, loss ")
    assert "train acc" in out[0] and "test acc" in out[0]
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert len(hist) == 3 and all(s > 0 for s in hist.seconds)
    # test accuracy is what evaluate_accuracy says, through both of its paths
    fast = fs.evaluate_accuracy(net, test_it)
    slow = sum(fs.accuracy(net(Xb), yb) for Xb, yb in test_it) / 100
    assert hist.test_acc[-1] == fast == pytest.approx(slow)


def test_evaluate_accuracy_compiled_count_compares_labels_as_values(rng, monkeypatch):
    """The compiled hit count behind evaluate_accuracy gives what comparing predictions with
    the labels as values gives (the per-batch path): integer labels of any width, float labels
    (2.5, NaN, -1.0 and 1e30 match no class), labels past the classes, uint8 and float rows."""
    from fastshallow import _fused

    calls = []
    count = _fused.count_hits
    monkeypatch.setattr(_fused, "count_hits", lambda *a, **k: calls.append(1) or count(*a, **k))
    n = 203
    for X in (rng.standard_normal((n, 12)).astype(np.float32),
              rng.integers(0, 256, (n, 3, 4), dtype=np.uint8)):
        net = fs.nn.Sequential(fs.nn.Flatten(), fs.nn.Dense(4))
        net(X[:1].astype(np.float32))
        pred = np.concatenate([net(X[s:s + 50].astype(np.float32)).argmax(axis=1)
                               for s in range(0, n, 50)])
        odd = np.arange(n) % 3 == 0
        for y in (pred, pred.astype(np.uint8), (pred - 1) % 5, pred.astype(np.float64),
                  np.where(odd, pred + 0.5, pred), np.where(odd, np.nan, pred),
                  np.where(odd, -1.0, pred), np.where(odd, 1e30, pred).astype(np.float32)):
            it = fs.DataLoader(fs.ArrayDataset(X, y, check_finite=False), 16)
            before = len(calls)
            fast = fs.evaluate_accuracy(net, it, num_threads=2)
            assert len(calls) == before + 1  # the compiled count ran
            slow = sum(fs.accuracy(net(Xb), yb) for Xb, yb in it) / n
            assert fast == slow, (y.dtype, fast, slow)
        assert fs.evaluate_accuracy(net, fs.DataLoader(fs.ArrayDataset(X, pred), 16)) == 1.0


def test_evaluate_accuracy_takes_one_label_per_row_on_both_paths(rng):
    """Labels (n, 1) are counted by the compiled path as (n,) are; labels of another shape,
    which the compiled count would flatten, are refused as accuracy() refuses them."""
    X = rng.standard_normal((40, 5)).astype(np.float32)
    net = fs.nn.Dense(3)
    net(X[:1])
    y = rng.integers(0, 3, 40)
    flat = fs.evaluate_accuracy(net, fs.DataLoader(fs.ArrayDataset(X, y), 16))
    assert fs.evaluate_accuracy(net, fs.DataLoader(fs.ArrayDataset(X, y[:, None]), 16)) == flat
    for labels in (y.reshape(40, 1, 1), np.stack([y, y], axis=1)):
        with pytest.raises(ValueError, match=r"y must hold one label per row"):
            fs.evaluate_accuracy(net, fs.DataLoader(fs.ArrayDataset(X, labels), 16))


def test_train_epoch_returns_loss_and_accuracy(rng):
    X, y = blobs(rng)
    it = fs.DataLoader(fs.ArrayDataset(X, y), 64, shuffle=True, seed=0)
    net = fs.nn.Dense(N_CLASSES)
    opt = fs.optim.SGD(net.parameters(), lr=0.5)
    l1, a1 = fs.train_epoch(net, it, fs.losses.SoftmaxCrossEntropyLoss(), opt)
    l2, a2 = fs.train_epoch(net, it, fs.losses.SoftmaxCrossEntropyLoss(), opt)
    assert l2 < l1 and 0 <= a1 <= 1 and a2 > a1
    assert opt.num_steps == 2 * len(it)


def test_thread_chooser_keeps_the_faster_team_and_reprobes():
    from fastshallow._fused import ThreadChooser

    ch = ThreadChooser(2, probe_every=8)
    picks = []
    for _ in range(26):
        t = ch.pick()
        picks.append(t)
        ch.record(t, 1.0 if t == 2 else 0.1, 10)  # two threads are slow here: a busy machine
    # both timed first, then the faster (one thread), re-timing two threads 2 segments later,
    # then after gaps of 4 and 8 (the cap) segments
    assert picks == [2, 1, 1, 1, 2, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 2, 1]
    assert ThreadChooser(1).pick() == 1


def test_thread_chooser_needs_a_large_gain_to_drop_to_one_thread():
    """Noise on a quiet machine makes a team segment a third slower now and then; only a gain
    of half again moves the work to one thread, while 10% brings it back to the team."""
    from fastshallow._fused import ThreadChooser

    def timed(team_cost):
        ch = ThreadChooser(2)
        for _ in range(2):  # the team, then one thread
            t = ch.pick()
            ch.record(t, team_cost if t == 2 else 1.0, 10)
        return ch

    assert timed(1.4).pick() == 2 and timed(1.6).pick() == 1
    ch = timed(2.0)
    assert [ch.pick(), ch.pick(), ch.pick()] == [1, 1, 2]  # the team re-timed 2 segments on
    ch.record(2, 0.0, 10)  # and fast now: its average (0.1 a minibatch) is one thread's
    assert ch.pick() == 1
    ch.record(1, 1.6, 10)  # one thread slower: 0.13, 1.3 times the team's, and back it goes
    assert ch.pick() == 2


def test_thread_chooser_recovers_from_an_unlucky_first_timing():
    from fastshallow._fused import ThreadChooser

    ch = ThreadChooser(2)
    picks = []
    for i in range(40):
        t = ch.pick()
        picks.append(t)
        # the first timing of two threads was hit by another process; later ones are fast
        ch.record(t, (5.0 if i == 0 else 0.4) if t == 2 else 1.0, 10)
    assert picks[:4] == [2, 1, 1, 1] and picks[4] == 2  # re-timed two segments after choosing
    # The average forgets the unlucky timing over a few re-timings (at segments 5, 9, 17, 33),
    # then two threads are kept: within 3 Fashion-MNIST epochs, where a re-timing every 64
    # segments would have taken 17.
    assert picks[33:] == [2] * 7


def test_default_thread_choice_gives_the_same_bits_as_fixed_teams(rng):
    X, y = blobs(rng, n=3000, k=400, uint8=True)
    ds = ScaledImages(X, y)
    nets = [run(ds, fs.losses.SoftmaxCrossEntropyLoss(), N_CLASSES, fused=True, threads=t,
                batch=256)[0] for t in (None, 1)]
    for a, b in zip(*[n.parameters() for n in nets]):
        assert_bits_equal(a.data, b.data)


def spy_on_fused_calls(monkeypatch):
    """The (minibatches, threads) of every compiled fused_sgd call from now on, in order; the
    calls still run."""
    from fastshallow import _fused

    real, calls = _fused._k(), []

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def fused_sgd(self, *args):
            t0, t1, threads = args[-4:-1]
            calls.append((t1 - t0, threads))
            return real.fused_sgd(*args)

    monkeypatch.setattr(_fused, "_k", Spy)
    return calls


def test_default_thread_choice_times_the_other_team_on_short_segments(rng, monkeypatch):
    """The default thread choice first runs a whole segment on the full team, then re-times one
    thread on a quarter of a segment (a few minibatches time it; on a quiet machine it is the
    slower choice), then goes on in whole segments (here, what is left of the epoch)."""
    from fastshallow import _fused

    calls = spy_on_fused_calls(monkeypatch)
    monkeypatch.setattr(_fused, "resolve_threads", lambda num_threads, work, **kw: 2)
    # Segments after the probe are sized by the time the last took: on a busy machine the rest
    # of the epoch could take more than one.  Here any time is short enough.
    monkeypatch.setattr(_fused, "SEGMENT_SECONDS", 1e9)
    X, y = blobs(rng, n=3000, k=400, uint8=True)  # 12 minibatches of 256; segments of 16
    run(ScaledImages(X, y), fs.losses.SoftmaxCrossEntropyLoss(), N_CLASSES, fused=True,
        threads=None, batch=256, epochs=2)
    assert calls[:2] == [(12, 2), (4, 1)], calls
    assert sum(n for n, _ in calls) == 24 and len(calls) == 3, calls


def test_default_fused_minibatches_start_a_team_below_the_per_call_floor(rng, monkeypatch):
    """A fused minibatch of 256 x 400 x 7 multiply-adds is below DEFAULT_SERIAL_WORK, under
    which a lone kernel call on the default count stays on one thread; the fused path tries
    the team from SERIAL_WORK, as its chooser drops it while one thread runs faster."""
    from fastshallow import _config, _fused

    calls = spy_on_fused_calls(monkeypatch)
    monkeypatch.setattr(_fused, "SEGMENT_SECONDS", 1e9)
    assert _config.SERIAL_WORK <= 256 * 400 * N_CLASSES < _config.DEFAULT_SERIAL_WORK
    X, y = blobs(rng, n=3000, k=400, uint8=True)
    fs.set_num_threads(2)
    try:
        run(ScaledImages(X, y), fs.losses.SoftmaxCrossEntropyLoss(), N_CLASSES, fused=True,
            threads=None, batch=256, epochs=1)
    finally:
        fs.set_num_threads(None)
    assert calls[0] == (12, 2 if fs._kernels.openmp_enabled() else 1), calls


@pytest.mark.parametrize("seconds, first_epoch, second_epoch", [
    (1e9, [16, 24], [40]),  # every timed segment long enough for the rest of the epoch
    (0.0, [16] + [1] * 24, [1] * 40),  # no time at all: one minibatch a call
])
def test_segments_are_sized_by_the_time_the_last_one_took(rng, monkeypatch, seconds,
                                                           first_epoch, second_epoch):
    """The first compiled call of a trainer runs SEGMENT minibatches; every later one as many as
    take SEGMENT_SECONDS at the speed the last call ran, across epochs too.  The results do not
    depend on how the epoch is cut."""
    from fastshallow import _fused

    X, y = blobs(rng, n=40 * 64, k=40)  # 40 minibatches of 64; no untimed size from work
    loss = fs.losses.SoftmaxCrossEntropyLoss()
    ref, _ = run(fs.ArrayDataset(X, y), loss, N_CLASSES, fused=True, threads=2, epochs=2)
    calls = spy_on_fused_calls(monkeypatch)
    monkeypatch.setattr(_fused, "SEGMENT_SECONDS", seconds)
    monkeypatch.setattr(_fused, "SEGMENT_WORK", 0)
    net, _ = run(fs.ArrayDataset(X, y), loss, N_CLASSES, fused=True, threads=2, epochs=2)
    assert [n for n, _ in calls] == first_epoch + second_epoch
    for a, b in zip(net.parameters(), ref.parameters()):
        assert_bits_equal(a.data, b.data)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="x86-64 ISA switch")
@pytest.mark.parametrize("switch", ["FASTSHALLOW_NO_AVX512", "FASTSHALLOW_NO_AVX2"])
def test_fused_training_on_the_other_isas(switch):
    """With AVX-512 or AVX2 the fused step's products read the rows in place, in kernels of each
    width; without either, it gathers each chunk's rows into scratch and multiplies the copy.
    The switches keep kernels out (read once per process): the fused tests run again in a
    subprocess, on AVX2 (or the portable loops) and on the portable loops."""
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, **{switch: "1"})
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         os.path.join(here, "test_training.py"), os.path.join(here, "test_kernels.py"),
         "-k", "(matches_per_batch or bit_identical or fused_forward or labels_as_values"
               " or losses_and_hits"
               " or isa_follows)"
               " and not other_isas"],
        env=env, capture_output=True, text=True, timeout=600, cwd=here)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    passed = int(res.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed >= 20, res.stdout[-2000:]


_TEAM_SCRIPT = """
import sys
import numpy as np, fastshallow as fs
rng = np.random.default_rng(0)
X = rng.integers(0, 256, (3000, 300), dtype=np.uint8)
y = rng.integers(0, 7, 3000)
Xr = rng.standard_normal((3000, 300)).astype(np.float32)
yr = (Xr @ rng.standard_normal(300)).astype(np.float32)
for Xs, ys, units, loss in ((X, y, 7, fs.losses.SoftmaxCrossEntropyLoss()),
                           (Xr, yr, 1, fs.losses.L2Loss())):
    bits = []
    for threads in (1, int(sys.argv[1]), None):
        it = fs.DataLoader(fs.ArrayDataset(Xs, ys), 256, shuffle=True, seed=1)
        net = fs.nn.Dense(units, rng=1)
        opt = fs.optim.SGD(net.parameters(), lr=0.01 if units == 1 else 1e-4)
        h = fs.train(net, it, None, loss, 2, opt, fused=True, verbose=False, progress=False,
                     num_threads=threads)
        bits.append((net.weight.data.tobytes(), net.bias.data.tobytes(), h.train_loss))
        assert np.isfinite(h.train_loss).all(), h.train_loss
    assert bits[0] == bits[1] == bits[2], units
print("ok")
"""


@pytest.mark.parametrize("env, threads", [({"OMP_THREAD_LIMIT": "1"}, 2),
                                          ({"OMP_THREAD_LIMIT": "2"}, 3),
                                          ({"OMP_DYNAMIC": "true"}, 2)],
                         ids=["limit-1-of-2", "limit-2-of-3", "dynamic"])
def test_fused_training_with_a_smaller_team_than_asked(env, threads):
    """OpenMP may start fewer threads than asked (OMP_THREAD_LIMIT; OMP_DYNAMIC on a loaded
    machine; nesting): the fused step splits its work over the team it got, so every row is
    still computed and the bits are those of one thread.  (It once split over the count it
    asked for, leaving the missing threads' rows as whatever the scratch held.)"""
    res = subprocess.run([sys.executable, "-c", _TEAM_SCRIPT, str(threads)],
                         env=dict(os.environ, **env), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr


_ONE_CORE_SCRIPT = """
import os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before OpenMP starts any thread
import time
import numpy as np, fastshallow as fs
rng = np.random.default_rng(0)
X = rng.standard_normal((50000, 100)).astype(np.float32)
y = (X[:, :3].sum(axis=1)).astype(np.float32)

def epoch(threads):
    it = fs.DataLoader(fs.ArrayDataset(X, y), 256, shuffle=True, seed=0)
    net = fs.nn.Dense(1, in_units=100, rng=0)
    opt = fs.optim.SGD(net.parameters(), lr=0.01)
    start = time.perf_counter()
    fs.train_epoch(net, it, fs.losses.L2Loss(), opt, num_threads=threads)
    return time.perf_counter() - start

epoch(1), epoch(2)
print(min(epoch(1) for _ in range(3)), min(epoch(2) for _ in range(3)))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_fused_chain_with_more_threads_than_cores():
    """The shares path's threads wait for one another's running sums by spinning, then yield
    the core: with two threads on one core, a thread spinning for a long time keeps the one it
    waits for off the core, and every minibatch cost a scheduler time slice (with the first
    spin limit, 30-60 times one thread's epoch).  On one core two threads may be slower than
    one, but not by much."""
    # Other work on that core can make any run slow for a moment (0.29 s against 0.003 s once,
    # on a loaded machine): up to three tries, while the fault it guards against lost 30 to
    # 60 times in every run.
    timings = []
    for _ in range(3):
        res = subprocess.run([sys.executable, "-c", _ONE_CORE_SCRIPT], capture_output=True,
                             text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        one, two = map(float, res.stdout.split())
        timings.append((one, two))
        if two < 4 * one + 0.02:
            break
    else:
        raise AssertionError(f"(one thread, two threads) on one core, seconds: {timings}")


def test_fused_sgd_refuses_scratch_made_for_other_sizes():
    """The compiled step trusts its work buffers' sizes, which depend on how it sums (shares or
    not): scratch for a smaller batch, other outputs or other examples is refused up front."""
    from fastshallow._ext import kernels

    k = kernels()
    X = np.zeros((300, 100), np.float32)
    t = np.zeros((300, 1), np.float32)
    perm = np.arange(300, dtype=np.int64)
    Wp = k.to_working_layout(np.zeros((100, 1), np.float32))
    b = np.zeros(1, np.float32)
    args = (X, None, t, perm, 256, 1, 0.0, 0.0, Wp, b, None, None, np.full(2, 0.1, np.float32),
            0.0, 0.0, 1.0, np.zeros(2), np.zeros(2, np.int64), 0, 2, 2)
    for bad in (k.fused_scratch(16, 100, 1, np.float32, 4),   # a smaller batch
                k.fused_scratch(256, 100, 2, np.float32, 4),  # other outputs
                k.fused_scratch(256, 100, 1, np.float32, 1)):  # uint8 rows: no shares
        with pytest.raises(ValueError, match="fused_scratch"):
            k.fused_sgd(*args, bad)
    assert k.fused_sgd(*args, k.fused_scratch(256, 100, 1, np.float32, 4)) == -1


def test_history_repr_is_one_short_line():
    """A notebook prints the History when training is a cell's last line."""
    assert repr(fs.History()) == "History(0 epochs, per-batch loop)"
    hist = fs.History([0.9, 0.40671], [0.7, 0.8623], [0.71, 0.8431], [1.0, 1.0], fused=True)
    assert repr(hist) == ("History(2 epochs, fused; last: train loss 0.4067, train acc 0.862, "
                          "test acc 0.843)")
    nan = float("nan")
    assert repr(fs.History([0.5] * 300, [nan] * 300, [nan] * 300, [0.1] * 300)) == (
        "History(300 epochs, per-batch loop; last: train loss 0.5000)")  # regression
    assert repr(fs.History([0.5], [0.75], [nan], [0.1])) == (
        "History(1 epoch, per-batch loop; last: train loss 0.5000, train acc 0.750)")
    # the chapter's linear regression ends near 5e-5: four decimals would print 0.0001
    assert repr(fs.History([5.123e-5], [nan], [nan], [0.1])) == (
        "History(1 epoch, per-batch loop; last: train loss 5.123e-05)")
    # the switch follows what four decimals show: 0.00099996 prints as 0.001 does
    assert [fs.training.loss_text(x) for x in (0.00099996, 0.001, 0.00094)] == [
        "0.0010", "0.0010", "9.400e-04"]
