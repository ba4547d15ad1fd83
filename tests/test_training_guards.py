"""What the caller may change while training runs -- between epochs, from a callback: the dataset,
its labels, the loader, the loss, the optimizer -- never makes the compiled code read outside its
data, and both training paths use and refuse it alike; rates the update cannot use are refused
before any parameter changes; divergence only the parameters show is reported; evaluating a
loader counts what iterating it yields and leaves it as iterating would."""
import math

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

@pytest.mark.parametrize("bad", [-1.0, 0.0, math.inf, math.nan])
@pytest.mark.parametrize("at", [0, 5])
def test_a_schedule_giving_a_bad_rate_is_refused_alike_on_both_paths(rng, bad, at):
    data = classes_data(rng)
    for fused in (None, False):
        net = fs.nn.Dense(3, in_units=8, rng=0)
        W = net.weight.data.copy()
        with pytest.raises(ValueError, match=rf"^the learning rate must be a finite number > 0, "
                                             rf"got {bad * 0.1} at step {at}$"):
            train(net, fs.load_array(data, 10, seed=0), 2, fused, schedule=Rates(bad, at))
        if at == 0 or fused is None:  # the fused path checks a whole epoch's rates first
            assert_bits_equal(net.weight.data, W)


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
