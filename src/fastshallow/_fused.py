"""Recognizing when a model, loss, optimizer and data can run on the fused compiled kernels, and
running them there.

The fused path covers a single ``Dense`` layer (optionally after ``Flatten``) trained with
``SoftmaxCrossEntropyLoss``, ``L2Loss`` or ``HuberLoss`` by the library's ``SGD`` on a dataset
that exposes its arrays (``as_arrays()``): each minibatch -- gather, forward, loss, gradient,
update -- is one pass of compiled code, with many minibatches per call.  It computes what the
per-batch loop ``loss(net(X), y).backward(); trainer.step(len(X))`` computes, in the same order.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from . import _checks as C
from ._config import SERIAL_WORK, resolve_threads
from ._ext import kernels as _k
from .losses import HuberLoss, L2Loss, SoftmaxCrossEntropyLoss
from .nn import Dense, Flatten, Sequential
from .optim import SGD, buffer_fits, decay_error

LOSS_SOFTMAX_XENT, LOSS_L2, LOSS_HUBER = 0, 1, 2

# Minibatches per compiled call (a segment).  A call costs more than its minibatches: the call
# itself (about 15 us) and, on a team, waking the threads and waiting for them in its first
# minibatches -- about 65 us in all on 2 threads, 5-13% of a Fashion-MNIST epoch in calls of 16
# minibatches and 4-11% of an epoch of linear regression 1,000,000 x 100 in calls of 81.  So
# segments are sized by time: SEGMENT_SECONDS at the speed the last call ran, which makes the
# calls' cost vanish while the progress bar still moves, Ctrl-C is honoured within a fraction of
# a second and the thread count can be chosen again often.  Until a call has been timed, a
# segment is SEGMENT minibatches, or SEGMENT_WORK multiply-adds' worth of small ones (a
# millisecond or two).
SEGMENT_SECONDS = 0.02
SEGMENT = 16
SEGMENT_WORK = 1 << 23
# A segment that re-times the thread count not in use (ThreadChooser) is this much shorter than
# an untimed one: a few minibatches time it, and on a quiet machine it is the slower choice.
PROBE_DIVISOR = 4


class ThreadChooser:
    """Picks, segment by segment, between one thread and the full team, by measured speed.

    Each minibatch ends with the threads waiting for one another; when another process holds a
    core, a descheduled team member stalls every such wait by a scheduler time slice and two
    threads run many times slower than one.  Results are bit-identical for any thread count, so
    the fused path is free to switch: it times both, keeps the faster, and re-times the other in
    case the machine has changed or the first timing was unlucky: 2 segments after the first
    choice, then after gaps that double up to `probe_every` segments.  It switches only for a
    clear gain, so timing noise does not make it flip: 10% back to the team, 50% to one
    thread.  On a quiet machine a segment of the team can take a third longer than the next
    (the first of a run, which wakes the threads and reads rows nobody requested ahead, more),
    and with 10% one thread then ran whole epochs at half to two thirds of the speed; a core
    held by another process makes the team many times slower."""

    ONE_THREAD_GAIN = 1.5

    def __init__(self, team: int, probe_every: int = 64):
        self.team = team
        self.probe_every = probe_every
        self.cost: dict = {}  # threads -> seconds per minibatch (moving average)
        self.segments = 0
        self.current = team
        self.gap = 2
        self.next_probe = 0  # the segment that re-times the other choice (0: not set yet)

    def pick(self) -> int:
        if self.team <= 1:
            return 1
        self.segments += 1
        for t in (self.team, 1):
            if t not in self.cost:
                return t
        other = 1 if self.current == self.team else self.team
        gain = self.ONE_THREAD_GAIN if other == 1 else 1.1
        if self.cost[other] * gain < self.cost[self.current]:
            self.current, other = other, self.current
        if not self.next_probe:
            self.next_probe = self.segments + self.gap
        elif self.segments >= self.next_probe:
            self.gap = min(2 * self.gap, self.probe_every)
            self.next_probe = self.segments + self.gap
            return other
        return self.current

    def record(self, threads: int, seconds: float, batches: int) -> None:
        per = seconds / max(batches, 1)
        old = self.cost.get(threads)
        self.cost[threads] = per if old is None else 0.5 * (old + per)


class TrainingDiverged(FloatingPointError):
    """Training produced a non-finite loss or non-finite parameters."""


def diverged(epoch: int, batch: int, lr: float, what: str = "the training loss",
             where: str = "") -> TrainingDiverged:
    """`lr`: the rate of that minibatch's step (NaN when unknown, as for a user's updater)."""
    rate = f" (learning rate {lr:g})" if math.isfinite(lr) else ""
    # Only a rate one could pass back is suggested: not inf or NaN, nor one that is zero.
    hint = f" (e.g. {lr / 10:g})" if math.isfinite(lr) and lr / 10 > 0 else ""
    return TrainingDiverged(
        f"{what} became NaN or infinite in epoch {epoch}, minibatch {batch}{where}{rate}; the "
        f"parameters have diverged -- try a smaller learning rate{hint} or check the data for "
        f"extreme values")


def parameters_diverged(params, epoch: int, batch: int, lr: float) -> None:
    """Raise TrainingDiverged when a parameter is NaN or infinite after the epoch's last
    minibatch, `batch`.  Each loss is computed before its minibatch's update, so an update
    that breaks the parameters shows in the next minibatch's loss -- except the last one,
    which only this shows (and it costs microseconds: the parameters, not the data)."""
    for p in params:
        data = getattr(p, "_data", None)  # None: a deferred parameter no update has reached
        if data is not None and not np.isfinite(data).all():
            raise diverged(epoch, batch, lr, what=f"the parameter {p.name!r}",
                           where=", the epoch's last update")


def find_dense(net) -> Optional[Dense]:
    """The single Dense layer of `net` if it is Dense or Sequential(Flatten*, Dense)."""
    if isinstance(net, Dense):
        return net
    if isinstance(net, Sequential):
        dense = [b for b in net if isinstance(b, Dense)]
        rest = [b for b in net if not isinstance(b, (Dense, Flatten))]
        if len(dense) == 1 and not rest and isinstance(net[len(net) - 1], Dense):
            return dense[0]
    return None


def _kernel_rows(X: np.ndarray, dense: Dense) -> bool:
    """X is what the fused kernels read: C-contiguous, aligned 2-D rows of uint8 or the
    layer's dtype."""
    return (isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype in (np.uint8, dense.dtype)
            and X.flags.c_contiguous and X.flags.aligned)


