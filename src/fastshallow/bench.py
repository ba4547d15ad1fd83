"""Side-by-side timings on this machine: fastshallow against the same algorithms written with
NumPy and (when installed) PyTorch.  ``fastshallow bench`` prints the table; the pytest-benchmark
files in ``benches/`` time the same functions.

Every contender trains the book's softmax regression on Fashion-MNIST (batch 256, lr 0.1,
weights ~ N(0, 0.01), reshuffled every epoch) and measures, as ``fs.train`` does, the training
loss and accuracy on the fly and the test accuracy after each epoch.  NumPy and PyTorch get the
images preloaded as a float32 array in [0, 1] (not timed); fastshallow reads the uint8 images.
"""
from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

BATCH, LR = 256, 0.1


def fashion_arrays():
    """(Xtr uint8 (60000, 784), ytr, Xte uint8 (10000, 784), yte) of the real data."""
    from .datasets import FashionMNIST

    tr, te = FashionMNIST(train=True), FashionMNIST(train=False)
    return (tr.data.reshape(len(tr), -1), np.asarray(tr.targets, np.int64),
            te.data.reshape(len(te), -1), np.asarray(te.targets, np.int64))


def fashion_loaders(seed: int = 0):
    """The library's own Fashion-MNIST loaders (uint8 images, scaled inside the kernels)."""
    from .datasets import load_data_fashion_mnist

    return load_data_fashion_mnist(BATCH, seed=seed)


# ---- contenders ------------------------------------------------------------------------------

def fastshallow_softmax(loaders, epochs: int, seed: int = 0, num_threads=None) -> float:
    """fs.train (on the fused kernels) over the datasets of `fashion_loaders()`, shuffled from
    `seed` as the other contenders shuffle: every call with the same seed trains the same model,
    on any number of threads.  Returns the test accuracy."""
    import fastshallow as fs

    train_iter, test_iter = loaders
    train_iter = fs.DataLoader(train_iter.dataset, train_iter.batch_size, shuffle=True,
                               seed=seed)
    net = fs.nn.Dense(10, rng=seed)
    trainer = fs.optim.SGD(net.parameters(), lr=LR)
    hist = fs.train(net, train_iter, test_iter, fs.losses.SoftmaxCrossEntropyLoss(), epochs,
                    trainer, verbose=False, progress=False, num_threads=num_threads)
    return hist.test_acc[-1]


def numpy_softmax(data_f32, epochs: int, seed: int = 0) -> float:
    """The chapter's algorithm in NumPy (stable softmax, summed loss, SGD by lr / batch)."""
    Xtr, ytr, Xte, yte = data_f32
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 0.01, (Xtr.shape[1], 10)).astype(np.float32)
    b = np.zeros(10, np.float32)
    n = len(Xtr)
    acc = 0.0
    for _ in range(epochs):
        loss_sum = hits = 0.0
        perm = rng.permutation(n)
        for s in range(0, n, BATCH):
            idx = perm[s:s + BATCH]
            X, y = Xtr[idx], ytr[idx]
            Z = X @ W + b
            Z -= Z.max(axis=1, keepdims=True)
            E = np.exp(Z)
            P = E / E.sum(axis=1, keepdims=True)
            rows = np.arange(len(idx))
            loss_sum += float(-np.log(P[rows, y]).sum())
            hits += float((Z.argmax(axis=1) == y).sum())
            P[rows, y] -= 1
            W -= (LR / len(idx)) * (X.T @ P)
            b -= (LR / len(idx)) * P.sum(axis=0)
        acc = float(((Xte @ W + b).argmax(axis=1) == yte).mean())
    return acc


def _torch_model(torch, seed):
    torch.manual_seed(seed)
    net = torch.nn.Linear(784, 10)
    torch.nn.init.normal_(net.weight, std=0.01)
    torch.nn.init.zeros_(net.bias)
    return net, torch.nn.CrossEntropyLoss(), torch.optim.SGD(net.parameters(), lr=LR)


def _torch_epoch(torch, net, loss, opt, batches):
    loss_sum = hits = 0.0
    for X, y in batches:
        out = net(X)
        l = loss(out, y)
        opt.zero_grad()
        l.backward()
        opt.step()
        loss_sum += l.item() * len(y)
        hits += (out.argmax(dim=1) == y).sum().item()
    return loss_sum, hits


def torch_preloaded_softmax(data_f32, epochs: int, seed: int = 0, num_threads=None) -> float:
    """PyTorch on preloaded tensors: randperm index slicing, nn.Linear, CrossEntropyLoss, SGD."""
    import torch

    if num_threads:
        torch.set_num_threads(num_threads)
    Xtr, ytr, Xte, yte = (torch.from_numpy(a) for a in data_f32)
    net, loss, opt = _torch_model(torch, seed)
    n = len(Xtr)
    acc = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n)
        batches = ((Xtr[perm[s:s + BATCH]], ytr[perm[s:s + BATCH]]) for s in range(0, n, BATCH))
        _torch_epoch(torch, net, loss, opt, batches)
        with torch.no_grad():
            acc = float((net(Xte).argmax(dim=1) == yte).float().mean())
    return acc


