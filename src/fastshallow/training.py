"""Training loops: the book's ``train_epoch_ch3`` / ``train_ch3``, on the fused kernels when
they apply (section 3.6).

``updater`` is the library's :class:`~fastshallow.optim.SGD` or any callable taking the batch
size (as the book's ``lambda batch_size: d2l.sgd(params, lr, batch_size)``).
"""
from __future__ import annotations

import math
import numbers
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Tuple, Union

import numpy as np

from . import _checks as C
from . import _fused
from ._config import resolve_threads
from ._fused import TrainingDiverged
from .evaluation import evaluate_accuracy
from .losses import HuberLoss, L2Loss, SoftmaxCrossEntropyLoss
from .metrics import accuracy
from .optim import SGD

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    import os

    from .plotting import Animator

__all__ = ["History", "TrainingDiverged", "train_epoch", "train"]

# Seconds between two drawings of the curve image `train` writes for plot_path: enough to follow
# a long run, and a run of fast epochs is not slowed by drawing (one drawing, 0.1-0.2 s here,
# took longer than an epoch, and the epoch after it found its caches cold).
PLOT_INTERVAL = 1.0


@dataclass
class History:
    """Per-epoch results of :func:`train`, one entry per epoch in each list.

    train_loss: the mean training loss, measured on the fly as the book does.  train_acc: the
    fraction of training examples classified right, on the fly (NaN for regression).
    test_acc: the accuracy on `test_iter` after the epoch (NaN for regression or without a
    `test_iter`).  seconds: the epoch's wall time, test evaluation included.  fused: whether the
    fused kernels ran the training (else the per-batch loop)."""

    train_loss: List[float] = field(default_factory=list)
    train_acc: List[float] = field(default_factory=list)
    test_acc: List[float] = field(default_factory=list)
    seconds: List[float] = field(default_factory=list)
    fused: bool = False

    def __len__(self) -> int:
        return len(self.train_loss)

    def __repr__(self) -> str:
        # Short, as notebooks print it when training is a cell's last line; the lists are
        # attributes (and as_dict()) for whoever wants them.
        n, how = len(self), "fused" if self.fused else "per-batch loop"
        text = f"History({n} epoch{'' if n == 1 else 's'}, {how}"
        last = [f"{name} {fmt(values[-1])}" for name, values, fmt in (
            ("train loss", self.train_loss, loss_text),
            ("train acc", self.train_acc, "{:.3f}".format),
            ("test acc", self.test_acc, "{:.3f}".format)) if values and not math.isnan(values[-1])]
        return text + (f"; last: {', '.join(last)})" if last else ")")

    def as_dict(self) -> dict:
        """The four per-epoch lists by name (the lists themselves, not copies)."""
        return {"train_loss": self.train_loss, "train_acc": self.train_acc,
                "test_acc": self.test_acc, "seconds": self.seconds}


def loss_text(x: float) -> str:
    """A loss as printed: four decimals, or four digits for one below 0.001 (the chapter's
    linear regression ends near 5e-5, which four decimals show as 0.0001)."""
    # compared as printed: 0.00099996 shows as 0.0010, as 0.001 does
    return f"{x:.4f}" if not math.isfinite(x) or abs(round(x, 4)) >= 1e-3 or x == 0 \
        else f"{x:.3e}"


def _loop_epoch(net, train_iter, loss, updater, epoch: int, on_batch=None):
    """The per-batch loop; returns (mean loss, accuracy or NaN)."""
    step = updater.step if isinstance(updater, SGD) else updater  # checked by the caller
    loss_sum = hits = count = 0.0
    classify = None
    for b, batch in enumerate(train_iter, 1):
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"the training iterator must yield (X, y) pairs, got "
                            f"{type(batch).__name__}"
                            + (f" of {len(batch)} items" if isinstance(batch, (tuple, list))
                               else ""))
        X, y = batch
        y_hat = net(X)
        l = loss(y_hat, y)
        n = np.shape(X)[0]
        backward = getattr(l, "backward", None)
        if not callable(backward):
            raise _no_gradient(l)
        backward()
        step(n)
        s = float(np.sum(l, dtype=np.float64))  # a float32 sum could overflow
        if not math.isfinite(s):
            raise _fused.diverged(epoch, b, _last_rate(updater))
        if classify is None:
            classify = _classifies(loss, y_hat, y)
        loss_sum += s
        hits += accuracy(y_hat, y) if classify else 0.0
        count += np.size(y) if classify else n
        if on_batch is not None:
            on_batch(1)
    if not count:
        return float("nan"), float("nan")
    _fused.parameters_diverged(_updated(net, updater), epoch, b, _last_rate(updater))
    return loss_sum / count, (hits / count if classify else float("nan"))


