"""fastshallow.d2l keeps the book's signatures and results: the chapter's code, ported by changing
its imports, runs as in the book -- or is refused where it would silently not train."""
import os
import warnings

import numpy as np
import pytest

import fastshallow as fs
from fastshallow import autograd, d2l

TRUE_W, TRUE_B = np.array([2, -3.4]), 4.2


def test_synthetic_data_gives_the_chapters_labels_and_the_chapter_trains_on_them():
    features, labels = d2l.synthetic_data(TRUE_W, TRUE_B, 1000)
    # one value per example: the chapter prints "label: 4.662078", not "[4.662078]"
    assert features.shape == (1000, 2) and labels.shape == (1000,)
    np.testing.assert_allclose(labels, features @ TRUE_W + TRUE_B, atol=0.06)
    assert d2l.synthetic_data(np.ones((2, 3)), 0.0, 5)[1].shape == (5, 3)
    assert d2l.synthetic_data(TRUE_W, TRUE_B, 0)[1].shape == (0,)
    # 3.2, from scratch: linreg, squared_loss and sgd on the chapter's labels
    w = fs.Parameter(np.random.default_rng(0).normal(0, 0.01, (2, 1)))
    b = fs.Parameter(np.zeros(1))
    for _ in range(3):
        for X, y in d2l.load_array((features, labels), 10):
            d2l.squared_loss(d2l.linreg(X, w, b), y).sum().backward()
            d2l.sgd([w, b], 0.03, 10)
    assert np.abs(w.data.ravel() - TRUE_W).max() < 5e-3 and abs(b.data[0] - TRUE_B) < 5e-3
    # 3.3, concise: Dense(1), L2Loss and the Trainer, on the fused kernels
    net = fs.nn.Dense(1, rng=0)
    hist = fs.train(net, d2l.load_array((features, labels), 10), None, fs.losses.L2Loss(), 3,
                    d2l.Trainer(net.parameters(), "sgd", {"learning_rate": 0.03}),
                    verbose=False, progress=False)
    assert hist.fused and hist.train_loss[-1] < 1e-3
    assert np.abs(net.weight.data.ravel() - TRUE_W).max() < 5e-3


def softmax_data(rng):
    X = rng.standard_normal((200, 5)).astype(np.float32)
    y = (X @ rng.standard_normal((5, 3))).argmax(1)
    return d2l.load_array((X, y), 20), d2l.load_array((X, y), 50, False)


def capture(Z):
    """Z as a Tensor whose gradient lands in the returned list (a stand-in for linreg)."""
    got = []
    return autograd.tensor(Z, got.append), got


def onehot(y, m):
    return np.eye(m)[y]


def test_train_ch3_trains_the_chapters_from_scratch_softmax_regression(rng):
    # 3.6 as ported: Parameters, the book's net and updater, fs.softmax and fs.cross_entropy
    train_iter, test_iter = softmax_data(rng)
    W = fs.Parameter(rng.normal(0, 0.01, (5, 3)).astype(np.float32))
    b = fs.Parameter(np.zeros(3, np.float32))

    def net(X):
        return fs.softmax(d2l.linreg(X.reshape(-1, 5), W, b))

    hist = d2l.train_ch3(net, train_iter, test_iter, fs.cross_entropy, 4,
                         lambda batch_size: d2l.sgd([W, b], 0.1, batch_size))
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert hist.train_acc[-1] > 0.85 and hist.test_acc[-1] > 0.85
    assert d2l.evaluate_accuracy(net, test_iter) == hist.test_acc[-1]


def test_the_from_scratch_pair_trains_exactly_as_the_stable_loss_does(rng):
    # Same data order and start: only the loss differs, and its gradient is the same up to
    # rounding, so after three epochs the parameters agree to float64 rounding.
    X = rng.standard_normal((90, 5))
    y = rng.integers(0, 4, 90)
    W0 = rng.normal(0, 0.5, (5, 4))
    runs = []
    for scratch in (True, False):
        W, b = fs.Parameter(W0), fs.Parameter(np.zeros(4))
        net = (lambda X: fs.softmax(d2l.linreg(X, W, b))) if scratch else \
            (lambda X: d2l.linreg(X, W, b))
        loss = fs.cross_entropy if scratch else fs.losses.SoftmaxCrossEntropyLoss()
        fs.train(net, fs.load_array((X, y), 16, seed=3), None, loss, 3,
                 lambda n: d2l.sgd([W, b], 0.5, n), verbose=False, progress=False)
        runs.append((W.data, b.data))
    assert np.abs(runs[0][0] - W0).max() > 0.1  # it did move
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-11, atol=1e-12)