def torch_dataloader_softmax(data_f32, epochs: int, seed: int = 0, num_threads=None) -> float:
    """PyTorch's idiomatic loop: TensorDataset + DataLoader(shuffle=True)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    if num_threads:
        torch.set_num_threads(num_threads)
    Xtr, ytr, Xte, yte = (torch.from_numpy(a) for a in data_f32)
    net, loss, opt = _torch_model(torch, seed)
    loader = DataLoader(TensorDataset(Xtr, ytr), batch_size=BATCH, shuffle=True)
    acc = 0.0
    for _ in range(epochs):
        _torch_epoch(torch, net, loss, opt, loader)
        with torch.no_grad():
            acc = float((net(Xte).argmax(dim=1) == yte).float().mean())
    return acc


def linreg_data(n: int = 1_000_000, k: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, k), dtype=np.float32)
    w = rng.standard_normal(k).astype(np.float32)
    y = (X @ w + 0.5 + rng.normal(0, 0.01, n)).astype(np.float32)
    return X, y


def fastshallow_linreg_epoch(X, y, seed: int = 0, num_threads=None, lr=0.01) -> float:
    """One fused epoch of minibatch SGD for linear regression; returns the epoch's mean loss."""
    import fastshallow as fs

    it = fs.DataLoader(fs.ArrayDataset(X, y, check_finite=False), BATCH, shuffle=True, seed=seed)
    net = fs.nn.Dense(1, in_units=X.shape[1], rng=seed)
    trainer = fs.optim.SGD(net.parameters(), lr=lr)
    return fs.train_epoch(net, it, fs.losses.L2Loss(), trainer, num_threads=num_threads)[0]


def numpy_linreg_epoch(X, y, seed: int = 0, lr=0.01) -> float:
    """The same epoch in NumPy: fancy indexing, X @ w + b, X.T @ residual, update."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.01, X.shape[1]).astype(np.float32)
    b = np.float32(0)
    perm = rng.permutation(len(X))
    total = 0.0
    for s in range(0, len(X), BATCH):
        idx = perm[s:s + BATCH]
        Xb, yb = X[idx], y[idx]
        r = Xb @ w + b - yb
        total += float(0.5 * (r * r).sum())
        w -= (lr / len(idx)) * (Xb.T @ r)
        b -= np.float32(lr / len(idx) * r.sum())
    return total / len(X)


# The book's first training run (section 3.3): 1000 synthetic examples with 2 features, batch 10,
# lr 0.03, 3 epochs, the mean loss over all examples printed after each epoch.
BOOK_W, BOOK_B, BOOK_BATCH, BOOK_LR, BOOK_EPOCHS = (2.0, -3.4), 4.2, 10, 0.03, 3


def book_linreg_data(seed: int = 0):
    from .data import synthetic_data

    X, y = synthetic_data(np.array(BOOK_W), BOOK_B, 1000, seed=seed)
    return X, y.reshape(-1)


def _book_model(X, y, seed: int):
    """(data_iter, net, loss, trainer) of the book's section 3.3, on the library's pieces."""
    import fastshallow as fs

    net = fs.nn.Sequential(fs.nn.Dense(1, rng=seed))
    return (fs.load_array((X, y), BOOK_BATCH, seed=seed), net, fs.losses.L2Loss(),
            fs.optim.SGD(net.parameters(), lr=BOOK_LR))


def fastshallow_book_loop(X, y, seed: int = 0) -> float:
    """The book's per-batch loop on the library's pieces: ``l = loss(net(X), y);
    l.backward(); trainer.step(batch_size)``; returns the last epoch's mean loss."""
    data_iter, net, loss, trainer = _book_model(X, y, seed)
    for _ in range(BOOK_EPOCHS):
        for Xb, yb in data_iter:
            l = loss(net(Xb), yb)
            l.backward()
            trainer.step(BOOK_BATCH)
        last = float(loss(net(X), y).mean())
    return last


def fastshallow_book_fused(X, y, seed: int = 0) -> float:
    """The same training through ``fs.train_epoch`` (the fused step: minibatches this small go
    a whole epoch per compiled call)."""
    import fastshallow as fs

    data_iter, net, loss, trainer = _book_model(X, y, seed)
    for _ in range(BOOK_EPOCHS):
        fs.train_epoch(net, data_iter, loss, trainer)
        last = float(loss(net(X), y).mean())
    return last


