"""What the caller may change while training runs -- between epochs, from a callback: the dataset,
its labels, the loader, the loss, the optimizer -- never makes the compiled code read outside its
data, and both training paths use and refuse it alike; rates the update cannot use are refused
before any parameter changes; divergence only the parameters show is reported; evaluating a
loader counts what iterating it yields and leaves it as iterating would.  Both paths report the
same accuracies; a loss with no gradient and every bad argument are refused before anything
changes, and an error in the clean-up never hides the one that stopped training."""
import math
import os
import warnings
from fractions import Fraction

import numpy as np
import pytest

import fastshallow as fs
from conftest import assert_bits_equal

SOFTMAX = fs.losses.SoftmaxCrossEntropyLoss


class Swappable:
    """A dataset whose arrays a callback may replace (new data arriving between epochs)."""

    def __init__(self, X, y):
        self.X, self.y = X, y

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i], self.y[i]

    def as_arrays(self):
        return self.X, self.y, None, self.X.shape[1:]


class Lying(Swappable):
    """Says it has more examples than the arrays it exposes."""

    n = None

    def __len__(self):
        return self.n or len(self.X)


class Rates(fs.optim.Schedule):
    """Factor 1, then `value` from step `at` on."""

    def __init__(self, value, at=0):
        self.value, self.at = value, at

    def factor(self, step):
        return self.value if step >= self.at else 1.0


def classes_data(rng, n=200, k=8, classes=3):
    return rng.standard_normal((n, k)).astype(np.float32), rng.integers(0, classes, n)


def assert_trained_alike(fused, loop):
    """The fused path sums in its own order: equal within float32 rounding (as in
    test_training), far closer than training on other data or settings would leave them."""
    for a, b in zip(fused.parameters(), loop.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=2e-5, atol=2e-5 * np.abs(b.data).max())


def train(net, loader, epochs, fused, *, loss=None, lr=0.1, callback=None, **opt_args):
    opt = fs.optim.SGD(net.parameters(), lr=lr, **opt_args)
    hist = fs.train(net, loader, None, loss or SOFTMAX(), epochs, opt, fused=fused,
                    verbose=False, progress=False, callback=callback)
    assert hist.fused == (fused is not False)
    return opt


# -- the data, changed between epochs ----------------------------------------------------------

@pytest.mark.parametrize("rows", [5000, 30])
def test_a_dataset_given_new_arrays_between_epochs_is_trained_on_by_both_paths(rng, rows):
    first, later = classes_data(rng), classes_data(rng, n=rows)
    nets = []
    for fused in (None, False):
        ds = Swappable(*first)

        def swap(epoch, hist, ds=ds):
            ds.X, ds.y = later

        net = fs.nn.Dense(3, in_units=8, rng=0)
        train(net, fs.DataLoader(ds, 16, shuffle=True, seed=0), 3, fused, callback=swap)
        nets.append(net)
    assert_trained_alike(*nets)


def test_a_dataset_given_arrays_the_fused_path_cannot_read_is_refused_clearly(rng):
    ds = Swappable(*classes_data(rng))
    W = []

    def swap(epoch, hist):
        ds.X = ds.X.astype(np.float16)
        W.append(net.weight.data.copy())

    net = fs.nn.Dense(3, in_units=8, rng=0)
    with pytest.raises(ValueError, match=r"the training data have changed since training "
                                         r"started .* features \(float16, \(200, 8\)\) are not"):
        train(net, fs.DataLoader(ds, 16, shuffle=True, seed=0), 2, None, callback=swap)
    assert_bits_equal(net.weight.data, W[0])


def test_a_dataset_that_outgrows_its_arrays_between_epochs_is_refused(rng):
    ds = Lying(*classes_data(rng, n=50))

    def grow(epoch, hist):
        ds.n = 5000

    net = fs.nn.Dense(3, in_units=8, rng=0)
    with pytest.raises(ValueError, match="says it has 5000 examples but its as_arrays"):
        train(net, fs.DataLoader(ds, 16, shuffle=True, seed=0), 3, None, callback=grow)