def test_train_ch3_refuses_a_numpy_cross_entropy_which_would_train_nothing(rng, capsys):
    # The book's own definition, kept: a NumPy function of a Tensor is a plain array.
    def cross_entropy(y_hat, y):
        return -np.log(y_hat[range(len(y_hat)), y])

    train_iter, test_iter = softmax_data(rng)
    W = fs.Parameter(rng.normal(0, 0.01, (5, 3)).astype(np.float32))
    b = fs.Parameter(np.zeros(3, np.float32))
    W0 = W.data.copy()
    with pytest.raises(TypeError, match="no gradient.*SoftmaxCrossEntropyLoss"):
        d2l.train_ch3(lambda X: fs.softmax(d2l.linreg(X, W, b)), train_iter, test_iter,
                      cross_entropy, 3, lambda batch_size: d2l.sgd([W, b], 0.1, batch_size))
    np.testing.assert_array_equal(W.data, W0)
    assert capsys.readouterr().out == ""  # not an epoch reported


@pytest.mark.parametrize("shape", [(7, 3), (1, 4), (33, 10), (5, 1)])
def test_scratch_softmax_cross_entropy_gradient_is_the_stable_losss(rng, float_dtype, shape):
    n, m = shape
    Z = (rng.standard_normal(shape) * 3).astype(float_dtype)
    y = rng.integers(0, m, n)
    g = rng.uniform(0.5, 2, n).astype(float_dtype)
    tol = 1e-5 if float_dtype == np.float32 else 1e-12
    Zs, scratch = capture(Z)
    Zl, stable = capture(Z)
    fs.cross_entropy(fs.softmax(Zs), y).backward(g)
    fs.losses.SoftmaxCrossEntropyLoss()(Zl, y).backward(g)
    assert scratch[0].dtype == float_dtype and scratch[0].shape == shape
    np.testing.assert_allclose(scratch[0], stable[0], rtol=tol, atol=tol)
    Z64 = Z.astype(np.float64)
    P = np.exp(Z64) / np.exp(Z64).sum(1, keepdims=True)
    ref = g[:, None] * (P - onehot(y, m))
    np.testing.assert_allclose(scratch[0], ref, rtol=tol, atol=tol)
    # g omitted (the gradient of the sum) and the book's l.sum().backward() / l.mean()
    for run, scale in ((lambda l: l.backward(), 1), (lambda l: l.sum().backward(), 1),
                       (lambda l: l.mean().backward(), 1 / n)):
        Zt, got = capture(Z)
        run(fs.cross_entropy(fs.softmax(Zt), y))
        np.testing.assert_allclose(got[0], scale * (P - onehot(y, m)), rtol=tol, atol=tol)


def test_scratch_softmax_cross_entropy_gradient_matches_finite_differences(rng):
    Z = rng.standard_normal((7, 3)) * 2
    y = rng.integers(0, 3, 7)
    g = rng.uniform(0.5, 2, 7)
    Zt, got = capture(Z)
    fs.cross_entropy(fs.softmax(Zt), y).backward(g)

    def f(Z):
        return float(g @ fs.cross_entropy(fs.softmax(Z), y))

    h, num = 1e-6, np.zeros_like(Z)
    for idx in np.ndindex(Z.shape):
        e = np.zeros_like(Z)
        e[idx] = h
        num[idx] = (f(Z + e) - f(Z - e)) / (2 * h)
    np.testing.assert_allclose(got[0], num, rtol=1e-6, atol=1e-8)


def test_scratch_softmax_backward_on_its_own(rng, float_dtype):
    Z = rng.standard_normal((6, 4)).astype(float_dtype)
    G = rng.standard_normal((6, 4)).astype(float_dtype)
    Zt, got = capture(Z)
    P = fs.softmax(Zt)
    assert isinstance(P, fs.Tensor)
    np.testing.assert_array_equal(P, fs.softmax(Z))  # the same values as on a plain array
    P.backward(G)
    # each row through the full Jacobian diag(p) - p p^T
    P64 = np.asarray(P, np.float64)
    ref = np.stack([(np.diag(p) - np.outer(p, p)) @ r for p, r in zip(P64, G)])
    tol = 1e-5 if float_dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got[0], ref, rtol=tol, atol=tol)
    # rows sum to one whatever Z is: the gradient of P.sum() is zero
    P.backward()
    np.testing.assert_allclose(got[1], 0, atol=tol)
    # a 1-D Tensor is one row
    z1, got1 = capture(Z[0])
    fs.softmax(z1).backward(G[0])
    np.testing.assert_allclose(got1[0], ref[0], rtol=tol, atol=tol)