def numpy_book_loop(X, y, seed: int = 0) -> float:
    """The same per-batch loop in plain NumPy (float32, as the library trains)."""
    rng = np.random.default_rng(seed)
    X, y = X.astype(np.float32), y.astype(np.float32).reshape(-1, 1)
    w = rng.normal(0, 0.01, (X.shape[1], 1)).astype(np.float32)
    b = np.zeros(1, np.float32)
    step = np.float32(BOOK_LR / BOOK_BATCH)
    for _ in range(BOOK_EPOCHS):
        perm = rng.permutation(len(X))
        for s in range(0, len(X), BOOK_BATCH):
            idx = perm[s:s + BOOK_BATCH]
            Xb, yb = X[idx], y[idx]
            d = Xb @ w + b - yb
            l = 0.5 * d * d  # noqa: F841 -- the loss values the loop computes, as the book's does
            w -= step * (Xb.T @ d)
            b -= step * d.sum(axis=0)
        d = X @ w + b - y
        last = float((0.5 * d * d).mean())
    return last


def torch_book_loop(X, y, seed: int = 0, num_threads=None) -> float:
    """The book's PyTorch loop: TensorDataset + DataLoader, nn.Linear, MSELoss, SGD."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    if num_threads:
        torch.set_num_threads(num_threads)
    torch.manual_seed(seed)
    Xt = torch.from_numpy(X.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32).reshape(-1, 1))
    data_iter = DataLoader(TensorDataset(Xt, yt), batch_size=BOOK_BATCH, shuffle=True)
    net = torch.nn.Linear(X.shape[1], 1)
    torch.nn.init.normal_(net.weight, std=0.01)
    torch.nn.init.zeros_(net.bias)
    loss = torch.nn.MSELoss()
    trainer = torch.optim.SGD(net.parameters(), lr=BOOK_LR)
    for _ in range(BOOK_EPOCHS):
        for Xb, yb in data_iter:
            l = loss(net(Xb), yb)
            trainer.zero_grad()
            l.backward()
            trainer.step()
        with torch.no_grad():
            last = float(loss(net(Xt), yt)) / 2
    return last


# ---- the table -------------------------------------------------------------------------------

def time_in_turns(contenders: List[Tuple[str, Callable[[], object], int]]
                  ) -> List[Tuple[str, float, object]]:
    """Time each (name, fn, runs) contender `runs` times, taking turns -- one run of each, then
    again -- so that a machine whose speed drifts over minutes (shared ones do, by 2x) slows
    every contender alike and the ratios hold.  Returns (name, median seconds, last result)."""
    for name, _, runs in contenders:
        if runs < 1:
            raise ValueError(f"contender {name!r} needs at least one run, got {runs}")
    times: Dict[str, List[float]] = {name: [] for name, _, _ in contenders}
    results: Dict[str, object] = {}
    for turn in range(max((runs for _, _, runs in contenders), default=0)):
        for name, fn, runs in contenders:
            if turn < runs:
                t0 = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - t0)
    return [(name, statistics.median(times[name]), results[name]) for name, _, _ in contenders]


def team_cpus(threads: int) -> List[int]:
    """The CPUs a team of `threads` runs on, for timing one thread on each: every CPU this
    process may use, which must be as many as the team has threads (else which ones the team
    would use is up to the system)."""
    if not hasattr(os, "sched_setaffinity"):
        raise RuntimeError("timing one thread per CPU needs os.sched_setaffinity (Linux)")
    cpus = sorted(os.sched_getaffinity(0))
    if threads < 2 or len(cpus) != threads:
        raise ValueError(f"timing one thread per CPU needs a team of 2 or more threads on "
                         f"exactly the CPUs this process may use ({len(cpus)}: {cpus}); the "
                         f"team has {threads} (use --threads {len(cpus)}, or taskset -c to "
                         f"choose the CPUs)")
    return cpus


def on_cpu(fn: Callable[[], object], cpu: int) -> Callable[[], object]:
    """`fn` made to run with the calling thread held to `cpu`, and released to the CPUs it had
    afterwards.  One-thread runs of the kernels compute on the calling thread, so this times
    one core alone.  (Threads started while it holds would inherit the one CPU: call it only
    once the team's threads exist, as `run` does by timing the team first.)"""
    def call():
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})
        try:
            return fn()
        finally:
            os.sched_setaffinity(0, before)
    return call


def perfect_team_seconds(alone: Sequence[float]) -> float:
    """How long a team would take if it shared the work perfectly among CPUs that take `alone`
    seconds each on their own: their speeds add up, 1 / sum(1 / t).  The CPUs of a shared
    virtual machine can differ a lot in speed, and then the team's speed-up over one thread
    depends on which CPU that thread ran on; this is the bound to set the team's time
    against."""
    if not alone or min(alone) <= 0:
        raise ValueError(f"need positive times, got {list(alone)}")
    return 1.0 / sum(1.0 / t for t in alone)


