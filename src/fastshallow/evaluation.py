"""Evaluating a trained network: accuracy, loss, and the book's prediction grid."""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _checks as C
from . import _fused
from ._config import resolve_threads
from .data import DataLoader
from .metrics import accuracy

__all__ = ["evaluate_accuracy", "evaluate_loss", "predict"]


def _batches(data_iter):
    if not hasattr(data_iter, "__iter__"):
        raise TypeError(f"the data iterator must be an iterable of (X, y) pairs (such as a "
                        f"DataLoader), got {type(data_iter).__name__}")
    for batch in data_iter:
        # a list too, as the training loop takes: torch's DataLoader yields [X, y]
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("the data iterator must yield (X, y) pairs, got "
                            f"{type(batch).__name__}"
                            + (f" of {len(batch)} items" if isinstance(batch, (tuple, list))
                               else ""))
        yield batch


def evaluate_accuracy(net, data_iter, *, num_threads: Optional[int] = None) -> float:
    """The fraction of examples of `data_iter` whose argmax prediction is the label.  For a
    single Dense layer on an array-backed loader with numeric labels, one compiled call counts
    the hits (forward and argmax, chunk by chunk while each chunk's outputs are in cache), of
    the very rows an iteration would yield, and the loader advances as an iteration would.
    `num_threads`: threads of that compiled count (None: :func:`fastshallow.get_num_threads`;
    the result is the same for any count); otherwise the network runs batch by batch and
    `num_threads` is only checked.  NaN when `data_iter` yields no examples."""
    C.function("net", net, "a network (a callable taking X)")
    resolve_threads(num_threads)  # refused on the per-batch path too, which has no use for it
    fast = _fast_rows(net, data_iter)
    if fast is not None:
        dense, X, labels, scale = fast
        if not len(X):  # as the loop: no examples, no accuracy
            return float("nan")
        return _fused.count_hits(dense, X, labels, scale, num_threads) / len(X)
    correct = total = 0
    for X, y in _batches(data_iter):
        correct += accuracy(net(X), y)
        total += np.asarray(y).size
    return correct / total if total else float("nan")


def _fast_rows(net, data_iter) -> Optional[tuple]:
    """(dense, X, label codes, scale) of exactly the rows iterating `data_iter` would yield,
    when one compiled call can count the hits, else None.  Taking them advances the loader as
    an iteration would (its epoch count and, when shuffling, its random stream): the answer,
    and whatever the loader does next (it may be the training loader too), are the loop's."""
    if not isinstance(data_iter, DataLoader) or type(data_iter).__iter__ is not (
            DataLoader.__iter__) or type(data_iter).epoch_order is not DataLoader.epoch_order:
        return None  # a loader of its own may yield other rows than its dataset's arrays
    fast = _fused.can_forward(net, data_iter)
    if fast is None or len(data_iter.dataset) != len(fast[1]):
        return None
    dense, X, y, scale = fast
    if not C.one_per_row(np.shape(y)):
        return None  # not one label per row: accuracy() says so, as the batch loop runs it
    labels = _fused.label_codes(y)
    if labels is None or len(labels) != len(X):
        return None
    order = data_iter.epoch_order()
    if len(order) < len(X):  # drop_last: only the rows of whole batches
        X, labels = X[order], labels[order]
    return dense, X, labels, scale


def evaluate_loss(net, data_iter, loss) -> float:
    """The mean of the values `loss` gives for `net` over `data_iter`: per example for the
    library's losses, per example and output for an elementwise one such as
    :func:`~fastshallow.squared_loss` (as the book's ``l.sum() / l.numel()``)."""
    C.function("net", net, "a network (a callable taking X)")
    C.function("loss", loss, "a loss function (a callable taking y_hat and y)")
    total = count = 0.0
    for X, y in _batches(data_iter):
        l = np.asarray(loss(net(X), y))
        if l.ndim == 0:  # a mean already: averaging means of unequal batches would be wrong
            raise ValueError("loss must return one value per example (evaluate_loss averages "
                             "them), got a single number: pass the per-example loss, not its "
                             "mean or sum")
        total += float(l.sum())
        count += l.size
    return total / count if count else float("nan")


def predict(net, test_iter, n: int = 6, path=None, labels=None) -> np.ndarray:
    """The book's ``predict_ch3``: the first `n` images of `test_iter` (an iterable of (X, y)
    pairs) in one row, titled with their true and `net`'s predicted labels, wrong predictions
    in red.  The book takes them from the first batch only, so that a batch smaller than `n`
    shows fewer; here further batches are taken until there are `n` (fewer only when
    `test_iter` runs out).  Returns the flat array of the grid's matplotlib Axes.  `path`
    also saves the grid there, in the format its extension names: any matplotlib can write
    (.png, .svg, .pdf, .jpg, ...; see ``matplotlib.figure.Figure.savefig``), others are refused
    with ValueError before anything is drawn; its folder must exist.  `labels` maps class
    indices to names (default: Fashion-MNIST's)."""
    from .plotting import _check_save_path, check_prediction_count, prediction_grid

    # All checked before the first batch is taken: that advances the loader and may build a
    # deferred network.
    n = check_prediction_count(n)
    if path is not None:
        _check_save_path("path", path)
    if labels is None:
        from .datasets import get_fashion_mnist_labels as labels
    C.function("labels", labels, "a function mapping class indices to names")
    C.function("net", net, "a network (a callable taking X)")
    Xs, ys, preds, have = [], [], [], 0
    for X, y in _batches(test_iter):  # as few batches as hold n images: one, as in the book
        Xs.append(np.asarray(X))
        ys.append(np.asarray(y))
        preds.append(np.asarray(net(X)).argmax(axis=1))
        have += len(Xs[-1])
        if have >= n:
            break
    if not Xs:
        raise ValueError("test_iter yielded no batches: there are no images to predict")
    X, y, pred = (np.concatenate(parts)[:n] for parts in (Xs, ys, preds))
    return prediction_grid(X, labels(y), labels(pred), n=n, path=path)