def test_scratch_softmax_and_cross_entropy_keep_plain_arrays_plain(rng):
    Z = rng.standard_normal((4, 3))
    for Zin in (Z, Z.view(fs.Tensor)):  # a Tensor with no way back is plain data too
        P = fs.softmax(Zin)
        assert type(P) is np.ndarray
        assert type(fs.cross_entropy(P, [0, 1, 2, 0])) is np.ndarray
    with pytest.raises(ValueError, match="< 3"):  # the checks hold on Tensors too
        fs.cross_entropy(fs.softmax(capture(Z)[0]), [0, 1, 2, 3])


def test_autograd_record_lets_the_books_loop_run_unchanged(rng):
    assert "record" in autograd.__all__
    X, y = rng.standard_normal((8, 2)), rng.standard_normal((8, 1))
    w, b = fs.Parameter(np.zeros((2, 1))), fs.Parameter(np.zeros(1))
    with autograd.record():
        l = d2l.squared_loss(d2l.linreg(X, w, b), y)
        l.backward()
    inside = w.grad.copy()
    d2l.squared_loss(d2l.linreg(X, w, b), y).backward()
    np.testing.assert_array_equal(inside, w.grad)  # record changes nothing
    np.testing.assert_allclose(inside, X.T @ (-y))
    with autograd.record() as scope:  # reusable, and nothing to hold
        assert scope is None