def _no_gradient(l) -> TypeError:
    # Without backward() the updater would step on gradients left at zero or by an earlier
    # backward: the run would go through its epochs and train nothing, or train wrongly.
    return TypeError(
        f"the loss returned {type(l).__name__} values, which carry no gradient (no "
        f"backward()): the updater would apply none and nothing would be trained; use "
        f"fastshallow.losses.SoftmaxCrossEntropyLoss() (on the network's raw outputs, not "
        f"softmax probabilities), or a loss returning a fastshallow Tensor (such as "
        f"fastshallow.squared_loss, fastshallow.cross_entropy on fastshallow.softmax "
        f"outputs, or the losses of fastshallow.losses)")


def _classifies(loss, y_hat, y) -> bool:
    """Whether the loop measures accuracy: for the softmax cross-entropy always and for the
    library's regression losses never, as the fused path does; for a loss of the user's own,
    when the labels are integers, one per row of 2-D predictions (as accuracy() counts)."""
    if isinstance(loss, SoftmaxCrossEntropyLoss):
        return True
    if isinstance(loss, (L2Loss, HuberLoss)):
        return False
    return (np.asarray(y).dtype.kind in "iu" and np.ndim(y_hat) == 2
            and np.size(y) == np.shape(y_hat)[0])


def _last_rate(updater) -> float:
    """The learning rate of the step just taken (NaN when the updater is the user's own)."""
    if not isinstance(updater, SGD):
        return float("nan")
    return updater.lr * updater.schedule.factor(max(updater.num_steps - 1, 0))


def _updated(net, updater) -> list:
    """The parameters the updater changes, as far as they can be known."""
    if isinstance(updater, SGD):
        return updater.params
    params = getattr(net, "parameters", None)
    return params() if callable(params) else []


def train_epoch(net: Callable[[Any], Any], train_iter: Iterable[Tuple[Any, Any]],
                loss: Callable[[Any, Any], Any], updater: Union[SGD, Callable[[int], Any]], *,
                fused: Optional[bool] = None, num_threads: Optional[int] = None,
                epoch: int = 1) -> Tuple[float, float]:
    """One pass over `train_iter`; returns ``(mean training loss, training accuracy)`` measured
    on the fly, as the book does (accuracy is NaN for regression).

    The arguments are those of :func:`train`.  `fused`: None picks the fused kernels when they
    apply, True insists on them (ValueError saying why when they cannot run), False forces the
    per-batch loop.  `num_threads`: as for :func:`train`.  `epoch`: the epoch number that
    :class:`TrainingDiverged` names if the loss or the parameters stop being finite (it changes
    nothing else)."""
    fused = _check_training(net, train_iter, loss, updater, fused, num_threads)
    epoch = C.positive_int("epoch", epoch)
    runner = _runner(net, train_iter, loss, updater, fused)
    if runner is not None:
        return runner.run_epoch(train_iter.epoch_order(), epoch, num_threads)
    return _loop_epoch(net, train_iter, loss, updater, epoch)


def _check_training(net, train_iter, loss, updater, fused, num_threads) -> Optional[bool]:
    """Refuse what either path would only trip over later (after updates, or after building a
    deferred network); returns `fused` as None or a bool."""
    C.function("net", net, "a network (a callable taking X)")
    if not hasattr(train_iter, "__iter__"):
        raise TypeError(f"train_iter must be an iterable of (X, y) pairs (such as a "
                        f"DataLoader), got {type(train_iter).__name__}")
    C.function("loss", loss, "a loss function (a callable taking y_hat and y)")
    if not isinstance(updater, SGD) and not callable(updater):
        raise TypeError("updater must be fastshallow.optim.SGD or a callable taking the batch "
                        f"size, got {type(updater).__name__}")
    resolve_threads(num_threads)  # refused on the per-batch path too, which has no use for it
    return C.boolean("fused", fused, allow_none=True)  # np.False_ forces the loop as False does


