"""The book's ``d2l`` helpers of the "Linear Neural Networks" chapter, with the book's names
and signatures, on fastshallow.  The chapter's code (sections 3.1 to 3.7) runs with these
edits and no others:

1. Imports::

       import numpy as np                           # mxnet's np; drop npx.set_np()
       import fastshallow as fs
       from fastshallow import d2l, autograd        # autograd.record() is there, and does nothing
       from fastshallow import nn, init, losses     # Gluon's nn, init and loss (gloss)

   (``gluon`` and 3.6's ``from IPython import display`` go), and ``gluon.Trainer(...)``
   becomes ``d2l.Trainer(...)`` with the same arguments.
2. Parameters: ``W = fs.Parameter(np.random.normal(0, 0.01, (784, 10)))`` in place of the
   NumPy array (``attach_grad()`` may stay).
3. From scratch, use the library's functions instead of defining them with NumPy, whose
   results carry no gradient (``train_ch3`` refuses such a loss): ``d2l.linreg``,
   ``d2l.squared_loss``, ``d2l.sgd``, ``fs.softmax``, ``fs.cross_entropy``; 3.6's model is
   ``fs.softmax(d2l.linreg(X.reshape(-1, num_inputs), W, b))``.  The helpers the book saves
   in ``d2l`` (``train_ch3``, ``Animator``, ...) come from here, not redefined.
4. A parameter's values are ``.data``, an array, not Gluon's ``.data()``:
   ``net[0].weight.data``; in 3.2, ``w.data.reshape(...)`` and ``true_b - b.data``.  A
   ``Dense`` weight is (in_units, units), the transpose of Gluon's, so 3.3's "Error in
   estimating w" prints as a column.
5. ``.asnumpy()`` goes: the arrays are NumPy arrays already.
6. In 3.5, ``gluon.data.vision`` is ``fs.datasets`` (``FashionMNIST``,
   ``transforms.ToTensor``) and ``gluon.data.DataLoader`` is ``fs.data.DataLoader``, with the
   same arguments.  ``X, y = mnist_train[:18]`` gives images (18, 28, 28), without Gluon's
   trailing channel axis, so ``show_images(X.squeeze(axis=-1), ...)`` becomes
   ``d2l.show_images(X, 2, 9, titles=d2l.get_fashion_mnist_labels(y))`` (squeezing would
   raise).  The book calls ``get_data_loader_workers()``, a misspelling of the
   ``get_dataloader_workers`` it defines: ``d2l.get_dataloader_workers()``.

Plotting needs matplotlib (``pip install "fastshallow[plot]"``); ``d2l.plt`` is pyplot.
"""
from __future__ import annotations

from ._checks import positive_int
from .data import load_array as _load_array
from .data import synthetic_data as _synthetic_data
from .datasets import get_fashion_mnist_labels
from .datasets import load_data_fashion_mnist as _load_data_fashion_mnist
from .evaluation import evaluate_accuracy
from .evaluation import predict as _predict
from .metrics import accuracy
from .optim import SGD
from .plotting import Animator, set_axes, set_figsize, show_images, use_svg_display
from .plotting import _epoch_animator
from .plotting import plot as _plot
from .scratch import linreg, sgd, squared_loss
from .training import train as _train
from .training import train_epoch as _train_epoch
from .utils import Accumulator, Timer

__all__ = [
    "synthetic_data", "load_array", "linreg", "squared_loss", "sgd",
    "get_fashion_mnist_labels", "show_images", "load_data_fashion_mnist",
    "get_dataloader_workers", "accuracy", "evaluate_accuracy", "Accumulator", "Timer",
    "Animator", "train_epoch_ch3", "train_ch3", "predict_ch3", "use_svg_display", "set_figsize",
    "set_axes", "plot", "Trainer", "plt",
]


def synthetic_data(w, b, num_examples):
    """``y = X w + b + noise`` with X ~ N(0, 1) and noise ~ N(0, 0.01^2); y has one value per
    example for a vector `w` (the chapter prints ``label: 4.662078``), a row of m for a (k, m)
    matrix."""
    return _synthetic_data(w, b, num_examples)


def load_array(data_arrays, batch_size, is_train=True):
    """A minibatch iterator over arrays, shuffled when `is_train`."""
    return _load_array(data_arrays, batch_size, is_train)


def load_data_fashion_mnist(batch_size, resize=None):
    """Fashion-MNIST as ``(train_iter, test_iter)`` of (B, 1, H, W) float32 batches."""
    return _load_data_fashion_mnist(batch_size, resize=resize)


def get_dataloader_workers():
    """0: fastshallow's loaders gather whole batches in compiled code, faster than worker
    processes would be."""
    return 0


def train_epoch_ch3(net, train_iter, loss, updater):
    """One epoch; returns (training loss, training accuracy)."""
    return _train_epoch(net, train_iter, loss, updater)


def train_ch3(net, train_iter, test_iter, loss, num_epochs, updater):
    """Train, printing a line per epoch, with a live plot of loss and accuracies in a Jupyter
    notebook.  As in the book, the plot is shown only there: a script draws nothing.  For an
    image file, call ``fs.train(..., plot_path="curve.png")``, or pass it an Animator made with
    ``path=``.  Returns the :class:`~fastshallow.training.History` (the book returns nothing
    and asserts on the results; this does not)."""
    # Checked before the plot is made, whose axis would refuse it in matplotlib's own words.
    num_epochs = positive_int("num_epochs", num_epochs, allow_zero=True)
    animator = _epoch_animator(num_epochs, ylim=[0.3, 0.9])
    return _train(net, train_iter, test_iter, loss, num_epochs, updater, animator=animator)


def predict_ch3(net, test_iter, n=6):
    """Show the first `n` test images titled with true and predicted labels (wrong predictions
    in red).  Returns nothing, as the book's does, so a notebook prints no list of Axes;
    ``fs.predict`` returns them."""
    _predict(net, test_iter, n=n)


def plot(X, Y=None, xlabel=None, ylabel=None, legend=None, xlim=None, ylim=None,
         xscale="linear", yscale="linear", fmts=("-", "m--", "g-.", "r:"), figsize=(3.5, 2.5),
         axes=None, path=None):
    """The book's ``plot``, drawn by :func:`fastshallow.plotting.plot` (which see; without
    `axes`, on a figure of its own).  Returns nothing, as the book's does, so a notebook prints
    no Axes; ``fs.plot`` returns them."""
    _plot(X, Y, xlabel, ylabel, legend, xlim, ylim, xscale, yscale, fmts, figsize, axes, path)


def Trainer(params, optimizer="sgd", optimizer_params=None):
    """Gluon's ``Trainer(params, 'sgd', {'learning_rate': lr})`` as a fastshallow SGD (the
    name in any case, as MXNet takes it)."""
    if not isinstance(optimizer, str) or optimizer.lower() != "sgd":
        raise ValueError(f"only 'sgd' is available, got {optimizer!r}")
    opts = dict(optimizer_params or {})
    lr = opts.pop("learning_rate", None)
    if lr is None:
        raise ValueError("optimizer_params needs 'learning_rate'")
    momentum = opts.pop("momentum", 0.0)
    wd = opts.pop("wd", 0.0)
    if opts:
        raise ValueError(f"unsupported optimizer_params: {sorted(opts)}")
    return SGD(params, lr, momentum=momentum, weight_decay=wd)


def __getattr__(name):
    if name == "plt":
        from .plotting import _pyplot

        return _pyplot()
    raise AttributeError(f"module 'fastshallow.d2l' has no attribute {name!r}")