def test_a_probability_that_underflows_stops_train_ch3_with_training_diverged(rng, capsys):
    # The chapter's warning made real: class 1 starts with logit -120, whose exp is 0 in
    # float32, so its examples' loss is -log(0) = inf and the gradient is not finite.
    train_iter, test_iter = softmax_data(rng)
    W = fs.Parameter(np.zeros((5, 3), np.float32))
    b = fs.Parameter(np.array([0, -120, 0], np.float32))
    Zt, got = capture(np.array([[0, -120, 0]], np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the naive pair stays quiet, as the forward pass does
        l = fs.cross_entropy(fs.softmax(Zt), [1])
        l.backward()
    assert np.isinf(l).all() and not np.isfinite(got[0]).all()
    with pytest.raises(fs.TrainingDiverged, match="infinite in epoch 1"):
        d2l.train_ch3(lambda X: fs.softmax(d2l.linreg(X, W, b)), train_iter, test_iter,
                      fs.cross_entropy, 3, lambda batch_size: d2l.sgd([W, b], 0.1, batch_size))
    assert capsys.readouterr().out == ""  # no epoch of garbage reported


def test_train_ch3_names_a_bad_epoch_count_and_draws_one_epoch_without_warning(rng):
    train_iter, test_iter = softmax_data(rng)
    net = fs.nn.Dense(3, rng=0)
    opt = fs.optim.SGD(net.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="num_epochs must be an int, got str '3'"):
        d2l.train_ch3(net, train_iter, test_iter, fs.losses.SoftmaxCrossEntropyLoss(), "3", opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "identical low and high xlims"
        hist = d2l.train_ch3(net, train_iter, test_iter, fs.losses.SoftmaxCrossEntropyLoss(),
                             1, opt)
    assert len(hist) == 1


def test_accumulator_takes_numpys_ints_as_other_int_arguments_do():
    acc = d2l.Accumulator(np.int64(2))
    acc.add(1, 2.5)
    assert acc.data == [1.0, 2.5] and len(acc) == 2
    for n in (0, 2.0, True, np.bool_(True)):
        with pytest.raises(ValueError, match="n must be a positive int"):
            d2l.Accumulator(n)


def test_plot_and_predict_ch3_return_nothing_as_the_books_do():
    """A notebook prints a cell's last value: the book's helpers leave it None."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    try:
        assert d2l.plot(np.arange(3), [np.arange(3) ** 2], legend=["square"]) is None
        assert len(plt.gcf().axes[0].get_lines()) == 1  # drawn all the same
        X = np.zeros((4, 16), np.float32)
        loader = d2l.load_array((X, np.zeros(4, np.int64)), 4, False)
        net = fs.nn.Dense(3, in_units=16, rng=0)
        assert d2l.predict_ch3(net, loader, n=2) is None
        assert len(plt.gcf().axes) == 2
        # the library's own keep their values, for who customizes the figure
        assert len(fs.predict(net, loader, n=2)) == 2
        assert fs.plot([1, 2]).get_lines()
    finally:
        plt.close("all")


def test_the_image_classification_section_runs_with_the_edits_listed(fashion_cache):
    """3.5 as the module's notes port it."""
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    notes = " ".join(d2l.__doc__.split())
    assert "3.5" in notes and "X.squeeze(axis=-1)" in notes and "fs.datasets" in notes
    mnist_train = fs.datasets.FashionMNIST(train=True)
    mnist_test = fs.datasets.FashionMNIST(train=False)
    assert (len(mnist_train), len(mnist_test)) == (60000, 10000)
    X, y = mnist_train[:18]
    assert X.shape == (18, 28, 28)
    with pytest.raises(ValueError):
        X.squeeze(axis=-1)  # the book's line, for Gluon's (18, 28, 28, 1)
    try:
        axes = d2l.show_images(X, 2, 9, titles=d2l.get_fashion_mnist_labels(y))
        assert [ax.get_title() for ax in axes][:2] == ["ankle boot", "t-shirt"]
    finally:
        plt.close("all")
    transformer = fs.datasets.transforms.ToTensor()
    train_iter = fs.data.DataLoader(mnist_train.transform_first(transformer), 256, shuffle=True,
                                    num_workers=d2l.get_dataloader_workers())
    Xb, yb = next(iter(train_iter))
    assert Xb.shape == (256, 1, 28, 28) and Xb.dtype == np.float32 and Xb.max() <= 1


def test_train_ch3_says_a_script_gets_its_curve_from_plot_path(rng, tmp_path, monkeypatch):
    doc = " ".join(d2l.train_ch3.__doc__.split())
    assert "script draws nothing" in doc and "plot_path" in doc and "path=" in doc
    monkeypatch.chdir(tmp_path)
    train_iter, test_iter = softmax_data(rng)
    net = fs.nn.Dense(3, rng=0)
    d2l.train_ch3(net, train_iter, test_iter, fs.losses.SoftmaxCrossEntropyLoss(), 1,
                  fs.optim.SGD(net.parameters(), lr=0.1))
    assert os.listdir(tmp_path) == []  # as said: no file written behind the caller's back


def test_trainer_takes_the_optimizer_name_in_any_case_as_mxnet_does():
    net = fs.nn.Dense(1, in_units=2, rng=0)
    for name in ("sgd", "SGD", "Sgd"):
        opt = d2l.Trainer(net.parameters(), name, {"learning_rate": 0.03})
        assert isinstance(opt, fs.optim.SGD) and opt.lr == 0.03
    for bad in ("adam", None, 3):
        with pytest.raises(ValueError, match="only 'sgd'"):
            d2l.Trainer(net.parameters(), bad, {"learning_rate": 0.03})


def test_fs_seed_makes_the_chapters_unseeded_run_reproducible():
    # The book seeds once (MXNet's npx.random.seed); its data, loaders and layers take no seed.
    def run():
        fs.seed(7)
        X, y = d2l.synthetic_data(TRUE_W, TRUE_B, 100)
        it = d2l.load_array((X, y), 10)
        order = [yb.copy() for _, yb in it]
        net = fs.nn.Dense(1)
        fs.train(net, it, None, fs.losses.L2Loss(), 2, d2l.Trainer(
            net.parameters(), "sgd", {"learning_rate": 0.03}), verbose=False, progress=False)
        return X, order, net.weight.data.copy()

    (X1, o1, w1), (X2, o2, w2) = run(), run()
    np.testing.assert_array_equal(X1, X2)
    for a, b in zip(o1, o2):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(w1, w2)
    fs.seed(None)
    assert not np.array_equal(d2l.synthetic_data(TRUE_W, TRUE_B, 5)[0],
                              d2l.synthetic_data(TRUE_W, TRUE_B, 5)[0])


def test_a_loader_that_never_shuffles_leaves_the_seeded_stream_alone():
    # The test loaders of the chapter do not shuffle: adding one must not change the weights
    # a seeded run starts from.
    X, y = d2l.synthetic_data(TRUE_W, TRUE_B, 20)
    fs.seed(0)
    alone = fs.nn.Dense(2, in_units=2).weight.data.copy()
    fs.seed(0)
    it = d2l.load_array((X, y), 5, is_train=False)
    assert len([b for b in it]) == 4
    assert fs.DataLoader(fs.ArrayDataset(X, y), 5).epoch_order().tolist() == list(range(20))
    np.testing.assert_array_equal(fs.nn.Dense(2, in_units=2).weight.data, alone)
    fs.seed(None)


def _first_value(_):
    return float(d2l.synthetic_data(TRUE_W, TRUE_B, 1)[0][0, 0])


def test_unseeded_forked_workers_draw_different_data():
    # A forked child inherits the default stream: unseeded, each gets fresh entropy, as
    # seed=None promises; after fs.seed(...) they repeat the parent's stream, as asked.
    import multiprocessing

    def in_a_child():
        with multiprocessing.get_context("fork").Pool(1) as pool:
            return pool.map(_first_value, [0])[0]

    fs.seed(None)
    assert in_a_child() != in_a_child()
    fs.seed(5)
    assert in_a_child() == in_a_child()
    fs.seed(None)