def _runner(net, train_iter, loss, updater, fused):
    if fused is False:
        return None
    runner, why = _fused.plan(net, train_iter, loss, updater, insist=bool(fused))
    if runner is None and fused:
        raise ValueError(f"fused=True, but the fused kernels cannot run this training: {why}")
    return runner


def _progress(num_epochs: int, train_iter, enabled: Optional[bool]):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # An iterable without a length (a generator) still gets a bar, counting without a total.
    total = num_epochs * len(train_iter) if hasattr(train_iter, "__len__") else None
    return tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True)


def train(net: Callable[[Any], Any], train_iter: Iterable[Tuple[Any, Any]],
          test_iter: Optional[Iterable[Tuple[Any, Any]]], loss: Callable[[Any, Any], Any],
          num_epochs: int, updater: Union[SGD, Callable[[int], Any]], *,
          fused: Optional[bool] = None, verbose: bool = True, progress: Optional[bool] = None,
          animator: Optional[Animator] = None,
          plot_path: Union[str, os.PathLike[str], None] = None,
          num_threads: Optional[int] = None,
          callback: Optional[Callable[[int, History], Any]] = None) -> History:
    """Train for `num_epochs`, evaluating test accuracy after each epoch; returns a
    :class:`History`.

    net: the network, a callable taking X (such as a :class:`~fastshallow.nn.Dense` or
    :class:`~fastshallow.nn.Sequential`).  train_iter: an iterable of (X, y) minibatches, such
    as a :class:`~fastshallow.data.DataLoader`, iterated once per epoch.  test_iter: the same
    for measuring test accuracy after each epoch, or None to skip that (test accuracy is
    measured for classification only).  loss: ``loss(y_hat, y)``, returning per-example
    values that carry ``.backward()`` (the losses of :mod:`fastshallow.losses`, or
    :func:`~fastshallow.squared_loss`).  updater: :class:`~fastshallow.optim.SGD`, or a callable
    taking the batch size (see the module notes).

    fused: None (the default) runs each epoch on the fused kernels when they apply -- the
    network a single :class:`~fastshallow.nn.Dense` layer with a bias (after an optional
    Flatten), the loss one of the library's, the updater an SGD holding exactly that layer's
    parameters, the training data a DataLoader over arrays -- and the per-batch loop
    otherwise; True insists on the fused kernels (ValueError saying why when they cannot run);
    False forces the loop.  Both give the same result up to floating-point rounding.
    num_threads: threads of the fused kernels and of the test-accuracy count (results are the
    same for any count).  None: :func:`fastshallow.get_num_threads`, with the fused path
    switching to one thread while that is measurably faster (another process holding a core);
    an int is used as given.  The per-batch loop only checks it: its kernels use the default
    count, on which they run on one thread below about 16 million operations a call.

    Prints one line per epoch when `verbose`, and shows a progress bar over minibatches when
    `progress` (default: when stderr is a terminal).  animator: an
    :class:`~fastshallow.plotting.Animator` (or anything with ``add(x, y)``) that receives each
    epoch's training loss, training accuracy and test accuracy.  plot_path: instead, an image
    file (any extension matplotlib writes, such as .png or .svg; its folder must exist) that a
    new Animator rewrites at most once every ``PLOT_INTERVAL`` seconds (a module constant, one
    second) and after the last epoch: drawing takes a tenth of a second or more, several times
    a fast epoch.  Give one or neither.  callback: called as ``callback(epoch, history)`` after
    each epoch (epochs count from 1).

    Raises :class:`TrainingDiverged` naming the epoch and minibatch when the loss or the
    parameters stop being finite.  The dataset, loader, loss and optimizer may be changed
    between epochs (by `callback`): both paths train on them as they then are."""
    # Every argument is checked before anything changes: the first epoch's updates, the loader's
    # random stream, a deferred layer the fused path builds (in _runner).
    num_epochs = C.positive_int("num_epochs", num_epochs, allow_zero=True)
    fused = _check_training(net, train_iter, loss, updater, fused, num_threads)
    verbose, progress = _check_reporting(test_iter, verbose, progress, animator, plot_path,
                                         callback)
    if animator is None and plot_path is not None:  # refuses a bad plot_path
        animator = _plot_animator(num_epochs, plot_path)
    runner = _runner(net, train_iter, loss, updater, fused)
    hist = History(fused=runner is not None)
    bar = _progress(num_epochs, train_iter, progress)
    step = bar.update if bar is not None else None
    try:
        for epoch in range(1, num_epochs + 1):
            t0 = time.perf_counter()
            if runner is not None:
                tl, ta = runner.run_epoch(train_iter.epoch_order(), epoch, num_threads, step)
            else:
                tl, ta = _loop_epoch(net, train_iter, loss, updater, epoch, step)
            va = evaluate_accuracy(net, test_iter, num_threads=num_threads) \
                if (test_iter is not None and not math.isnan(ta)) else float("nan")
            hist.seconds.append(time.perf_counter() - t0)
            hist.train_loss.append(tl)
            hist.train_acc.append(ta)
            hist.test_acc.append(va)
            _report(epoch, hist, verbose, bar, animator)
            if callback is not None:
                callback(epoch, hist)
    except BaseException as exc:
        _finish(bar, animator, exc)
        raise
    _finish(bar, animator)
    return hist