# 20 classes: labels past them index outside the outputs; with 3 the vector kernel reads labels
# as int32, where 2**32 + 1 is class 1.
@pytest.mark.parametrize("classes, bad", [(20, 10**9), (3, 2**32 + 1)])
def test_labels_changed_in_place_between_epochs_are_used_and_checked_by_both_paths(
        rng, classes, bad):
    X, labels = classes_data(rng, n=64, classes=classes)
    nets = []
    for fused in (None, False):
        y = labels.copy()  # int64: the dataset holds this very array

        def relabel(epoch, hist, y=y):
            y[:] = (y + 1) % classes if epoch == 1 else bad

        net = fs.nn.Dense(classes, in_units=8, rng=0)
        with pytest.raises(ValueError, match=f"labels must be < {classes}"):
            train(net, fs.load_array((X, y), 16, seed=0), 3, fused, callback=relabel)
        nets.append(net)
    assert_trained_alike(*nets)  # on the valid relabelling; the bad labels changed nothing


def test_the_fused_steps_labels_are_a_private_copy_read_again_only_while_unchanged(rng):
    """The compiled step reads a private, checked copy of the labels (uint8 up to 256 classes),
    and the next epoch reads that copy again only while the caller's labels hold the same
    values: a changed value, or labels of another kind, are copied and checked afresh."""
    private = fs._fused.private_labels
    y = rng.integers(0, 10, 50)
    first = private(y, 10, 50)
    assert first.dtype == np.uint8 and np.array_equal(first, y) and first is not y
    assert private(y, 10, 50, first) is first
    assert private(y.astype(np.float32), 10, 50, first) is first  # whole numbers, as checked
    y[7] = (y[7] + 1) % 10
    again = private(y, 10, 50, first)
    assert again is not first and again[7] == y[7]
    with pytest.raises(TypeError, match="integer class indices, got dtype bool"):
        private((y > 4).astype(bool), 10, 50, private((y > 4).astype(np.int64), 10, 50))
    with pytest.raises(ValueError, match="labels must have 50 entries"):
        private(y[:49], 10, 50, first)
    wide = private(rng.integers(0, 300, 50), 300, 50)
    assert wide.dtype == np.int64  # past 256 classes
    # and the step reads either kind alike: 300 classes (int64) as 10 (uint8), against the loop
    for classes in (10, 300):
        X, labels = classes_data(rng, n=120, classes=classes)
        nets = []
        for fused in (None, False):
            net = fs.nn.Dense(classes, in_units=8, rng=0)
            train(net, fs.load_array((X, labels), 16, seed=0), 2, fused)
            nets.append(net)
        assert_trained_alike(*nets)


def test_loader_loss_and_optimizer_changed_between_epochs_are_used_by_both_paths(rng):
    data = classes_data(rng)
    nets = []
    for fused in (None, False):
        loader = fs.DataLoader(fs.ArrayDataset(*data), 16, shuffle=True, seed=0)
        loss = SOFTMAX()
        net = fs.nn.Dense(3, in_units=8, rng=0)
        opt = fs.optim.SGD(net.parameters(), lr=0.1)

        def change(epoch, hist, loader=loader, loss=loss, opt=opt):
            loader.batch_size, loss.label_smoothing = 48, 0.2
            opt.lr, opt.momentum, opt.weight_decay = 0.05, 0.9, 1e-2

        fs.train(net, loader, None, loss, 3, opt, fused=fused, verbose=False, progress=False,
                 callback=change)
        nets.append(net)
    assert_trained_alike(*nets)


# -- learning rates the update cannot use ------------------------------------------------------

NOT_A_RATE = [(bad, at, ValueError, rf"^the learning rate must be a finite number >= 0, got "
                                     rf"{bad * 0.1} at step {at}$")
              for bad in (-1.0, math.inf, math.nan) for at in (0, 5)]  # 0: a step doing nothing
# The fused path took the string "0.5" as 0.5 and None as NaN; the loop failed in NumPy's or
# Python's words.  (True is no factor, as it is no learning rate.)
NOT_A_NUMBER = [(bad, 0, TypeError, r"^Rates.factor\(0\) must return a real number, got ")
                for bad in ("0.5", 0.5j, None, [0.5], True)]


