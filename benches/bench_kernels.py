"""Each compiled kernel beside a Python loop, NumPy and PyTorch, on the same inputs.

    python -m pytest benches/bench_kernels.py --benchmark-only -q \\
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name

Every pytest-benchmark group is one operation on one shape; its members are the
implementations:

- ``fastshallow``: the validated wrapper in fastshallow.kernels (so the timing includes the
  argument checks), writing into a preallocated ``out`` where the wrapper has one;
- ``numpy``: the idiomatic NumPy expression (``X @ W + b``, ``src[idx] * scale``, ...);
- ``torch``: the same with PyTorch on CPU tensors sharing the NumPy memory (skipped when PyTorch
  is missing);
- ``python-loop``: a Python loop over rows with NumPy on each row -- what one writes without
  vectorizing; a fully scalar loop would take seconds per call.

Every implementation's result is checked against a float64 NumPy reference before it is timed,
so a group only ever compares programs that compute the same thing.  Random gathers walk through
a shuffled permutation, a different batch each call, so the rows come from memory as they do in
training, not from a cache warmed by the previous round.

Shapes: the Fashion-MNIST softmax-regression step (batch 256 x 784 pixels -> 10 classes, gather
of 256 rows from 60000 x 784 uint8 with /255), and a large linear regression (1,000,000 x 100
float32, batch 256 -> 1 output), plus one whole epoch of minibatch SGD on the latter: written
with the kernels one call at a time (``fastshallow-kernels``), and as ``fs.train_epoch`` runs it
(``fastshallow-fused``: many minibatches per compiled call).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastshallow as fs
import fastshallow.kernels as K

try:  # PyTorch is optional: without it only the torch cases are skipped.
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

IMPLS = ("fastshallow", "numpy", "torch", "python-loop")
F32 = np.float32
BATCH = 256
LR = 0.03


def _to_numpy(x):
    if isinstance(x, tuple):
        return tuple(_to_numpy(v) for v in x)
    if torch is not None and isinstance(x, torch.Tensor):
        return x.numpy()
    return np.asarray(x)


def _prep(impl, args):
    """The arguments as the implementation takes them: tensors sharing memory for torch."""
    if impl == "torch":
        return tuple(torch.from_numpy(a) if isinstance(a, np.ndarray) else a for a in args)
    return tuple(args)


def run_case(benchmark, group, impl, impls, args_seq, ref, *, inplace=False, rtol=1e-4):
    """Check `impls[impl]` against `ref` on the first arguments, then time it.

    impls: name -> factory returning a function of the arguments (factories let the torch case
    be built only when torch is there).  args_seq: argument tuples; calls cycle through them.
    ref: the float64 reference of the first arguments.  inplace: the function updates its first
    argument; the check then runs on copies."""
    if impl == "torch" and torch is None:
        pytest.skip("PyTorch is not installed")
    if impl not in impls:
        pytest.skip(f"no {impl} implementation for this case")
    fn = impls[impl]()
    benchmark.group = group

    first = tuple(np.array(a) if inplace and isinstance(a, np.ndarray) else a
                  for a in args_seq[0])
    got = _to_numpy(fn(*_prep(impl, first)))
    want = ref(*args_seq[0])
    for g, w in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        w = np.asarray(w, np.float64)
        assert g.shape == w.shape, f"{impl}: shape {g.shape}, expected {w.shape}"
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * float(np.max(np.abs(w), initial=1)),
                                   err_msg=f"{impl} computes something else")

    prepared = [_prep(impl, a) for a in args_seq]
    if len(prepared) == 1:
        args = prepared[0]
        benchmark(fn, *args)
    else:
        it = itertools.cycle(prepared)
        benchmark(lambda: fn(*next(it)))


def _batches(n, rng, count=None):
    """Index batches of BATCH rows from one shuffled permutation of range(n)."""
    perm = rng.permutation(n)
    nb = n // BATCH if count is None else min(count, n // BATCH)
    return [np.ascontiguousarray(perm[i * BATCH:(i + 1) * BATCH]) for i in range(nb)]


# ---- Fashion-MNIST step: 256 x 784 -> 10 --------------------------------------------------------

@pytest.fixture(scope="module")
def fmnist_step():
    rng = np.random.default_rng(3)
    X = (rng.integers(0, 256, (BATCH, 784)) / 255).astype(F32)
    W = (0.01 * rng.standard_normal((784, 10))).astype(F32)
    b = (0.1 * rng.standard_normal(10)).astype(F32)
    Z = (X @ W + b)
    y = rng.integers(0, 10, BATCH)
    G = (rng.standard_normal((BATCH, 10)) / BATCH).astype(F32)
    return X, W, b, Z, y, G


def _matmul_impls(n_out):
    def loop():
        def f(X, W, b):
            out = np.empty((X.shape[0], n_out), X.dtype)
            for i in range(X.shape[0]):
                out[i] = X[i] @ W + b
            return out
        return f

    def fs():
        out = {}

        def f(X, W, b):
            buf = out.get(X.shape[0])
            if buf is None:
                buf = out[X.shape[0]] = np.empty((X.shape[0], n_out), X.dtype)
            return K.matmul_bias(X, W, b, out=buf)
        return f

    return {
        "fastshallow": fs,
        "numpy": lambda: (lambda X, W, b: X @ W + b),
        "torch": lambda: (lambda X, W, b: torch.addmm(b, X, W)),
        "python-loop": loop,
    }


def _backward_impls():
    def loop():
        def f(X, G):
            dW = np.zeros((X.shape[1], G.shape[1]), X.dtype)
            db = np.zeros(G.shape[1], X.dtype)
            for i in range(X.shape[0]):
                dW += np.outer(X[i], G[i])
                db += G[i]
            return dW, db
        return f

    return {
        "fastshallow": lambda: K.matmul_bias_backward,
        "numpy": lambda: (lambda X, G: (X.T @ G, G.sum(axis=0))),
        "torch": lambda: (lambda X, G: (X.T @ G, G.sum(dim=0))),
        "python-loop": loop,
    }


def _ref_matmul(X, W, b):
    return X.astype(np.float64) @ W + b


def _ref_backward(X, G):
    return X.astype(np.float64).T @ G, G.astype(np.float64).sum(axis=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_fmnist_matmul_bias(benchmark, impl, fmnist_step):
    X, W, b = fmnist_step[:3]
    run_case(benchmark, "fmnist matmul_bias 256x784->10 f32", impl, _matmul_impls(10),
             [(X, W, b)], _ref_matmul)


@pytest.mark.parametrize("impl", IMPLS)
def test_fmnist_matmul_bias_backward(benchmark, impl, fmnist_step):
    X, G = fmnist_step[0], fmnist_step[5]
    run_case(benchmark, "fmnist matmul_bias_backward 256x784->10 f32", impl, _backward_impls(),
             [(X, G)], _ref_backward)


def _xent_impls():
    def np_xent(Z, y):
        rows = np.arange(Z.shape[0])
        sh = Z - Z.max(axis=1, keepdims=True)
        e = np.exp(sh)
        s = e.sum(axis=1, keepdims=True)
        g = e / s
        g[rows, y] -= 1
        return np.log(s[:, 0]) - sh[rows, y], g

    def loop():
        def f(Z, y):
            n, m = Z.shape
            loss = np.empty(n, Z.dtype)
            g = np.empty((n, m), Z.dtype)
            for i in range(n):
                sh = Z[i] - Z[i].max()
                e = np.exp(sh)
                s = e.sum()
                loss[i] = np.log(s) - sh[y[i]]
                g[i] = e / s
                g[i, y[i]] -= 1
            return loss, g
        return f

    def th():
        def f(Z, y):
            lsm = torch.log_softmax(Z, dim=1)
            g = lsm.exp()
            g[torch.arange(Z.shape[0]), y] -= 1
            return -lsm.gather(1, y[:, None])[:, 0], g
        return f

    return {"fastshallow": lambda: K.softmax_cross_entropy, "numpy": lambda: np_xent,
            "torch": th, "python-loop": loop}


def _ref_xent(Z, y):
    Z = Z.astype(np.float64)
    rows = np.arange(Z.shape[0])
    sh = Z - Z.max(axis=1, keepdims=True)
    s = np.exp(sh).sum(axis=1)
    g = np.exp(sh) / s[:, None]
    g[rows, y] -= 1
    return np.log(s) - sh[rows, y], g


@pytest.mark.parametrize("impl", IMPLS)
def test_fmnist_softmax_cross_entropy(benchmark, impl, fmnist_step):
    Z, y = fmnist_step[3], fmnist_step[4]
    run_case(benchmark, "fmnist softmax_cross_entropy 256x10 f32", impl, _xent_impls(),
             [(Z, y)], _ref_xent)


@pytest.mark.parametrize("impl", IMPLS)
def test_fmnist_sgd_update(benchmark, impl, fmnist_step):
    W = fmnist_step[1].copy()
    G = (np.random.default_rng(4).standard_normal(W.shape)).astype(F32)
    step = LR / BATCH

    def loop():
        def f(W, G):
            for i in range(W.shape[0]):
                W[i] -= step * G[i]
            return W
        return f

    def np_sgd(W, G):
        W -= step * G
        return W

    impls = {
        "fastshallow": lambda: (lambda W, G: K.sgd_update(W, G, LR, BATCH)),
        "numpy": lambda: np_sgd,
        "torch": lambda: (lambda W, G: W.add_(G, alpha=-step)),
        "python-loop": loop,
    }
    run_case(benchmark, "fmnist sgd_update 784x10 f32", impl, impls, [(W, G)],
             lambda W, G: W.astype(np.float64) - step * G, inplace=True)


def _gather_impls(scale, out_cols):
    def loop():
        def f(src, idx):
            out = np.empty((idx.shape[0], out_cols), F32)
            for r, i in enumerate(idx):
                out[r] = src[i] * s if scale is not None else src[i]
            return out
        return f

    s = None if scale is None else F32(scale)

    def fs():
        out = np.empty((BATCH, out_cols), F32)
        return lambda src, idx: K.gather_rows(src, idx, out=out, scale=scale)

    def th():
        if scale is None:
            return lambda src, idx: torch.index_select(src, 0, idx)
        return lambda src, idx: torch.index_select(src, 0, idx).to(torch.float32).mul_(scale)

    return {
        "fastshallow": fs,
        "numpy": lambda: ((lambda src, idx: src[idx].astype(F32) * s) if scale is not None
                          else (lambda src, idx: src[idx])),
        "torch": th,
        "python-loop": loop,
    }


@pytest.mark.parametrize("impl", IMPLS)
def test_fmnist_gather_rows(benchmark, impl, fmnist_u8):
    batches = _batches(fmnist_u8.shape[0], np.random.default_rng(5))
    run_case(benchmark, "fmnist gather_rows 256 of 60000x784 u8/255", impl,
             _gather_impls(1 / 255, 784), [(fmnist_u8, idx) for idx in batches],
             lambda src, idx: src[idx] / 255.0)


# ---- large linear regression: 1,000,000 x 100 float32, batch 256 -> 1 --------------------------

@pytest.fixture(scope="module")
def big_batch(big_regression):
    X, y = big_regression[:2]
    rng = np.random.default_rng(6)
    idx = rng.choice(X.shape[0], BATCH, replace=False)
    Xb = X[idx]
    w = (0.01 * rng.standard_normal((X.shape[1], 1))).astype(F32)
    b = np.zeros(1, F32)
    G = (Xb @ w + b) - y[idx]
    return Xb, w, b, np.ascontiguousarray(G)


@pytest.mark.parametrize("impl", IMPLS)
def test_big_gather_rows(benchmark, impl, big_regression):
    X = big_regression[0]
    batches = _batches(X.shape[0], np.random.default_rng(7), count=2000)
    run_case(benchmark, "linreg gather_rows 256 of 1e6x100 f32", impl,
             _gather_impls(None, X.shape[1]), [(X, idx) for idx in batches],
             lambda src, idx: src[idx])


@pytest.mark.parametrize("impl", IMPLS)
def test_big_matmul_bias(benchmark, impl, big_batch):
    Xb, w, b = big_batch[:3]
    run_case(benchmark, "linreg matmul_bias 256x100->1 f32", impl, _matmul_impls(1),
             [(Xb, w, b)], _ref_matmul)


@pytest.mark.parametrize("impl", IMPLS)
def test_big_matmul_bias_backward(benchmark, impl, big_batch):
    Xb, G = big_batch[0], big_batch[3]
    run_case(benchmark, "linreg matmul_bias_backward 256x100->1 f32", impl, _backward_impls(),
             [(Xb, G)], _ref_backward)


# ---- one epoch of minibatch SGD, linear regression on 1,000,000 x 100 float32 -------------------

def epoch_fastshallow(X, y, w, b, seed):
    """gather_rows -> matmul_bias -> residual -> matmul_bias_backward -> sgd_update per batch."""
    n, k = X.shape
    perm = np.random.default_rng(seed).permutation(n)
    Xbuf = np.empty((BATCH, k), X.dtype)
    ybuf = np.empty((BATCH, 1), X.dtype)
    Zbuf = np.empty((BATCH, 1), X.dtype)
    for s in range(0, n, BATCH):
        idx = perm[s:s + BATCH]
        nb = idx.shape[0]
        Xb = K.gather_rows(X, idx, out=Xbuf[:nb])
        yb = K.gather_rows(y, idx, out=ybuf[:nb])
        Z = K.matmul_bias(Xb, w, b, out=Zbuf[:nb])
        np.subtract(Z, yb, out=Z)  # dL/dZ of the summed 0.5 * (z - y)^2
        dW, db = K.matmul_bias_backward(Xb, Z)
        K.sgd_update(w, dW, LR, nb)
        K.sgd_update(b, db, LR, nb)
    return w, b


def epoch_fused(X, y, w, b, seed):
    """The same epoch through ``fs.train_epoch`` (the fused step: one compiled call runs many
    minibatches), in the same order as the others."""
    perm = np.random.default_rng(seed).permutation(X.shape[0])

    class SameOrder(fs.DataLoader):
        def epoch_order(self):
            return perm

    net = fs.nn.Dense(1, in_units=X.shape[1])
    net.weight.set_data(w)
    net.bias.set_data(b)
    loader = SameOrder(fs.ArrayDataset(X, y, check_finite=False), BATCH)
    fs.train_epoch(net, loader, fs.losses.L2Loss(), fs.optim.SGD(net.parameters(), lr=LR))
    return net.weight.data, net.bias.data


def epoch_numpy(X, y, w, b, seed):
    """The same algorithm, idiomatic NumPy: fancy indexing, X @ w + b, X.T @ g, update."""
    n = X.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    for s in range(0, n, BATCH):
        idx = perm[s:s + BATCH]
        Xb, yb = X[idx], y[idx]
        r = Xb @ w + b - yb
        step = LR / idx.shape[0]
        w -= step * (Xb.T @ r)
        b -= step * r.sum(axis=0)
    return w, b


def epoch_torch(X, y, w, b, seed):
    """The same algorithm with PyTorch tensors (no autograd, as the gradients are analytic)."""
    n = X.shape[0]
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    Xt, yt, wt, bt = (torch.from_numpy(a) for a in (X, y, w, b))
    with torch.no_grad():
        for s in range(0, n, BATCH):
            idx = perm[s:s + BATCH]
            Xb, yb = Xt.index_select(0, idx), yt.index_select(0, idx)
            r = torch.addmm(bt, Xb, wt) - yb
            step = LR / idx.shape[0]
            wt.sub_(Xb.T @ r, alpha=step)
            bt.sub_(r.sum(dim=0), alpha=step)
    return w, b


_EPOCH_REFERENCE: dict = {}
EPOCHS = {"fastshallow-fused": epoch_fused, "fastshallow-kernels": epoch_fastshallow,
          "numpy": epoch_numpy, "torch": epoch_torch}


@pytest.mark.parametrize("impl", tuple(EPOCHS))
def test_epoch_linreg(benchmark, impl, big_regression):
    if impl == "torch" and torch is None:
        pytest.skip("PyTorch is not installed")
    X, y, w_true, b_true = big_regression
    benchmark.group = "epoch linreg SGD 1e6x100 f32 batch 256"

    def fresh():  # every round starts from the same weights and the same shuffle
        return (X, y, np.zeros((X.shape[1], 1), F32), np.zeros(1, F32), 0), {}

    w, b = benchmark.pedantic(EPOCHS[impl], setup=fresh, rounds=3, iterations=1)
    # One epoch of 3906 steps at lr 0.03 recovers the true parameters up to the noise (0.01).
    np.testing.assert_allclose(w, w_true, atol=5e-3)
    np.testing.assert_allclose(b, [b_true], atol=5e-3)
    # And all implementations follow the same trajectory (same shuffle, same arithmetic).
    if "numpy" not in _EPOCH_REFERENCE:
        _EPOCH_REFERENCE["numpy"] = epoch_numpy(*fresh()[0])
    w_np, b_np = _EPOCH_REFERENCE["numpy"]
    np.testing.assert_allclose(w, w_np, atol=1e-4)
    np.testing.assert_allclose(b, b_np, atol=1e-4)
