"""fastshallow.d2l keeps the book's signatures and results: the chapter's code, ported by changing
its imports, runs as in the book -- or is refused where it would silently not train."""
import warnings

import numpy as np
import pytest

import fastshallow as fs
from fastshallow import d2l

TRUE_W, TRUE_B = np.array([2, -3.4]), 4.2


def test_synthetic_data_gives_the_books_column_of_labels_and_the_chapter_trains_on_it():
    features, labels = d2l.synthetic_data(TRUE_W, TRUE_B, 1000)
    assert features.shape == (1000, 2) and labels.shape == (1000, 1)  # y.reshape((-1, 1))
    np.testing.assert_allclose(labels[:, 0], features @ TRUE_W + TRUE_B, atol=0.06)
    assert fs.synthetic_data(TRUE_W, TRUE_B, 5)[1].shape == (5,)  # the library's own: as was
    assert d2l.synthetic_data(np.ones((2, 3)), 0.0, 5)[1].shape == (5, 3)
    assert d2l.synthetic_data(TRUE_W, TRUE_B, 0)[1].shape == (0, 1)
    # 3.2, from scratch: linreg, squared_loss and sgd on the column of labels
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


def test_train_ch3_refuses_the_chapters_cross_entropy_which_would_train_nothing(rng, capsys):
    train_iter, test_iter = softmax_data(rng)
    W = fs.Parameter(rng.normal(0, 0.01, (5, 3)).astype(np.float32))
    b = fs.Parameter(np.zeros(3, np.float32))
    W0 = W.data.copy()
    with pytest.raises(TypeError, match="no gradient.*SoftmaxCrossEntropyLoss"):
        d2l.train_ch3(lambda X: fs.softmax(d2l.linreg(X, W, b)), train_iter, test_iter,
                      fs.cross_entropy, 3, lambda batch_size: d2l.sgd([W, b], 0.1, batch_size))
    np.testing.assert_array_equal(W.data, W0)
    assert capsys.readouterr().out == ""  # not an epoch reported
    # the same model on raw outputs with the stable loss trains, book-style updater and all
    hist = d2l.train_ch3(lambda X: d2l.linreg(X, W, b), train_iter, test_iter,
                         fs.losses.SoftmaxCrossEntropyLoss(), 3,
                         lambda batch_size: d2l.sgd([W, b], 0.1, batch_size))
    assert hist.train_loss[-1] < hist.train_loss[0] and hist.train_acc[-1] > 0.8


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