@pytest.mark.parametrize("bad, at, exc, match", NOT_A_RATE + NOT_A_NUMBER)
def test_a_schedule_giving_a_bad_rate_is_refused_alike_on_both_paths(rng, bad, at, exc, match):
    data = classes_data(rng)
    for fused in (None, False):
        net = fs.nn.Dense(3, in_units=8, rng=0)
        W = net.weight.data.copy()
        with pytest.raises(exc, match=match):
            train(net, fs.load_array(data, 10, seed=0), 2, fused, schedule=Rates(bad, at))
        if at == 0 or fused is None:  # the fused path checks a whole epoch's rates first
            assert_bits_equal(net.weight.data, W)


@pytest.mark.parametrize("factor", [np.where(True, 0.5, 1.0), Fraction(1, 2), np.float32(0.5), 1])
def test_a_schedule_giving_a_real_number_of_any_type_trains_alike_on_both_paths(rng, factor):
    """A 0-d array (np.where's), a Fraction, a NumPy float or an int is a factor."""
    data = classes_data(rng)
    nets = {}
    for fused in (None, False):
        nets[fused] = fs.nn.Dense(3, in_units=8, rng=0)
        train(nets[fused], fs.load_array(data, 10, seed=0), 1, fused, schedule=Rates(factor))
    assert_trained_alike(nets[None], nets[False])
    ref = fs.nn.Dense(3, in_units=8, rng=0)
    train(ref, fs.load_array(data, 10, seed=0), 1, False, lr=0.1 * float(factor))
    assert_trained_alike(nets[False], ref)


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("lr, factor", [(1e39, 1.0), (1e38, 10.0)])
def test_a_rate_infinite_in_float32_is_refused_before_any_update(rng, fused, lr, factor):
    net = fs.nn.Dense(3, in_units=8, rng=0)
    W = net.weight.data.copy()
    with pytest.raises(ValueError, match=r"learning rate must be at most 3.40282e\+38 for "
                                         r"float32 parameters.*at step 0"):
        train(net, fs.load_array(classes_data(rng), 10, seed=0), 1, fused, lr=lr,
              schedule=Rates(factor))
    assert_bits_equal(net.weight.data, W)


# -- divergence --------------------------------------------------------------------------------

@pytest.mark.parametrize("fused", [None, False])
def test_a_last_update_that_breaks_the_parameters_is_reported(fused):
    # Each loss comes before its minibatch's update: only the parameters show the last one.
    X, y = np.ones((30, 2), np.float32), np.full(30, 1e15, np.float32)
    net = fs.nn.Dense(1, in_units=2, rng=0)
    with pytest.raises(fs.TrainingDiverged, match=r"the parameter '\w+' became NaN or infinite "
                                                  r"in epoch 1, minibatch 3, the epoch's last "
                                                  r"update \(learning rate 1e\+28\)"):
        train(net, fs.load_array((X, y), 10, is_train=False), 1, fused,
              loss=fs.losses.L2Loss(), lr=0.01, schedule=Rates(1e30, at=2))


def test_divergence_under_a_users_updater_suggests_no_rate_it_does_not_know():
    X, y = fs.synthetic_data([2, -3.4], 4.2, 200, seed=0)
    net = fs.nn.Dense(1, in_units=2, rng=0)
    with pytest.raises(fs.TrainingDiverged) as info:
        fs.train(net, fs.load_array((X, y), 10, seed=0), None, fs.losses.L2Loss(), 3,
                 lambda n: fs.sgd(net.parameters(), 1e6, n), verbose=False, progress=False)
    msg = str(info.value)
    assert "epoch 1, minibatch" in msg and "try a smaller learning rate or check" in msg
    assert "nan" not in msg and "inf" not in msg.replace("infinite", "")


# -- evaluation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_evaluate_accuracy_counts_what_the_loader_yields_and_advances_it_alike(
        rng, monkeypatch, shuffle, drop_last):
    X, y = classes_data(rng, n=10, k=3)
    net = fs.nn.Dense(3, in_units=3, rng=0)
    fast, looped = (fs.DataLoader(fs.ArrayDataset(X, y), 4, shuffle=shuffle,
                                  drop_last=drop_last, seed=1) for _ in range(2))
    calls = []
    count_hits = fs._fused.count_hits
    monkeypatch.setattr(fs._fused, "count_hits", lambda *a: calls.append(1) or count_hits(*a))
    acc = fs.evaluate_accuracy(net, fast)
    assert calls  # the compiled count was used
    pairs = [(fs.accuracy(net(Xb), yb), len(yb)) for Xb, yb in looped]
    assert acc == sum(h for h, _ in pairs) / sum(n for _, n in pairs)
    assert fast.epoch == looped.epoch
    np.testing.assert_array_equal(fast.epoch_order(), looped.epoch_order())


