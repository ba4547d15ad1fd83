"""fastshallow: fast, deterministic CPU training of shallow networks (linear and softmax
regression), covering the "Linear Neural Networks" chapter of Dive into Deep Learning.

    import fastshallow as fs
    X, y = fs.synthetic_data([2, -3.4], 4.2, 1000)
    data_iter = fs.load_array((X, y), batch_size=10)
    net = fs.nn.Dense(1)
    loss = fs.losses.L2Loss()
    trainer = fs.optim.SGD(net.parameters(), lr=0.03)
    for epoch in range(3):
        for Xb, yb in data_iter:
            l = loss(net(Xb), yb)
            l.backward()
            trainer.step(batch_size=10)
"""
from typing import TYPE_CHECKING, Any

from ._version import __version__
from ._ext import kernels as _load_kernels

_load_kernels()  # fail at import, with instructions, if the compiled core is missing

from . import datasets, init, kernels, losses, metrics, nn, optim, plotting, random  # noqa: E402
from ._config import get_num_threads, set_num_threads, show_config  # noqa: E402
from .autograd import Parameter, Tensor  # noqa: E402
from .closed_form import least_squares  # noqa: E402
from .data import ArrayDataset, DataLoader, load_array, synthetic_data  # noqa: E402
from .datasets import get_fashion_mnist_labels, load_data_fashion_mnist  # noqa: E402
from .evaluation import evaluate_accuracy, evaluate_loss, predict  # noqa: E402
from .kernels import log_softmax  # noqa: E402
from .metrics import accuracy, cross_entropy_between, entropy, kl_divergence  # noqa: E402
from .plotting import (Animator, plot, set_axes, set_figsize, show_images,  # noqa: E402
                       use_svg_display)
from .random import seed  # noqa: E402
from .scratch import cross_entropy, linreg, sgd, softmax, squared_loss  # noqa: E402
from .training import History, TrainingDiverged, train, train_epoch  # noqa: E402
from .utils import Accumulator, Timer  # noqa: E402
from .outofcore import fit_out_of_core, iter_chunks, open_idx  # noqa: E402
from .distributed import fit_dask  # noqa: E402

if TYPE_CHECKING:  # for type checkers: at run time they come from __getattr__ below
    from .estimators import LinearRegression as LinearRegression
    from .estimators import SoftmaxRegression as SoftmaxRegression


def __getattr__(name: str) -> Any:
    # The estimators need scikit-learn (the "sklearn" extra): imported on first use.
    if name in ("SoftmaxRegression", "LinearRegression"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'fastshallow' has no attribute {name!r}")

__all__ = [
    "__version__", "show_config", "get_num_threads", "set_num_threads", "seed",
    "datasets", "init", "kernels", "losses", "metrics", "nn", "optim", "plotting", "random",
    "Parameter", "Tensor",
    "synthetic_data", "ArrayDataset", "DataLoader", "load_array",
    "load_data_fashion_mnist", "get_fashion_mnist_labels",
    "linreg", "squared_loss", "sgd", "softmax", "log_softmax", "cross_entropy", "least_squares",
    "accuracy", "entropy", "cross_entropy_between", "kl_divergence",
    "evaluate_accuracy", "evaluate_loss", "predict",
    "train", "train_epoch", "History", "TrainingDiverged",
    "Timer", "Accumulator",
    "Animator", "plot", "show_images", "use_svg_display", "set_figsize", "set_axes",
    "fit_out_of_core", "iter_chunks", "open_idx", "fit_dask",
]