def dataset_arrays(data_iter):
    """(X2d, y, scale) of a DataLoader's dataset when it exposes them, else None."""
    ds = getattr(data_iter, "dataset", None)
    get = getattr(ds, "as_arrays", None)
    arrays = get() if callable(get) else None
    if arrays is None:
        return None
    X, y, scale = arrays[0], arrays[1], arrays[2]
    return X, y, (1.0 if scale is None else float(scale))


def _loss_numbers(loss) -> tuple:
    """(loss kind, label smoothing, Huber delta), checked as the losses' constructors check them
    (they are public attributes, which the per-batch loop reads at every minibatch)."""
    if isinstance(loss, SoftmaxCrossEntropyLoss):
        return LOSS_SOFTMAX_XENT, C.label_smoothing(loss.label_smoothing), 0.0
    if isinstance(loss, HuberLoss):
        return LOSS_HUBER, 0.0, C.huber_delta(loss.delta)
    return LOSS_L2, 0.0, 0.0


def epoch_data(dense: Dense, loader, arrays, classify: bool, first: bool = True,
               last_labels: Optional[np.ndarray] = None) -> tuple:
    """``((X, labels, targets, scale), "")`` for the compiled step to read unchecked for a whole
    epoch, taken from `arrays` (the loader's dataset_arrays) as they are now, or ``(None, why
    not)``; raises ValueError for data that contradict themselves or the layer (and, when
    `first`, for targets that are not finite).  `last_labels`: the labels of the epoch before
    (see private_labels).

    The data are read afresh for every epoch: the dataset (its arrays, its length) and the labels
    are the caller's, whom nothing stops from changing them between epochs (a callback), or
    while an epoch runs (another thread)."""
    X, y, scale = arrays
    if not _kernel_rows(X, dense):
        return None, (f"the features ({getattr(X, 'dtype', type(X).__name__)}, {np.shape(X)}) "
                      f"are not uint8 or {dense.dtype} rows")
    # A view of our own: reading the images in place is the point of the fused path, but the
    # caller's array object could be given another shape or dtype in place.
    X = X.view()
    n = len(loader.dataset)
    if n != X.shape[0]:  # the epoch's indices come from len(dataset): they must be rows of X
        raise ValueError(f"the training dataset says it has {n} examples but its as_arrays() "
                         f"features have {X.shape[0]} rows")
    if dense.in_units is not None and dense.in_units != X.shape[1]:  # None: not built yet
        raise ValueError(f"the network expects {dense.in_units} features, the training data "
                         f"has {X.shape[1]}")
    m = dense.units
    if classify:
        return (X, private_labels(y, m, n, last_labels), None, scale), ""
    # Targets are read in place: their size is fixed by this view, and a value changed
    # meanwhile can only change the numbers (a NaN loss is reported as divergence).  So their
    # values are checked before the first epoch only (a pass over them is 1% of an epoch of
    # linear regression on 1,000,000 x 100).
    T = C.as_array("targets", y, dtype=dense.dtype, finite=first)
    if T.size != n * m:
        return None, f"the targets have shape {T.shape}, not one value per output"
    return (X, None, T.reshape(n, m), scale), ""