def test_the_training_loader_as_test_loader_trains_the_same_whoever_evaluates(rng):
    # Big-endian features cannot be read by the compiled count: the loop evaluates them.
    X, y = classes_data(rng, n=10, k=3)
    weights = []
    for features in (X, X.astype(">f4")):
        net = fs.nn.Dense(3, in_units=3, rng=0)
        it = fs.load_array((features, y), 4, seed=5)
        fs.train(net, it, it, SOFTMAX(), 3, fs.optim.SGD(net.parameters(), lr=0.1),
                 fused=False, verbose=False, progress=False)
        weights.append(net.weight.data)
    assert_bits_equal(weights[0], weights[1])


# -- the loader's batch size -------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "8", None])
def test_a_bad_batch_size_is_refused_when_assigned_as_by_the_constructor(bad):
    ds = fs.ArrayDataset(np.ones((8, 2), np.float32), np.zeros(8, np.float32))
    with pytest.raises((TypeError, ValueError)) as made:
        fs.DataLoader(ds, bad)
    loader = fs.DataLoader(ds, 4)
    with pytest.raises(type(made.value), match=f"^{__import__('re').escape(str(made.value))}$"):
        loader.batch_size = bad
    assert loader.batch_size == 4 and len(loader) == 2


# -- both paths report the same accuracies ------------------------------------------------------

def test_evaluate_accuracy_of_one_output_is_what_the_loop_and_the_book_count(rng, monkeypatch):
    # One output is no choice among classes: accuracy() compares its value with the label.
    # The compiled count took the argmax of one column, class 0 every time.
    X = rng.standard_normal((12, 3)).astype(np.float32)
    y = np.array([0, 1] * 6)
    d = fs.nn.Dense(1, in_units=3, rng=0)
    X[:3] = 0  # outputs equal to the bias, 0: hits for label 0
    d.bias.set_data([0.0])
    book = fs.accuracy(d(X), y) / len(y)
    assert 0 < book < 0.5  # neither the argmax's 0.5 nor nothing
    looped = fs.evaluate_accuracy(d, [(X[:5], y[:5]), (X[5:], y[5:])])
    assert fs.evaluate_accuracy(d, fs.load_array((X, y), 4, is_train=False)) == looped == book


@pytest.mark.parametrize("case", ["float labels", "one output", "int targets, l2",
                                  "int targets, 2 outputs"])
def test_both_paths_report_the_same_accuracies(rng, case):
    X = rng.standard_normal((24, 3)).astype(np.float32)
    units, loss, y = 3, SOFTMAX(), rng.integers(0, 3, 24).astype(np.float64)
    if case == "one output":  # a softmax over one output: every label is 0
        units, y = 1, np.zeros(24, np.int64)
        X[:5] = 0  # outputs of exactly 0 (the bias), which accuracy() counts as hits
    elif case.startswith("int targets"):  # regression on whole numbers: no accuracy
        units, loss = (1, fs.losses.L2Loss()) if case.endswith("l2") else (2, fs.losses.L2Loss())
        y = rng.integers(0, 3, (24, units) if units > 1 else 24)
    hists = []
    for fused in (None, False):
        net = fs.nn.Dense(units, in_units=3, rng=0)
        net.bias.set_data(np.zeros(units, np.float32))
        opt = fs.optim.SGD(net.parameters(), lr=0.1)
        hists.append(fs.train(net, fs.load_array((X, y), 8, seed=0),
                              fs.load_array((X, y), 8, is_train=False), loss, 2, opt,
                              fused=fused, verbose=False, progress=False))
    fast, loop = hists
    assert not loop.fused and fast.fused == (case != "one output")
    np.testing.assert_allclose(fast.train_loss, loop.train_loss, rtol=1e-6)
    np.testing.assert_array_equal(fast.train_acc, loop.train_acc)
    np.testing.assert_array_equal(fast.test_acc, loop.test_acc)
    if case.startswith("int targets"):
        assert np.isnan(loop.train_acc).all() and np.isnan(loop.test_acc).all()
    else:
        assert not np.isnan(loop.train_acc).any() and not np.isnan(loop.test_acc).any()