def _check_reporting(test_iter, verbose, progress, animator, plot_path, callback) -> tuple:
    """(verbose, progress) as bools (progress may be None), after refusing what the first
    epoch's end would trip over."""
    if test_iter is not None and not hasattr(test_iter, "__iter__"):
        raise TypeError(f"test_iter must be None or an iterable of (X, y) pairs (such as a "
                        f"DataLoader), got {type(test_iter).__name__}")
    if animator is not None:
        if not callable(getattr(animator, "add", None)):
            raise TypeError(f"animator must be None or an Animator (anything with "
                            f"add(x, y)), got {type(animator).__name__}")
        if getattr(animator, "closed", False) is True:
            raise ValueError("animator was closed: give an open Animator")
        if plot_path is not None:
            raise ValueError("give animator or plot_path, not both (an Animator writes the "
                             "file given as its own path=)")
    if callback is not None:
        C.function("callback", callback, "None or a callable taking (epoch, history)")
    # verbose=2 is a level elsewhere (Keras, scikit-learn): any int >= 0 counts as its truth
    if isinstance(verbose, numbers.Integral) and not isinstance(verbose, (bool, np.bool_)) \
            and verbose >= 0:
        verbose = bool(verbose)
    return C.boolean("verbose", verbose), C.boolean("progress", progress, allow_none=True)


def _plot_animator(num_epochs: int, plot_path):
    from .plotting import _epoch_animator

    return _epoch_animator(num_epochs, path=plot_path, min_interval=PLOT_INTERVAL)


def _report(epoch: int, hist: History, verbose: bool, bar, animator) -> None:
    """Print the epoch just recorded in `hist` and add it to the animator."""
    tl, ta, va = hist.train_loss[-1], hist.train_acc[-1], hist.test_acc[-1]
    classify = not math.isnan(ta)
    if verbose:
        line = f"epoch {epoch}, loss {loss_text(tl)}"
        if classify:
            line += f", train acc {ta:.3f}"
        if not math.isnan(va):
            line += f", test acc {va:.3f}"
        msg = f"{line}, {hist.seconds[-1]:.3f} s"
        (bar.write(msg) if bar is not None else print(msg, flush=True))
    if animator is not None:
        animator.add(epoch, (tl, ta if classify else None, va if classify else None))


def _finish(bar, animator, failed: Optional[BaseException] = None) -> None:
    """Close the progress bar and draw the epochs a throttled animator has not drawn yet (an
    animator of the user's own may have no flush).  When training failed, a failure here is
    noted on that error, never raised in its place."""
    try:
        if bar is not None:
            bar.close()
        flush = getattr(animator, "flush", None)
        if callable(flush):
            flush()
    except Exception as exc:
        if failed is None:
            raise
        if hasattr(failed, "add_note"):  # Python 3.11+
            failed.add_note(f"(finishing the plot then failed too: {type(exc).__name__}: {exc})")