def private_labels(y, m: int, n: int, last: Optional[np.ndarray] = None) -> np.ndarray:
    """The labels the compiled step reads for a whole epoch.  Every label indexes the outputs,
    so the step reads a private copy, checked after copying: no later change to the caller's
    labels (often the very array given) can reach it.  The copy is uint8 up to 256 classes:
    60 KB for Fashion-MNIST where int64 took 480 KB, and the step's reads of it, at random
    rows, then stay in cache (0.3 against 0.8 us per thread a minibatch of a two-thread epoch,
    in a C harness).  `last`, the copy the epoch before read, is read again while `y` holds the
    same values: comparing is one pass over the caller's labels, where copying and checking
    were three (in fs.train on Fashion-MNIST, with the labels out of cache after an epoch,
    0.10-0.11 against 0.22-0.25 ms an epoch)."""
    same = (last is not None and len(last) == n and np.asarray(y).dtype.kind in "iuf"
            and np.array_equal(y, last))
    if same:
        return last
    labels = C.as_labels("labels", np.array(y), n_classes=m, length=n)
    return labels.astype(np.uint8) if m <= 256 else labels


@dataclass
class FusedTrainer:
    dense: Dense
    loader: object  # the DataLoader, whose dataset is read again for every epoch
    loss: object
    opt: SGD
    data: Optional[tuple] = None  # plan's epoch_data, for the first epoch
    chooser: Optional[ThreadChooser] = None
    labels: Optional[np.ndarray] = None  # the last epoch's (private_labels)
    batch_seconds: float = 0.0  # per minibatch in the last timed segment, which sizes the next

    def _data(self) -> tuple:
        """This epoch's (X, labels, targets, scale): plan's for the first, then read again."""
        data, self.data = self.data, None
        if data is None:
            arrays = dataset_arrays(self.loader)
            why = "the training dataset no longer exposes its arrays (as_arrays())"
            if arrays is not None:
                data, why = epoch_data(self.dense, self.loader, arrays,
                                       isinstance(self.loss, SoftmaxCrossEntropyLoss),
                                       first=False, last_labels=self.labels)
            if data is None:
                raise ValueError(f"the training data have changed since training started and "
                                 f"the fused kernels can no longer train on them: {why}")
        self.labels = data[1]
        return data

    def _check_optimizer(self, W, b, momentum: float) -> tuple:
        """(index of the weight in opt.params, of the bias, momentum buffers or None): the
        optimizer's list of parameters is public and may have been changed since `plan`."""
        d, opt = self.dense, self.opt
        if not _holds_exactly(opt, d):
            raise ValueError("the optimizer no longer holds exactly the Dense layer's "
                             "parameters: make a new SGD for new parameters")
        iw = next(i for i, p in enumerate(opt.params) if p is d.weight)
        ib = next(i for i, p in enumerate(opt.params) if p is d.bias)
        vel = opt.velocity if momentum else None  # as SGD.step: no buffers without momentum
        if vel is not None and (len(vel) != 2 or not (
                buffer_fits(vel[iw], W) and buffer_fits(vel[ib], b))):
            raise ValueError("the optimizer's momentum buffers are not writeable C-contiguous "
                             "arrays of the layer's parameters' shapes and dtype: make a new "
                             "SGD for new parameters")
        return iw, ib, vel

    def run_epoch(self, order: np.ndarray, epoch: int, num_threads=None,
                  on_batches: Optional[Callable[[int], None]] = None):
        """Train one epoch over `order`; returns (mean loss, accuracy or nan)."""
        d, opt = self.dense, self.opt
        X, labels, targets, scale = self._data()
        kind, smooth, delta = _loss_numbers(self.loss)
        # The compiled step trusts every index and size: check them here, where it is cheap
        # (the order: 8 us for 60000 rows).
        order = C.as_indices("the epoch's order", order, X.shape[0])
        batch_size = C.positive_int("batch_size", self.loader.batch_size)
        W, b = d.weight.data, d.bias.data
        if W.shape != (X.shape[1], d.units) or b.shape != (d.units,):
            raise RuntimeError(f"the layer's parameters (weight {W.shape}, bias {b.shape}) do "
                               f"not fit {X.shape[1]} features and {d.units} outputs")
        # As SGD.step refuses them (a parameter's flags and dtype can be reassigned in place),
        # before any update: the compiled step would update one and not the other.
        for p, a in ((d.weight, W), (d.bias, b)):
            C.as_writeable(f"parameter {p.name!r}", a)
        if b.dtype != W.dtype:
            raise TypeError(f"the layer's bias has dtype {b.dtype}, its weight {W.dtype}")
        k, m = W.shape
        n = len(order)
        B = max(1, min(batch_size, n))  # a batch larger than the data is one short batch
        nb = -(-n // B)
        if nb == 0:
            return float("nan"), float("nan")
        # Read once: the compiled calls of this epoch must agree with the checks (whether
        # there are momentum buffers, the decay's range).
        momentum, wd = opt.momentum, opt.weight_decay
        iw, ib, vel = self._check_optimizer(W, b, momentum)
        lrs = opt.epoch_rates(nb, W.dtype)  # refused as SGD.step refuses, before any update
        err = decay_error(wd, W.dtype)
        if err is not None:
            raise err
        vw, vb = (vel[iw], vel[ib]) if vel is not None else (None, None)
        Wp = _k().to_working_layout(W)
        V = _k().to_working_layout(vw) if vw is not None else None
        batch_loss = np.zeros(nb)
        batch_hits = np.zeros(nb, np.int64)
        scratch = _k().fused_scratch(B, k, m, W.dtype, X.dtype.itemsize)
        step = functools.partial(_k().fused_sgd, X, labels, targets, order, B, kind, smooth,
                                 delta, Wp, b, V, vb, lrs, momentum, wd, scale, batch_loss,
                                 batch_hits)
        done = [0]  # minibatches updated, also when a later one fails: the schedule's clock
        try:
            self._segments(step, scratch, nb, B * k * max(m, 4), num_threads, epoch, lrs,
                           on_batches, done)
        finally:
            _k().from_working_layout(Wp, k, m, W)
            if V is not None:
                _k().from_working_layout(V, k, m, vw)
            opt.num_steps += done[0]
        parameters_diverged((d.weight, d.bias), epoch, nb, float(lrs[-1]))
        # One output: the argmax hits would count every row (see plan), not what accuracy()
        # counts.
        acc = batch_hits.sum() / n if labels is not None and m > 1 else float("nan")
        return float(batch_loss.sum() / n), float(acc)

    def _segments(self, step, scratch, nb: int, work: int, num_threads, epoch: int, lrs,
                  on_batches, done: list) -> None:
        """Minibatches [0, nb) by ``step(t0, t1, threads, scratch)``, in segments sized by time
        and with the thread count chosen for each (`work`: per minibatch); done[0] counts the
        minibatches updated."""
        # Per-minibatch work decides: the threads' waits cost more than a small minibatch takes.
        # A team is worth trying sooner than for one kernel call: the chooser below drops it
        # while one thread runs faster.
        nt = resolve_threads(num_threads, work, default_floor=SERIAL_WORK)
        if num_threads is None:  # the default: adapt to how busy the machine is
            if self.chooser is None or self.chooser.team != nt:
                self.chooser = ThreadChooser(nt)
            chooser = self.chooser
        else:  # an explicit request is honoured as given
            chooser = None
        untimed = max(SEGMENT, SEGMENT_WORK // max(work, 1))
        t0 = 0
        while t0 < nb:
            threads = chooser.pick() if chooser is not None else nt
            probe = chooser is not None and threads != chooser.current
            if probe:
                size = max(1, untimed // PROBE_DIVISOR)
            elif self.batch_seconds > 0:
                size = max(1, int(SEGMENT_SECONDS / self.batch_seconds))
            else:
                size = untimed
            t1 = min(nb, t0 + size)
            start = time.perf_counter()
            bad = step(t0, t1, threads, scratch)
            secs = time.perf_counter() - start
            if not probe:
                self.batch_seconds = secs / (t1 - t0)
            if chooser is not None:
                chooser.record(threads, secs, t1 - t0)
            if bad >= 0:  # the step stops after that minibatch's update
                done[0] = int(bad) + 1
                raise diverged(epoch, int(bad) + 1, float(lrs[bad]))
            done[0] = t1
            if on_batches is not None:
                on_batches(t1 - t0)
            t0 = t1


def plan(net, train_iter, loss, updater, insist: bool = False
         ) -> tuple[Optional[FusedTrainer], str]:
    """A FusedTrainer when the fused kernels can run this training, else (None, why not).
    `insist`: the caller wants the fused kernels even where the loop would report more (the
    accuracy of a softmax over one output, which the FusedTrainer then reports as NaN)."""
    dense = find_dense(net)
    if dense is None:
        return None, "the network is not a single Dense layer (optionally after Flatten)"
    if not dense.use_bias:
        return None, "the Dense layer has no bias"
    if type(loss) not in (SoftmaxCrossEntropyLoss, L2Loss, HuberLoss):
        return None, "the loss is not one of the library's SoftmaxCrossEntropy/L2/Huber losses"
    if type(loss) is SoftmaxCrossEntropyLoss and dense.units < 2 and not insist:
        return None, ("a softmax over one output: its accuracy compares that output's value "
                      "with the label (as the book's accuracy() does), which only the "
                      "per-batch loop measures")
    if not isinstance(updater, SGD):
        return None, "the updater is not fastshallow.optim.SGD"
    from .data import DataLoader

    if not isinstance(train_iter, DataLoader):
        return None, "the training data is not a fastshallow DataLoader"
    if not _holds_exactly(updater, dense):
        return None, "the optimizer does not hold exactly the Dense layer's parameters"
    arrays = dataset_arrays(train_iter)
    if arrays is None:
        return None, "the training dataset does not expose its arrays (as_arrays())"
    _loss_numbers(loss)  # refused now rather than at the first epoch
    data, why = epoch_data(dense, train_iter, arrays, isinstance(loss, SoftmaxCrossEntropyLoss))
    if data is None:
        return None, why
    if not dense.initialized:  # after every check: a refused call changes nothing
        if train_iter.shuffle:  # as the per-batch loop draws: the loader's generator first
            train_iter._generator()
        dense._prepare(np.zeros((1, data[0].shape[1]), dense.dtype))
    return FusedTrainer(dense, train_iter, loss, updater, data), ""


def _holds_exactly(opt: SGD, dense: Dense) -> bool:
    params = dense.parameters()
    return len(opt.params) == 2 and {id(p) for p in opt.params} == {id(p) for p in params}


def label_codes(y) -> Optional[np.ndarray]:
    """int64 labels the compiled hit count compares with class indices, giving what comparing
    `y` with them as values gives (a float 3.0 is class 3; 2.5, NaN or a negative label match
    no class: -1); None for labels that are not numbers."""
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind in "biu":
        # uint64 labels >= 2**63 turn negative: they matched no class before either
        return y.astype(np.int64)
    if y.dtype.kind != "f":
        return None
    # (2.0 ** 62 overflows to inf in float16 labels' type: still the right comparison)
    with np.errstate(invalid="ignore", over="ignore"):
        whole = (y >= 0) & (y < 2.0 ** 62) & (y == np.floor(y))
    return np.where(whole, y, -1).astype(np.int64)


def count_hits(dense: Dense, X: np.ndarray, labels: np.ndarray, scale: float,
               num_threads=None) -> int:
    """How many rows of X (uint8 or the layer's dtype) the layer classifies as their label
    (`label_codes`): the argmax of its outputs, as NumPy's argmax picks it."""
    W, b = dense.weight.data, dense.bias.data
    if W.shape != (X.shape[1], dense.units) or b.shape != (dense.units,):
        raise RuntimeError(f"the layer's parameters (weight {W.shape}, bias {b.shape}) do not "
                           f"fit {X.shape[1]} features and {dense.units} outputs")
    if labels.shape != (X.shape[0],) or labels.dtype != np.int64:
        raise ValueError(f"expected {X.shape[0]} int64 labels, one per example, got "
                         f"{labels.dtype} {labels.shape}")
    k, m = W.shape
    nt = resolve_threads(num_threads, len(X) * k * max(m, 4))
    return _k().fused_forward(X, None, _k().to_working_layout(W), b, scale, None, nt,
                              np.ascontiguousarray(labels))


def can_forward(net, data_iter) -> Optional[tuple]:
    """(dense, X, y, scale) when `net` on `data_iter` can be evaluated by the fused forward."""
    dense = find_dense(net)
    # One output is not a choice among classes: accuracy() compares its value with the label
    # (as the book does), where the compiled argmax would always say class 0.
    if dense is None or not dense.use_bias or not dense.initialized or dense.units < 2:
        return None
    arrays = dataset_arrays(data_iter)
    if arrays is None:
        return None
    X, y, scale = arrays
    if not _kernel_rows(X, dense) or X.shape[1] != dense.in_units:
        return None
    return dense, X, y, scale