def test_a_softmax_over_one_output_on_insisted_fused_kernels_reports_no_accuracy(rng):
    X, y = rng.standard_normal((20, 3)).astype(np.float32), np.zeros(20, np.int64)
    net = fs.nn.Dense(1, in_units=3, rng=0)
    loss, acc = fs.train_epoch(net, fs.load_array((X, y), 5, seed=0), SOFTMAX(),
                               fs.optim.SGD(net.parameters(), lr=0.1), fused=True)
    assert loss == 0.0 and math.isnan(acc)  # not the argmax's 1.0


# -- a loss without a gradient -----------------------------------------------------------------

@pytest.mark.parametrize("updater", ["callable", "SGD"])
def test_a_loss_that_returns_no_gradient_is_refused_before_any_update(rng, updater):
    # The chapter's from-scratch softmax regression with its cross_entropy written in NumPy,
    # as the book defines it, which returns plain arrays: the updater would step on stale or
    # zero gradients.
    def cross_entropy(y_hat, y):
        return -np.log(y_hat[range(len(y_hat)), y])

    X = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    W = fs.Parameter(rng.normal(0, 0.01, (5, 3)).astype(np.float32))
    b = fs.Parameter(np.zeros(3, np.float32))
    fs.squared_loss(fs.linreg(X, W, b), np.ones((40, 3), np.float32)).backward()  # stale
    W0, b0 = W.data.copy(), b.data.copy()
    opt = fs.optim.SGD([W, b], lr=0.1)
    step = (lambda n: fs.sgd([W, b], 0.1, n)) if updater == "callable" else opt
    with pytest.raises(TypeError, match=r"no gradient.*nothing would be trained.*"
                                        r"SoftmaxCrossEntropyLoss.*fastshallow Tensor"):
        fs.train(lambda X: fs.softmax(fs.linreg(X, W, b)), fs.load_array((X, y), 10), None,
                 cross_entropy, 2, step, verbose=False, progress=False)
    assert_bits_equal(W.data, W0)
    assert_bits_equal(b.data, b0)
    assert opt.num_steps == 0


@pytest.mark.parametrize("fused", [None, False])
def test_the_chapters_cross_entropy_on_raw_outputs_is_refused_before_any_update(rng, fused):
    # fs.cross_entropy takes probabilities: on a layer's raw outputs -log(z) is no loss (and
    # NaN for z < 0), so it sends no gradient back and training refuses it, naming the fix.
    X = rng.standard_normal((40, 5)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    net = fs.nn.Dense(3, in_units=5, rng=0, bias_initializer=fs.init.Constant(1.0))
    W0 = net.weight.data.copy()
    opt = fs.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"no gradient.*SoftmaxCrossEntropyLoss\(\) \(on the "
                                        r"network's raw outputs"):
        fs.train(net, fs.load_array((X, y), 10), None, fs.cross_entropy, 2, opt, fused=fused,
                 verbose=False, progress=False)
    assert_bits_equal(net.weight.data, W0)
    assert opt.num_steps == 0


# -- arguments checked before anything changes ---------------------------------------------------

class Open:
    closed = False

    def add(self, x, y):
        pass


class Closed(Open):
    closed = True