def run(epochs: int = 10, repeats: int = 3, num_threads: Optional[int] = None,
        torch: bool = True, dataloader: bool = True, linreg: bool = True,
        per_cpu: bool = False, out=print) -> List[Dict]:
    """Time every contender, task by task and in turns within a task, and print a table of
    medians and ratios to fastshallow (the first row of each task).  With `per_cpu`, the
    one-epoch task also times one thread held to each CPU of the team, and says how the team
    compares with a perfect team of those CPUs."""
    import fastshallow as fs

    threads = num_threads or fs.get_num_threads()
    cpus = team_cpus(threads) if per_cpu else []  # refused before any data is loaded
    data = fashion_arrays()
    loaders = fashion_loaders()
    data_f32 = (data[0].astype(np.float32) / 255, data[1], data[2].astype(np.float32) / 255,
                data[3])
    try:
        import torch as _torch  # noqa: F401
        have_torch = torch
    except ImportError:
        have_torch = False
    tasks: List[Tuple[str, list]] = []

    task = [("fastshallow", lambda: fastshallow_softmax(loaders, epochs, num_threads=threads),
             repeats),
            ("numpy", lambda: numpy_softmax(data_f32, epochs), repeats)]
    if have_torch:
        task.append(("pytorch (preloaded tensors)",
                     lambda: torch_preloaded_softmax(data_f32, epochs, num_threads=threads),
                     repeats))
        if dataloader:
            task.append(("pytorch (DataLoader)",
                         lambda: torch_dataloader_softmax(data_f32, epochs, num_threads=threads),
                         1))
    plural = "s" if epochs > 1 else ""
    tasks.append((f"softmax regression, Fashion-MNIST, {epochs} epoch{plural}", task))
    one_epoch = "softmax regression, Fashion-MNIST, one epoch"
    # the team first in every turn: its threads exist before any run holds a CPU
    tasks.append((one_epoch,
                  [(f"fastshallow, {t} thread{'s' if t > 1 else ''}",
                    lambda t=t: fastshallow_softmax(loaders, 1, num_threads=t), max(repeats, 5))
                   for t in sorted({threads, 1}, reverse=True)]
                  + [(f"fastshallow, 1 thread on CPU {c}",
                      on_cpu(lambda: fastshallow_softmax(loaders, 1, num_threads=1), c),
                      max(repeats, 5)) for c in cpus]))
    if linreg:
        X, y = linreg_data()
        tasks.append(("linear regression 1,000,000 x 100, one epoch",
                      [("fastshallow", lambda: fastshallow_linreg_epoch(X, y, num_threads=threads),
                        repeats),
                       ("numpy", lambda: numpy_linreg_epoch(X, y), repeats)]))
    Xs, ys = book_linreg_data()
    task = [("fastshallow, per-batch loop", lambda: fastshallow_book_loop(Xs, ys),
             max(repeats, 15)),
            ("fastshallow, fs.train_epoch", lambda: fastshallow_book_fused(Xs, ys),
             max(repeats, 15)),
            ("numpy, per-batch loop", lambda: numpy_book_loop(Xs, ys), max(repeats, 15))]
    if have_torch:
        task.append(("pytorch, DataLoader loop",
                     lambda: torch_book_loop(Xs, ys, num_threads=threads), repeats))
    tasks.append(("the book's linear regression (1000 x 2, batch 10, 3 epochs)", task))

    from ._ext import kernels

    out(f"fastshallow {fs.__version__}, {threads} threads, {kernels().isa()}")
    rows: List[Dict] = []
    for task_name, contenders in tasks:
        group = [{"task": task_name, "contender": name, "seconds": secs, "result": res}
                 for name, secs, res in time_in_turns(contenders)]
        rows += group
        base = group[0]["seconds"]
        out(f"\n{task_name}")
        out(f"  {'contender':34s} {'median s':>10s} {'vs fastshallow':>15s}  result")
        for r in group:
            res = r["result"]
            res_s = f"test acc {res:.4f}" if "softmax" in task_name else f"loss {res:.4g}"
            secs = r["seconds"]  # a run under 10 ms to the microsecond
            out(f"  {r['contender']:34s} {secs:10.{4 if secs >= 0.01 else 6}f} "
                f"{secs / base:14.2f}x  {res_s}")
        if task_name == one_epoch and cpus:
            perfect = perfect_team_seconds([r["seconds"] for r in group[-len(cpus):]])
            out(f"  one thread on each CPU: a perfect team of them would take {perfect:.4f} s, "
                f"{group[1]['seconds'] / perfect:.2f}x faster than 1 thread;")
            out(f"  the team took {base:.4f} s, {perfect / base:.2f} of that speed")
    return rows