BAD_TRAIN_ARGS = [
    (dict(callback=5), TypeError, "callback must be None or a callable"),
    (dict(animator="x"), TypeError, "animator must be None or an Animator"),
    (dict(animator=object()), TypeError, "animator must be None or an Animator"),
    (dict(animator=Closed()), ValueError, "animator was closed"),
    (dict(animator=Open(), plot_path="x.png"), ValueError, "animator or plot_path, not both"),
    (dict(test_iter=5), TypeError, "test_iter must be None or an iterable"),
    (dict(fused="yes"), TypeError, "fused must be None, True or False"),
    (dict(verbose="no"), TypeError, "verbose must be True or False"),
    (dict(progress="no"), TypeError, "progress must be None, True or False"),
    (dict(loss=None), TypeError, "loss must be a loss function"),
    (dict(net=None), TypeError, "net must be a network"),
    (dict(updater=5), TypeError, "updater must be fastshallow.optim.SGD or a callable"),
    (dict(train_iter=5), TypeError, "train_iter must be an iterable"),
]
# On the fused path only: the per-batch loop builds nothing before the first batch.
BAD_PLOT_PATHS = [
    (dict(plot_path="no-such-folder/x.png"), FileNotFoundError, "path: folder"),
    (dict(plot_path="x.txt"), ValueError, "path must end in an image extension"),
]


@pytest.mark.parametrize("fused, bad, exc, match", [
    (fused, *case) for fused in (None, False) for case in BAD_TRAIN_ARGS] + [
    (None, *case) for case in BAD_PLOT_PATHS],
    ids=lambda v: repr(v)[:40] if isinstance(v, (dict, type(None), bool)) else "")
def test_bad_train_arguments_are_refused_before_anything_changes(rng, tmp_path, monkeypatch,
                                                                 fused, bad, exc, match):
    monkeypatch.chdir(tmp_path)  # plot paths are relative to here
    X, y = classes_data(rng, n=40, k=4)
    net = fs.nn.Dense(3)  # deferred: built by the first forward pass or by the fused plan
    opt = fs.optim.SGD(net.parameters(), lr=0.1)
    loader = fs.load_array((X, y), 8, seed=0)
    args = dict(net=net, train_iter=loader, test_iter=None, loss=SOFTMAX(), num_epochs=2,
                updater=opt, fused=fused, verbose=False, progress=False)
    args.update(bad)
    with pytest.raises(exc, match=match):
        fs.train(**args)
    assert not net.initialized and opt.num_steps == 0 and loader.epoch == 0
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("bad, exc, match", [
    (dict(num_threads=0), ValueError, "num_threads"),  # the loop has no use for it
    (dict(updater=5), TypeError, "updater must be"),
])
def test_bad_train_epoch_arguments_are_refused_before_a_batch_is_taken(rng, bad, exc, match):
    X, y = classes_data(rng, n=40, k=4)
    net = fs.nn.Dense(3, in_units=4, rng=0)
    opt = fs.optim.SGD(net.parameters(), lr=0.1)
    loader = fs.load_array((X, y), 8, seed=0)
    args = dict(updater=opt, fused=False)
    args.update(bad)
    with pytest.raises(exc, match=match):
        fs.train_epoch(net, loader, SOFTMAX(), **args)
    assert opt.num_steps == 0 and loader.epoch == 0


def test_a_progress_bar_over_batches_of_unknown_number(rng, capsys):
    X, y = classes_data(rng, n=40, k=4)
    net = fs.nn.Dense(3, in_units=4, rng=0)
    hist = fs.train(net, ((X[i:i + 8], y[i:i + 8]) for i in range(0, 40, 8)), None, SOFTMAX(),
                    1, fs.optim.SGD(net.parameters(), lr=0.1), verbose=False, progress=True)
    assert len(hist) == 1 and "batch" in capsys.readouterr().err  # a bar was shown


def test_numpys_false_forces_the_per_batch_loop_as_false_does(rng):
    X, y = classes_data(rng, n=40, k=4)
    net = fs.nn.Dense(3, in_units=4, rng=0)
    hist = fs.train(net, fs.load_array((X, y), 8, seed=0), None, SOFTMAX(), 1,
                    fs.optim.SGD(net.parameters(), lr=0.1), fused=np.False_, verbose=False,
                    progress=False)
    assert not hist.fused


class FailingPlot:
    """An animator whose final drawing fails (a full disk, say)."""

    def add(self, x, y):
        pass

    def flush(self):
        raise OSError("no space left on device")


def test_a_failing_final_drawing_never_hides_why_training_stopped(rng):
    X, y = classes_data(rng, n=40, k=4)
    net = fs.nn.Dense(3, in_units=4, rng=0)

    def stop(epoch, hist):
        raise KeyError("the callback's own error")

    with pytest.raises(KeyError, match="the callback's own error"):
        fs.train(net, fs.load_array((X, y), 8, seed=0), None, SOFTMAX(), 2,
                 fs.optim.SGD(net.parameters(), lr=0.1), verbose=False, progress=False,
                 animator=FailingPlot(), callback=stop)
    # with nothing else wrong, the drawing's failure is the error
    with pytest.raises(OSError, match="no space"):
        fs.train(net, fs.load_array((X, y), 8, seed=0), None, SOFTMAX(), 1,
                 fs.optim.SGD(net.parameters(), lr=0.1), verbose=False, progress=False,
                 animator=FailingPlot())


def test_an_animator_of_the_books_kind_without_flush_is_fed(rng):
    class BookAnimator:
        def __init__(self):
            self.points = []

        def add(self, x, y):
            self.points.append((x, y))

    X, y = classes_data(rng, n=40, k=4)
    net = fs.nn.Dense(3, in_units=4, rng=0)
    anim = BookAnimator()
    hist = fs.train(net, fs.load_array((X, y), 8, seed=0), None, SOFTMAX(), 2,
                    fs.optim.SGD(net.parameters(), lr=0.1), verbose=False, progress=False,
                    animator=anim)
    assert [p[0] for p in anim.points] == [1, 2] and anim.points[1][1][0] == hist.train_loss[1]


# -- evaluating and predicting ---------------------------------------------------------------------

def test_evaluate_loss_averages_every_value_the_loss_gives(rng):
    X, Y = rng.standard_normal((10, 4)), rng.standard_normal((10, 2))
    net = fs.nn.Dense(2, in_units=4, rng=0, dtype=np.float64)
    it = fs.load_array((X, Y), 4, is_train=False)
    # elementwise, as the book's l.sum() / l.numel()
    assert fs.evaluate_loss(net, it, fs.squared_loss) == pytest.approx(
        float(np.mean(fs.squared_loss(net(X), Y))), rel=1e-14)
    # per example: the sum over the batches divided by the rows, as before
    l2 = fs.losses.L2Loss()
    per_batch = [np.asarray(l2(net(Xb), Yb)) for Xb, Yb in it]
    assert fs.evaluate_loss(net, it, l2) == sum(float(p.sum()) for p in per_batch) / 10
    with pytest.raises(ValueError, match="one value per example.*single number"):
        fs.evaluate_loss(net, it, lambda a, b: np.asarray(l2(a, b)).mean())
    with pytest.raises(TypeError, match="loss must be a loss function"):
        fs.evaluate_loss(net, it, None)


def test_evaluate_accuracy_refuses_a_bad_thread_count_on_the_per_batch_path_too(rng):
    X, y = classes_data(rng, n=10, k=3)
    net = fs.nn.Dense(3, in_units=3, rng=0)
    for data in (fs.load_array((X, y), 4, is_train=False), [(X, y)]):
        with pytest.raises(ValueError, match="num_threads"):
            fs.evaluate_accuracy(net, data, num_threads=0)


@pytest.mark.parametrize("bad, exc, match", [
    (dict(n=0), ValueError, "n must be > 0"),
    (dict(n=True), TypeError, "n must be an int"),
    (dict(path="no-such-folder/p.png"), FileNotFoundError, "path: folder"),
    (dict(path="p.txt"), ValueError, "path must end in an image extension"),
    (dict(labels="abc"), TypeError, "labels must be a function"),
])
def test_predict_checks_its_arguments_before_taking_a_batch(rng, tmp_path, monkeypatch, bad,
                                                            exc, match):
    monkeypatch.chdir(tmp_path)
    X, y = classes_data(rng, n=10, k=16)
    net = fs.nn.Dense(3)
    loader = fs.load_array((X, y), 4, seed=0)
    with pytest.raises(exc, match=match):
        fs.predict(net, loader, **bad)
    assert not net.initialized and loader.epoch == 0 and os.listdir(tmp_path) == []


def test_predict_on_no_batches_says_so():
    empty = fs.load_array((np.zeros((0, 16), np.float32), np.zeros(0, np.int64)), 4)
    with pytest.raises(ValueError, match="test_iter yielded no batches"):
        fs.predict(fs.nn.Dense(3, in_units=16), empty)


@pytest.mark.parametrize("fused", [None, False])
def test_momentum_buffers_swapped_between_epochs_are_refused_before_any_update(rng, fused):
    """A reversed buffer was written past its end by the compiled update (and on the fused
    path refused only inside the compiled call, after the step count had moved)."""
    X, y = classes_data(rng)
    net = fs.nn.Dense(3, in_units=8, rng=0)
    saved = {}

    def swap(epoch, hist):
        vel = opt.velocity
        vel[0] = np.zeros_like(vel[0])[::-1]
        saved.update(W=net.weight.data.copy(), steps=opt.num_steps)

    opt = fs.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="momentum buffer"):
        fs.train(net, fs.load_array((X, y), 16, seed=0), None, SOFTMAX(), 2, opt, fused=fused,
                 verbose=False, progress=False, callback=swap)
    assert_bits_equal(net.weight.data, saved["W"])
    assert opt.num_steps == saved["steps"]


def test_verbose_may_be_a_level(rng, capsys):
    """verbose=2 is a level elsewhere (Keras, scikit-learn): any int >= 0 is taken as its
    truth; a string is refused (its truth would be taken for a yes)."""
    X, y = classes_data(rng, n=40, k=4)
    for verbose, lines in ((2, 1), (0, 0)):
        net = fs.nn.Dense(3, in_units=4, rng=0)
        fs.train(net, fs.load_array((X, y), 8, seed=0), None, SOFTMAX(), 1,
                 fs.optim.SGD(net.parameters(), lr=0.1), verbose=verbose, progress=False)
        assert capsys.readouterr().out.count("epoch 1,") == lines


def _freeze(a):
    a.flags.writeable = False


def _retype(a):
    a.dtype = np.int32


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("which", ["weight", "bias"])
@pytest.mark.parametrize("change, exc, match", [
    (_freeze, ValueError, r"parameter '{}' is read-only"),
    # the loop's forward pass refuses it first, naming the product's argument (W or b)
    (_retype, TypeError, r"must have dtype float32 or float64, got int32"),
], ids=["read-only", "retyped"])
def test_parameters_changed_in_place_are_refused_alike_before_any_update(rng, fused, which,
                                                                         change, exc, match):
    """The fused path trained a whole epoch with a read-only weight, updating only the bias,
    and then failed in NumPy's words (a retyped one: in Cython's)."""
    X, y = classes_data(rng)
    net = fs.nn.Dense(3, in_units=8, rng=0)
    opt = fs.optim.SGD(net.parameters(), lr=0.1)
    before = [p.data.copy() for p in net.parameters()]
    change(getattr(net, which).data)
    with pytest.raises(exc, match=match.format(which)):
        fs.train(net, fs.load_array((X, y), 16, seed=0), None, SOFTMAX(), 1, opt, fused=fused,
                 verbose=False, progress=False)
    for p, b in zip(net.parameters(), before):
        assert_bits_equal(p._data.view(np.uint8), b.view(np.uint8))
    assert opt.num_steps == 0


def test_evaluate_accuracy_of_float16_labels_warns_of_nothing(rng):
    """Comparing float16 labels with 2**62 overflowed in their type, with NumPy's warning."""
    X, y = classes_data(rng)
    net = fs.nn.Dense(3, in_units=8, rng=0)
    half = fs.load_array((X, y.astype(np.float16)), 16, is_train=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fs.evaluate_accuracy(net, half)
    assert got == fs.evaluate_accuracy(net, fs.load_array((X, y), 16, is_train=False))


@pytest.mark.parametrize("shuffle", [True, False])
def test_under_fs_seed_both_paths_train_a_deferred_layer_alike(rng, shuffle):
    """The fused path built a deferred layer (drawing its weights from the default stream)
    before the loader took its generator from that stream, the per-batch loop after: under
    fs.seed the two started from other weights and shuffles."""
    X, y = classes_data(rng)
    nets = {}
    for fused in (None, False):
        fs.seed(0)
        loader = fs.load_array((X, y), 16, is_train=shuffle)
        nets[fused] = fs.nn.Sequential(fs.nn.Dense(3))
        train(nets[fused], loader, 2, fused)
    assert_trained_alike(nets[None], nets[False])
