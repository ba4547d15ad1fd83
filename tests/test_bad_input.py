"""Bad input for every public entry point (DESIGN.md section 7, issue 6).

Two tables.  BAD: calls a careless or hostile caller might make; each must raise the given
exception type (TypeError / ValueError or a documented subclass) with a message naming the
argument.  ACCEPTED: unusual but legitimate input (non-contiguous, Fortran-ordered, read-only,
broadcast and self-overlapping views, batches larger than the data, empty batches, NaN in
features, indices past int32), which must give the right answer.  The command line has its own
table.  Problems that only the reserved modules (training loop, fused path) can fix are
collected at the end as strict xfails, run in a subprocess because some crash the interpreter.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastshallow as fs
from fastshallow import cli, init, kernels as K, losses, nn, optim
from fastshallow.autograd import Parameter, Tensor
from fastshallow.datasets import (Compose, DatasetNotFoundError, FashionMNIST, Resize, ToTensor,
                                  get_fashion_mnist_labels, load_data_fashion_mnist, transforms)
from fastshallow.datasets import _download
from fastshallow.datasets._download import FileSpec

NAN, INF = float("nan"), float("inf")


def f32(*shape):
    return np.ones(shape, np.float32)


def f64(*shape):
    return np.arange(np.prod(shape, dtype=int), dtype=np.float64).reshape(shape) / 7 + 1


def ro(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def F(a):
    return np.asfortranarray(a)


def dense(units=3, in_units=2, dtype=np.float64, **kw):
    return nn.Dense(units, in_units=in_units, dtype=dtype, rng=0, **kw)


def pair_loader(n=12, k=2, batch_size=4, dtype=np.float32, classes=None):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, k)).astype(dtype)
    y = (np.arange(n) % classes) if classes else rng.standard_normal(n).astype(dtype)
    return fs.load_array((X, y), batch_size, seed=0)


def train_call(net=None, it=None, loss=None, epochs=1, updater=None, **kw):
    net = net if net is not None else dense(1, 2, np.float32)
    it = it if it is not None else pair_loader()
    loss = loss if loss is not None else losses.L2Loss()
    updater = updater if updater is not None else optim.SGD(net.parameters(), lr=0.03)
    return fs.train(net, it, None, loss, epochs, updater, verbose=False, progress=False, **kw)


# ---- synthetic Fashion-MNIST files for the dataset rows ---------------------------------------

def _idx(arr):
    head = bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.tobytes()


class Ctx:
    """What some rows need: a folder of small synthetic Fashion-MNIST files the library is told
    to expect (and nothing else findable), made on first use."""

    def __init__(self, tmp_path, monkeypatch):
        self.tmp, self.mp = tmp_path, monkeypatch

    @functools.cached_property
    def root(self):
        rng = np.random.default_rng(7)
        arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
                  "train-labels-idx1-ubyte": (np.arange(40) % 10).astype(np.uint8),
                  "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
                  "t10k-labels-idx1-ubyte": (np.arange(20) % 10).astype(np.uint8)}
        root = self.tmp / "fm"
        root.mkdir()
        specs = {}
        for name, a in arrays.items():
            raw = _idx(a)
            specs[name] = FileSpec(name, a.shape, hashlib.sha256(raw).hexdigest())
            (root / (name + ".gz")).write_bytes(gzip.compress(raw, mtime=0))
        self.mp.setattr(_download, "FILES", specs)
        self.mp.setattr(_download, "SYSTEM_DIRS", [str(self.tmp / "no-system")])
        self.mp.setenv("XDG_CACHE_HOME", str(self.tmp / "cache"))
        self.mp.delenv("FASTSHALLOW_DATA", raising=False)
        self.mp.setenv("FASTSHALLOW_MIRRORS", "")
        return root

    def ds(self, train=True):
        return FashionMNIST(self.root, train=train, download=False)

    def tds(self):
        return self.ds().transform_first(ToTensor())

    def empty_dir(self):
        self.root  # noqa: B018 - sets the search places up
        d = self.tmp / "empty"
        d.mkdir(exist_ok=True)
        return d

    def file(self, name, data: bytes):
        p = self.tmp / name
        p.write_bytes(data)
        return p

    def saved(self, net):
        p = self.tmp / "model.npz"
        net.save(p)
        return p


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    return Ctx(tmp_path, monkeypatch)


# ---- the table of bad calls -------------------------------------------------------------------
# (id, call taking ctx, exception type, regex the message must match -- it names the argument)

X42, W23 = f64(4, 2), f64(2, 3)
BAD = [
    # kernels.matmul_bias
    ("mm X 1-D", lambda c: K.matmul_bias(f64(4), W23), ValueError, r"X must be 2-D.*\(4,\)"),
    ("mm X 3-D", lambda c: K.matmul_bias(f64(4, 2, 1), W23), ValueError, r"X must be 2-D"),
    ("mm X object", lambda c: K.matmul_bias(X42.astype(object), W23), TypeError,
     r"X must hold real numbers.*object"),
    ("mm X complex", lambda c: K.matmul_bias(X42 + 1j, W23), TypeError, r"X .*complex"),
    ("mm X str", lambda c: K.matmul_bias(np.full((4, 2), "a"), W23), TypeError, r"X .*string"),
    ("mm X bytes", lambda c: K.matmul_bias(np.full((4, 2), b"a"), W23), TypeError, r"X .*bytes"),
    ("mm X bool", lambda c: K.matmul_bias(X42 > 1, W23), TypeError, r"X .*bool"),
    ("mm X datetime", lambda c: K.matmul_bias(np.zeros((4, 2), "M8[s]"), W23), TypeError,
     r"X .*datetime"),
    ("mm X int64", lambda c: K.matmul_bias(X42.astype(int), W23), TypeError,
     r"X must have dtype float32 or float64, got int64"),
    ("mm X float16", lambda c: K.matmul_bias(X42.astype(np.float16), W23), TypeError,
     r"X must have dtype .*float16"),
    ("mm X ragged", lambda c: K.matmul_bias([[1.0, 2.0], [3.0]], W23), TypeError,
     r"X must be array-like"),
    ("mm X None", lambda c: K.matmul_bias(None, W23), TypeError, r"X must hold real numbers"),
    ("mm W dtype", lambda c: K.matmul_bias(X42, W23.astype(np.float32)), TypeError,
     r"W must have the dtype of X \(float64\), got float32"),
    ("mm W rows", lambda c: K.matmul_bias(X42, f64(3, 3)), ValueError,
     r"W must have 2 rows .*got shape \(3, 3\)"),
    ("mm W 1-D", lambda c: K.matmul_bias(X42, f64(2)), ValueError, r"W must be 2-D"),
    ("mm b 2-D", lambda c: K.matmul_bias(X42, W23, f64(1, 3)), ValueError, r"b must be 1-D"),
    ("mm b length", lambda c: K.matmul_bias(X42, W23, f64(2)), ValueError,
     r"b must have 3 entries"),
    ("mm b dtype", lambda c: K.matmul_bias(X42, W23, f32(3)), TypeError,
     r"b must have the dtype of X"),
    ("mm b NaN-string", lambda c: K.matmul_bias(X42, W23, ["nan", "1", "2"]), TypeError,
     r"b must hold real numbers"),
    ("mm out shape", lambda c: K.matmul_bias(X42, W23, out=f64(3, 4)), ValueError,
     r"out must have shape \(4, 3\)"),
    ("mm out dtype", lambda c: K.matmul_bias(X42, W23, out=f32(4, 3)), TypeError,
     r"out must have dtype float64"),
    ("mm out Fortran", lambda c: K.matmul_bias(X42, W23, out=F(f64(4, 3))), ValueError,
     r"out must be C-contiguous"),
    ("mm out strided", lambda c: K.matmul_bias(X42, W23, out=f64(4, 6)[:, ::2]), ValueError,
     r"out must be C-contiguous"),
    ("mm out read-only", lambda c: K.matmul_bias(X42, W23, out=ro(f64(4, 3))), ValueError,
     r"out is read-only"),
    ("mm out list", lambda c: K.matmul_bias(X42, W23, out=[[0.0] * 3] * 4), TypeError,
     r"out must be a numpy array"),
    ("mm out is X", lambda c: (lambda X: K.matmul_bias(X, f64(3, 3), out=X))(f64(4, 3)),
     ValueError, r"out must not overlap X"),
    ("mm out is W", lambda c: (lambda W: K.matmul_bias(f64(3, 3), W, out=W))(f64(3, 3)),
     ValueError, r"out must not overlap W"),
    ("mm out overlaps b", lambda c: (lambda o: K.matmul_bias(f64(1, 2), W23, o[0], out=o))(
        f64(1, 3)), ValueError, r"out must not overlap b"),
    ("mm out shifted view of X", lambda c: (lambda X: K.matmul_bias(X[:4], f64(2, 2),
                                                                   out=X[1:]))(f64(5, 2)),
     ValueError, r"out must not overlap X"),
    ("mm num_threads 0", lambda c: K.matmul_bias(X42, W23, num_threads=0), ValueError,
     r"num_threads must be a positive int"),
    ("mm num_threads -1", lambda c: K.matmul_bias(X42, W23, num_threads=-1), ValueError,
     r"num_threads"),
    ("mm num_threads 2.0", lambda c: K.matmul_bias(X42, W23, num_threads=2.0), ValueError,
     r"num_threads"),
    ("mm num_threads str", lambda c: K.matmul_bias(X42, W23, num_threads="2"), ValueError,
     r"num_threads"),
    ("mm num_threads True", lambda c: K.matmul_bias(X42, W23, num_threads=True), ValueError,
     r"num_threads"),
    # Tens of thousands of OpenMP threads exhaust the memory maps and kill the interpreter.
    ("mm num_threads 10**5", lambda c: K.matmul_bias(f64(300, 300), f64(300, 10),
                                                     num_threads=10**5), ValueError,
     r"num_threads must be a positive int \(at most 1024\)"),
    ("set_num_threads 0", lambda c: fs.set_num_threads(0), ValueError, r"num_threads"),
    ("set_num_threads huge", lambda c: fs.set_num_threads(10**9), ValueError, r"num_threads"),
    ("set_num_threads str", lambda c: fs.set_num_threads("4"), ValueError, r"num_threads"),
    # kernels.matmul_bias_backward
    ("bw X 1-D", lambda c: K.matmul_bias_backward(f64(4), f64(4, 3)), ValueError,
     r"X must be 2-D"),
    ("bw G 1-D", lambda c: K.matmul_bias_backward(X42, f64(4)), ValueError, r"G must be 2-D"),
    ("bw G rows", lambda c: K.matmul_bias_backward(X42, f64(3, 3)), ValueError,
     r"G must have 4 rows"),
    ("bw G dtype", lambda c: K.matmul_bias_backward(X42, f32(4, 3)), TypeError,
     r"G must have the dtype of X"),
    ("bw G object", lambda c: K.matmul_bias_backward(X42, f64(4, 3).astype(object)), TypeError,
     r"G must hold real numbers"),
    ("bw num_threads", lambda c: K.matmul_bias_backward(X42, f64(4, 3), num_threads=0),
     ValueError, r"num_threads"),
    # kernels.softmax_cross_entropy
    ("sce logits 1-D", lambda c: K.softmax_cross_entropy(f64(3), [0]), ValueError,
     r"logits must be 2-D"),
    ("sce logits 3-D", lambda c: K.softmax_cross_entropy(f64(2, 3, 1), [0, 0]), ValueError,
     r"logits must be 2-D"),
    ("sce logits int", lambda c: K.softmax_cross_entropy(np.ones((2, 3), int), [0, 1]),
     TypeError, r"logits must have dtype"),
    ("sce logits object", lambda c: K.softmax_cross_entropy(f64(2, 3).astype(object), [0, 1]),
     TypeError, r"logits must hold real numbers"),
    ("sce logits no columns", lambda c: K.softmax_cross_entropy(f64(2, 0), [0, 0]), ValueError,
     r"logits must have at least one column"),
    ("sce label == classes", lambda c: K.softmax_cross_entropy(f64(2, 3), [0, 3]), ValueError,
     r"labels must be < 3 \(the number of classes\), found 3"),
    ("sce label negative", lambda c: K.softmax_cross_entropy(f64(2, 3), [0, -1]), ValueError,
     r"labels must be >= 0, found -1"),
    ("sce label fractional", lambda c: K.softmax_cross_entropy(f64(2, 3), [0, 0.5]),
     ValueError, r"labels must be whole-number"),
    ("sce label NaN", lambda c: K.softmax_cross_entropy(f64(2, 3), [0, NAN]), ValueError,
     r"labels must be finite"),
    ("sce label inf", lambda c: K.softmax_cross_entropy(f64(2, 3), [INF, 0]), ValueError,
     r"labels must be finite"),
    ("sce label str", lambda c: K.softmax_cross_entropy(f64(2, 3), ["0", "1"]), TypeError,
     r"labels must be integer class indices, got dtype <U1"),
    ("sce label bool", lambda c: K.softmax_cross_entropy(f64(2, 3), [True, False]), TypeError,
     r"labels must be integer class indices, got dtype bool"),
    ("sce label complex", lambda c: K.softmax_cross_entropy(f64(2, 3), [1j, 0]), TypeError,
     r"labels must be integer"),
    ("sce label None", lambda c: K.softmax_cross_entropy(f64(2, 3), [None, 0]), TypeError,
     r"labels must be integer"),
    ("sce label ragged", lambda c: K.softmax_cross_entropy(f64(2, 3), [[0], []]), TypeError,
     r"labels must be array-like"),
    ("sce labels too few", lambda c: K.softmax_cross_entropy(f64(2, 3), [0]), ValueError,
     r"labels must have 2 entries"),
    ("sce labels scalar", lambda c: K.softmax_cross_entropy(f64(2, 3), 1), ValueError,
     r"labels must be 1-D"),
    ("sce labels 2-D", lambda c: K.softmax_cross_entropy(f64(2, 3), np.zeros((2, 2), int)),
     ValueError, r"labels must be 1-D"),
    # uint64 and huge floats used to be reported as what int64 wraps them to (-1, INT64_MIN).
    ("sce label uint64 max", lambda c: K.softmax_cross_entropy(
        f64(2, 3), np.array([0, 2**64 - 1], np.uint64)), ValueError,
     r"labels must be < 3 .*found 18446744073709551615"),
    ("sce label 1e20", lambda c: K.softmax_cross_entropy(f64(2, 3), [0.0, 1e20]), ValueError,
     r"labels must be < 3 .*found 100000000000000000000"),
    ("sce smoothing < 0", lambda c: K.softmax_cross_entropy(f64(2, 3), [0, 1],
                                                            label_smoothing=-0.1), ValueError,
     r"label_smoothing must be >= 0"),
    ("sce smoothing > 1", lambda c: K.softmax_cross_entropy(f64(2, 3), [0, 1],
                                                            label_smoothing=1.5), ValueError,
     r"label_smoothing must be <= 1"),
    ("sce smoothing NaN", lambda c: K.softmax_cross_entropy(f64(2, 3), [0, 1],
                                                            label_smoothing=NAN), ValueError,
     r"label_smoothing must be finite"),
    ("sce smoothing str", lambda c: K.softmax_cross_entropy(f64(2, 3), [0, 1],
                                                            label_smoothing="0.1"), TypeError,
     r"label_smoothing must be a real number"),
    ("sce smoothing None", lambda c: K.softmax_cross_entropy(f64(2, 3), [0, 1],
                                                             label_smoothing=None), TypeError,
     r"label_smoothing must be a real number"),
    # kernels.softmax / log_softmax
    ("softmax 0-D", lambda c: K.softmax(np.float64(1.0)), ValueError, r"X must be 1-D or 2-D"),
    ("softmax 3-D", lambda c: K.softmax(f64(2, 2, 2)), ValueError, r"X must be 1-D or 2-D"),
    ("softmax int", lambda c: K.softmax(np.ones((2, 2), int)), TypeError, r"X must have dtype"),
    ("softmax str", lambda c: K.softmax(["a", "b"]), TypeError, r"X must hold real numbers"),
    ("log_softmax object", lambda c: K.log_softmax(np.array([1.0, None])), TypeError,
     r"X must hold real numbers"),
    ("log_softmax complex", lambda c: K.log_softmax(np.ones(3, complex)), TypeError,
     r"X .*complex"),
    ("softmax num_threads", lambda c: K.softmax(f64(2, 2), num_threads=-3), ValueError,
     r"num_threads"),
    # kernels.sgd_update
    ("sgd param list", lambda c: K.sgd_update([1.0, 2.0], f64(2), 0.1, 1), TypeError,
     r"param must be a numpy array"),
    ("sgd param int", lambda c: K.sgd_update(np.ones(2, int), f64(2), 0.1, 1), TypeError,
     r"param must have dtype"),
    ("sgd param read-only", lambda c: K.sgd_update(ro(f64(2)), f64(2), 0.1, 1), ValueError,
     r"param is read-only"),
    ("sgd param strided", lambda c: K.sgd_update(f64(6)[::2], f64(3), 0.1, 1), ValueError,
     r"param must be C-contiguous"),
    ("sgd param Fortran", lambda c: K.sgd_update(F(f64(3, 2)), f64(3, 2), 0.1, 1), ValueError,
     r"param must be C-contiguous"),
    ("sgd grad shape", lambda c: K.sgd_update(f64(3), f64(4), 0.1, 1), ValueError,
     r"grad must have the shape of param"),
    ("sgd grad dtype", lambda c: K.sgd_update(f64(3), f32(3), 0.1, 1), TypeError,
     r"grad must have the dtype of param"),
    ("sgd grad object", lambda c: K.sgd_update(f64(3), np.ones(3, object), 0.1, 1), TypeError,
     r"grad must hold real numbers"),
    ("sgd grad is param", lambda c: (lambda p: K.sgd_update(p, p, 0.1, 1))(f64(3)), ValueError,
     r"grad must not overlap param"),
    ("sgd grad overlaps param", lambda c: (lambda p: K.sgd_update(p[:3], p[1:], 0.1, 1))(
        f64(4)), ValueError, r"grad must not overlap param"),
    ("sgd lr 0", lambda c: K.sgd_update(f64(3), f64(3), 0.0, 1), ValueError, r"lr must be > 0"),
    ("sgd lr negative", lambda c: K.sgd_update(f64(3), f64(3), -0.1, 1), ValueError,
     r"lr must be > 0"),
    ("sgd lr NaN", lambda c: K.sgd_update(f64(3), f64(3), NAN, 1), ValueError,
     r"lr must be finite"),
    ("sgd lr inf", lambda c: K.sgd_update(f64(3), f64(3), INF, 1), ValueError,
     r"lr must be finite"),
    ("sgd lr str", lambda c: K.sgd_update(f64(3), f64(3), "0.1", 1), TypeError,
     r"lr must be a real number"),
    ("sgd lr None", lambda c: K.sgd_update(f64(3), f64(3), None, 1), TypeError,
     r"lr must be a real number"),
    ("sgd lr True", lambda c: K.sgd_update(f64(3), f64(3), True, 1), TypeError,
     r"lr must be a real number"),
    ("sgd batch 0", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 0), ValueError,
     r"batch_size must be > 0, got 0"),
    ("sgd batch -1", lambda c: K.sgd_update(f64(3), f64(3), 0.1, -1), ValueError,
     r"batch_size must be > 0"),
    ("sgd batch 2.5", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 2.5), TypeError,
     r"batch_size must be an int"),
    ("sgd batch str", lambda c: K.sgd_update(f64(3), f64(3), 0.1, "4"), TypeError,
     r"batch_size must be an int"),
    ("sgd batch True", lambda c: K.sgd_update(f64(3), f64(3), 0.1, True), TypeError,
     r"batch_size must be an int"),
    ("sgd momentum 1", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, 1.0, velocity=f64(3)),
     ValueError, r"momentum must be < 1"),
    ("sgd momentum < 0", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, -0.5), ValueError,
     r"momentum must be >= 0"),
    ("sgd momentum NaN", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, NAN), ValueError,
     r"momentum must be finite"),
    ("sgd momentum no velocity", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, 0.9),
     ValueError, r"momentum > 0 needs a velocity"),
    ("sgd weight_decay < 0", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, weight_decay=-1),
     ValueError, r"weight_decay must be >= 0"),
    ("sgd weight_decay inf", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, weight_decay=INF),
     ValueError, r"weight_decay must be finite"),
    # finite, but not in float32, where the update computes (0 * inf would be NaN)
    ("sgd lr beyond float32", lambda c: K.sgd_update(f32(3), f32(3), 1e300, 1), ValueError,
     r"lr must be at most 3.40282e\+38 in magnitude for float32 parameters"),
    ("sgd weight_decay beyond float32", lambda c: K.sgd_update(f32(3), f32(3), 0.1, 1,
                                                               weight_decay=1e39),
     ValueError, r"weight_decay must be at most 3.40282e\+38 .* float32 parameters"),
    ("scratch sgd lr beyond float32", lambda c: fs.sgd([Parameter(f32(3))], 1e39, 1),
     ValueError, r"lr must be at most 3.40282e\+38 .* float32 parameters"),
    ("sgd velocity shape", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, 0.5, velocity=f64(4)),
     ValueError, r"velocity must have the shape of param"),
    ("sgd velocity dtype", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, 0.5, velocity=f32(3)),
     TypeError, r"velocity must have the dtype of param"),
    ("sgd velocity read-only", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, 0.5,
                                                      velocity=ro(f64(3))), ValueError,
     r"velocity is read-only"),
    ("sgd velocity list", lambda c: K.sgd_update(f64(3), f64(3), 0.1, 1, 0.5, velocity=[0.0] * 3),
     TypeError, r"velocity must be a numpy array"),
    ("sgd velocity is param", lambda c: (lambda p: K.sgd_update(p, f64(3), 0.1, 1, 0.5,
                                                                velocity=p))(f64(3)),
     ValueError, r"velocity must not overlap param or grad"),
    ("sgd velocity is grad", lambda c: (lambda g: K.sgd_update(f64(3), g, 0.1, 1, 0.5,
                                                               velocity=g))(f64(3)),
     ValueError, r"velocity must not overlap param or grad"),
    # kernels.gather_rows
    ("gather scale beyond float32", lambda c: K.gather_rows(np.ones((4, 2), np.uint8), [0],
                                                            scale=1e300), ValueError,
     r"scale must be at most 3.40282e\+38 in magnitude for a float32 output"),
    ("gather scale beyond float32, float32 rows", lambda c: K.gather_rows(f32(4, 2), [0],
                                                                          scale=-1e39),
     ValueError, r"scale must be at most 3.40282e\+38 in magnitude for a float32 output"),
    ("gather src int32", lambda c: K.gather_rows(np.ones((4, 2), np.int32), [0]), TypeError,
     r"src must have dtype uint8 or float32 or float64, got int32"),
    ("gather src object", lambda c: K.gather_rows(X42.astype(object), [0]), TypeError,
     r"src must hold real numbers"),
    ("gather src str", lambda c: K.gather_rows(np.full((4, 2), "x"), [0]), TypeError,
     r"src must hold real numbers"),
    ("gather src 0-D", lambda c: K.gather_rows(np.float32(1), [0]), ValueError,
     r"src must have at least one dimension"),
    ("gather index == rows", lambda c: K.gather_rows(X42, [0, 4]), ValueError,
     r"indices must be in \[0, 4\) .*found 4"),
    ("gather index negative", lambda c: K.gather_rows(X42, [-1]), ValueError,
     r"indices must be in \[0, 4\) .*found -1"),
    ("gather index float", lambda c: K.gather_rows(X42, [0.0]), TypeError,
     r"indices must be an integer array, got dtype float64"),
    ("gather index bool", lambda c: K.gather_rows(X42, [True, False, True, False]), TypeError,
     r"indices must be an integer array, got dtype bool"),
    ("gather index str", lambda c: K.gather_rows(X42, ["0"]), TypeError,
     r"indices must be an integer array"),
    ("gather index None", lambda c: K.gather_rows(X42, None), TypeError,
     r"indices must be an integer array"),
    ("gather index 2-D", lambda c: K.gather_rows(X42, np.zeros((2, 1), int)), ValueError,
     r"indices must be 1-D"),
    ("gather index uint64 huge", lambda c: K.gather_rows(X42, np.array([2**64 - 1], np.uint64)),
     ValueError, r"indices"),
    ("gather index past int32", lambda c: K.gather_rows(X42, [2**31 + 1]), ValueError,
     r"indices must be in \[0, 4\) .*found 2147483649"),
    ("gather index past int64", lambda c: K.gather_rows(X42, [2**70]), TypeError,
     r"indices must be an integer array"),
    ("gather empty src", lambda c: K.gather_rows(f64(0, 3), [0]), ValueError,
     r"indices must be in \[0, 0\)"),
    ("gather out shape", lambda c: K.gather_rows(X42, [0, 1], out=f64(2, 3)), ValueError,
     r"out must have shape \(2, 2\)"),
    ("gather out int", lambda c: K.gather_rows(X42, [0], out=np.ones((1, 2), int)), TypeError,
     r"out's dtype must be float32 or float64, got int64"),
    ("gather out read-only", lambda c: K.gather_rows(X42, [0], out=ro(f64(1, 2))), ValueError,
     r"out is read-only"),
    ("gather out strided", lambda c: K.gather_rows(X42, [0, 1], out=f64(2, 4)[:, ::2]),
     ValueError, r"out must be C-contiguous"),
    ("gather out list", lambda c: K.gather_rows(X42, [0], out=[[0.0, 0.0]]), TypeError,
     r"out must be a numpy array"),
    ("gather out is src", lambda c: (lambda s: K.gather_rows(s, [3, 2, 1, 0], out=s))(f64(4, 2)),
     ValueError, r"out must not overlap src"),
    ("gather out inside src", lambda c: (lambda s: K.gather_rows(s, [0, 1], out=s[2:]))(
        f64(4, 2)), ValueError, r"out must not overlap src"),
    ("gather dtype int16", lambda c: K.gather_rows(X42, [0], dtype=np.int16), TypeError,
     r"dtype must be float32 or float64, got int16"),
    ("gather dtype garbage", lambda c: K.gather_rows(X42, [0], dtype="garbage"), TypeError,
     r"dtype must be float32 or float64, got str 'garbage'"),
    ("gather scale NaN", lambda c: K.gather_rows(X42, [0], scale=NAN), ValueError,
     r"scale must be finite"),
    ("gather scale inf", lambda c: K.gather_rows(X42, [0], scale=-INF), ValueError,
     r"scale must be finite"),
    ("gather scale str", lambda c: K.gather_rows(X42, [0], scale="1/255"), TypeError,
     r"scale must be a real number"),
    ("gather num_threads", lambda c: K.gather_rows(X42, [0], num_threads=0), ValueError,
     r"num_threads"),
    # data.synthetic_data
    ("synth w 3-D", lambda c: fs.synthetic_data(f64(2, 1, 1), 0, 3), ValueError,
     r"w must be 1-D or 2-D"),
    ("synth w empty", lambda c: fs.synthetic_data([], 0, 3), ValueError, r"w must not be empty"),
    ("synth w NaN", lambda c: fs.synthetic_data([1, NAN], 0, 3), ValueError,
     r"w must be finite"),
    ("synth w str", lambda c: fs.synthetic_data(["a"], 0, 3), TypeError,
     r"w must hold real numbers"),
    ("synth b inf", lambda c: fs.synthetic_data([1, 2], INF, 3), ValueError,
     r"b must be finite"),
    ("synth b 2-D", lambda c: fs.synthetic_data([1, 2], [[1.0]], 3), ValueError,
     r"b must be 0-D or 1-D"),
    # Used to broadcast into a different bias per example when num_examples == len(b).
    ("synth b vector for vector w", lambda c: fs.synthetic_data([1, 2], [1, 2, 3], 3),
     ValueError, r"b must be a scalar, got shape \(3,\)"),
    ("synth b length for matrix w", lambda c: fs.synthetic_data(f64(2, 3), [1, 2], 3),
     ValueError, r"b must be a scalar or 3 values"),
    ("synth num_examples -1", lambda c: fs.synthetic_data([1, 2], 0, -1), ValueError,
     r"num_examples must be >= 0"),
    ("synth num_examples 2.5", lambda c: fs.synthetic_data([1, 2], 0, 2.5), TypeError,
     r"num_examples must be an int"),
    ("synth num_examples str", lambda c: fs.synthetic_data([1, 2], 0, "10"), TypeError,
     r"num_examples must be an int"),
    ("synth noise < 0", lambda c: fs.synthetic_data([1, 2], 0, 3, noise=-1), ValueError,
     r"noise must be >= 0"),
    ("synth noise NaN", lambda c: fs.synthetic_data([1, 2], 0, 3, noise=NAN), ValueError,
     r"noise must be finite"),
    ("synth seed -1", lambda c: fs.synthetic_data([1, 2], 0, 3, seed=-1), TypeError,
     r"seed must be None, a non-negative int"),
    ("synth seed str", lambda c: fs.synthetic_data([1, 2], 0, 3, seed="x"), TypeError, r"seed"),
    ("synth seed float", lambda c: fs.synthetic_data([1, 2], 0, 3, seed=1.5), TypeError,
     r"seed"),
    ("synth dtype int", lambda c: fs.synthetic_data([1, 2], 0, 3, dtype=int), TypeError,
     r"dtype must be float32 or float64, got int64"),
    ("synth dtype object", lambda c: fs.synthetic_data([1, 2], 0, 3, dtype=object), TypeError,
     r"dtype must be float32 or float64, got object"),
    ("synth dtype garbage", lambda c: fs.synthetic_data([1, 2], 0, 3, dtype="garbage"),
     TypeError, r"dtype must be float32 or float64"),
    ("synth dtype None", lambda c: fs.synthetic_data([1, 2], 0, 3, dtype=None), TypeError,
     r"dtype must be float32 or float64, got NoneType"),
    # data.ArrayDataset / DataLoader / load_array
    ("dataset no arrays", lambda c: fs.ArrayDataset(), ValueError,
     r"ArrayDataset needs at least one array"),
    ("dataset scalar", lambda c: fs.ArrayDataset(3.0), ValueError,
     r"arrays\[0\] must have at least one dimension"),
    ("dataset lengths", lambda c: fs.ArrayDataset(f64(4, 2), f64(3)), ValueError,
     r"arrays\[0\] has 4, arrays\[1\] has 3"),
    ("dataset object", lambda c: fs.ArrayDataset(f64(4, 2), np.ones(4, object)), TypeError,
     r"arrays\[1\] must hold real numbers"),
    ("dataset str", lambda c: fs.ArrayDataset(np.full(4, "a")), TypeError,
     r"arrays\[0\] must hold real numbers"),
    ("dataset complex", lambda c: fs.ArrayDataset(np.ones(4, complex)), TypeError,
     r"arrays\[0\] .*complex"),
    ("dataset ragged", lambda c: fs.ArrayDataset([[1.0], [1.0, 2.0]]), TypeError,
     r"arrays\[0\] must be array-like"),
    ("dataset NaN feature", lambda c: fs.ArrayDataset(np.array([[1.0, NAN]]), [0.0]),
     ValueError, r"arrays\[0\] must be finite, found 1 NaN/inf .*flat index 1"),
    ("dataset inf label", lambda c: fs.ArrayDataset(f64(2, 2), [0.0, -INF]), ValueError,
     r"arrays\[1\] must be finite"),
    ("loader batch 0", lambda c: fs.DataLoader(fs.ArrayDataset(f64(4)), 0), ValueError,
     r"batch_size must be > 0, got 0"),
    ("loader batch -1", lambda c: fs.DataLoader(fs.ArrayDataset(f64(4)), -1), ValueError,
     r"batch_size must be > 0"),
    ("loader batch 2.5", lambda c: fs.DataLoader(fs.ArrayDataset(f64(4)), 2.5), TypeError,
     r"batch_size must be an int"),
    ("loader batch None", lambda c: fs.DataLoader(fs.ArrayDataset(f64(4)), None), TypeError,
     r"batch_size must be an int"),
    ("loader batch str", lambda c: fs.DataLoader(fs.ArrayDataset(f64(4)), "10"), TypeError,
     r"batch_size must be an int"),
    ("loader batch True", lambda c: fs.DataLoader(fs.ArrayDataset(f64(4)), True), TypeError,
     r"batch_size must be an int"),
    ("loader dataset int", lambda c: fs.DataLoader(5, 2), TypeError,
     r"dataset must have __len__ and __getitem__, got int"),
    ("loader num_workers -1", lambda c: fs.DataLoader(fs.ArrayDataset(f64(4)), 2, num_workers=-1),
     ValueError, r"num_workers must be >= 0"),
    ("loader seed -1", lambda c: fs.DataLoader(fs.ArrayDataset(f64(4)), 2, seed=-1), TypeError,
     r"seed must be None, a non-negative int"),
    ("load_array ndarray", lambda c: fs.load_array(X42, 2), TypeError,
     r"data_arrays must be a tuple or list of arrays, got ndarray"),
    ("load_array dict", lambda c: fs.load_array({"X": X42}, 2), TypeError, r"data_arrays"),
    ("load_array batch 0", lambda c: fs.load_array((X42,), 0), ValueError, r"batch_size"),
    ("load_array lengths", lambda c: fs.load_array((X42, f64(5)), 2), ValueError,
     r"arrays\[1\] has 5"),
    ("load_array NaN", lambda c: fs.load_array((np.full((2, 2), NAN), f64(2)), 2), ValueError,
     r"arrays\[0\] must be finite"),
    # datasets: FashionMNIST and load_data_fashion_mnist
    ("fashion root int", lambda c: FashionMNIST(root=123), TypeError,
     r"root must be None or a folder path"),
    ("fashion root empty", lambda c: FashionMNIST(root=""), ValueError,
     r"root must be a folder path, got an empty string"),
    ("fashion train str", lambda c: FashionMNIST(c.root, train="yes"), TypeError,
     r"train must be True or False"),
    ("fashion train int", lambda c: FashionMNIST(c.root, train=2), TypeError,
     r"train must be True or False"),
    ("fashion download str", lambda c: FashionMNIST(c.root, download="no"), TypeError,
     r"download must be True or False"),
    ("fashion nothing found", lambda c: FashionMNIST(c.empty_dir(), download=False),
     DatasetNotFoundError, r"(?s)no good copy of .* the folder named by root="),
    ("fashion index past end", lambda c: c.ds()[40], IndexError,
     r"index 40 is out of range for a dataset of 40"),
    ("fashion index before start", lambda c: c.ds()[-41], IndexError, r"index -41"),
    ("fashion index float", lambda c: c.ds()[1.5], TypeError, r"dataset indices must be"),
    ("fashion index str", lambda c: c.ds()["3"], TypeError, r"dataset indices must be"),
    ("fashion index None", lambda c: c.ds()[None], TypeError, r"dataset indices must be"),
    ("fashion index float array", lambda c: c.ds()[np.array([0.5])], TypeError,
     r"dataset indices .*float64"),
    ("fashion index 2-D", lambda c: c.ds()[np.zeros((2, 2), int)], TypeError,
     r"dataset indices .*shape \(2, 2\)"),
    ("fashion index array past end", lambda c: c.ds()[[0, 40]], IndexError,
     r"indices must be in \[-40, 40\)"),
    ("fashion mask length", lambda c: c.ds()[np.ones(39, bool)], IndexError,
     r"a boolean mask must have shape \(40,\)"),
    ("fashion get_batch past end", lambda c: c.ds().get_batch([40]), ValueError,
     r"indices must be in \[0, 40\)"),
    ("fashion get_batch float", lambda c: c.ds().get_batch([1.0]), TypeError,
     r"indices must be an integer array"),
    ("transformed get_batch past end", lambda c: c.tds().get_batch([0, 40]), ValueError,
     r"indices must be in \[0, 40\)"),
    ("transformed get_batch negative", lambda c: c.tds().get_batch([-1]), ValueError,
     r"indices must be in \[0, 40\)"),
    ("transformed index float", lambda c: c.tds()[[1.5]], TypeError, r"dataset indices"),
    ("transformed index past end", lambda c: c.tds()[41], IndexError, r"index 41"),
    ("transform_first not callable", lambda c: c.ds().transform_first(3), TypeError,
     r"fn must be callable, got int"),
    ("load_data batch 0", lambda c: load_data_fashion_mnist(0, root=c.root), ValueError,
     r"batch_size must be > 0"),
    ("load_data batch float", lambda c: load_data_fashion_mnist(2.5, root=c.root), TypeError,
     r"batch_size must be an int"),
    ("load_data resize 0", lambda c: load_data_fashion_mnist(8, resize=0, root=c.root),
     ValueError, r"resize must be positive"),
    ("load_data resize negative", lambda c: load_data_fashion_mnist(8, resize=(28, -1),
                                                                    root=c.root), ValueError,
     r"resize must be positive"),
    ("load_data resize 1-tuple", lambda c: load_data_fashion_mnist(8, resize=(28,), root=c.root),
     TypeError, r"resize must be an int or a \(height, width\) pair"),
    ("load_data resize bool", lambda c: load_data_fashion_mnist(8, resize=True, root=c.root),
     TypeError, r"resize must be an int"),
    ("load_data resize float", lambda c: load_data_fashion_mnist(8, resize=2.5, root=c.root),
     TypeError, r"resize must be an int"),
    ("load_data resize huge", lambda c: load_data_fashion_mnist(8, resize=1 << 20, root=c.root),
     ValueError, r"resize must be at most 32768"),
    ("load_data seed", lambda c: load_data_fashion_mnist(8, seed=-2, root=c.root), TypeError,
     r"seed must be None, a non-negative int"),
    ("load_data num_workers", lambda c: load_data_fashion_mnist(8, num_workers=-1, root=c.root),
     ValueError, r"num_workers must be >= 0"),
    ("load_data root", lambda c: load_data_fashion_mnist(8, root=5), TypeError,
     r"root must be None or a folder path"),
    ("load_data download", lambda c: load_data_fashion_mnist(8, root=c.root, download=None),
     TypeError, r"download must be True or False"),
    # datasets.transforms and labels
    ("ToTensor str", lambda c: ToTensor()(np.full((2, 2), "a")), TypeError, r"img must be an "
     r"image of uint8 or float values"),
    ("ToTensor object", lambda c: ToTensor()(np.ones((2, 2), object)), TypeError, r"img"),
    ("ToTensor complex", lambda c: ToTensor()(np.ones((2, 2), complex)), TypeError, r"img"),
    ("ToTensor bool", lambda c: ToTensor()(np.ones((2, 2), bool)), TypeError, r"img"),
    ("ToTensor int32", lambda c: ToTensor()(np.ones((2, 2), np.int32)), TypeError,
     r"ToTensor takes uint8 \(0..255\) or float images, got dtype int32"),
    ("ToTensor 1-D", lambda c: ToTensor()(np.ones(4, np.uint8)), ValueError,
     r"img must be an image of at least 2 dimensions"),
    ("ToTensor 5-D", lambda c: ToTensor()(np.ones((1, 1, 2, 2, 1), np.uint8)), ValueError,
     r"ToTensor takes \(H, W\)"),
    ("ToTensor ragged", lambda c: ToTensor()([[1, 2], [3]]), TypeError, r"img must be an image"),
    ("Resize 0", lambda c: Resize(0), ValueError, r"size must be positive"),
    ("Resize negative", lambda c: Resize(-3), ValueError, r"size must be positive"),
    ("Resize 3-tuple", lambda c: Resize((1, 2, 3)), TypeError, r"size must be an int or a"),
    ("Resize float", lambda c: Resize(2.5), TypeError, r"size must be an int"),
    ("Resize bool", lambda c: Resize(True), TypeError, r"size must be an int"),
    ("Resize str", lambda c: Resize("28"), TypeError, r"size must be an int"),
    ("Resize huge", lambda c: Resize(1 << 16), ValueError, r"size must be at most"),
    ("Resize empty image", lambda c: Resize(4)(np.zeros((0, 5), np.uint8)), ValueError,
     r"images must have non-empty height and width"),
    ("Resize 1-D", lambda c: Resize(4)(np.zeros(5)), ValueError, r"img must be an image of at"),
    ("resize_bilinear str", lambda c: transforms.resize_bilinear(np.full((2, 2), "a"), 3),
     TypeError, r"images must be an image of uint8 or float"),
    ("resize_bilinear size 0", lambda c: transforms.resize_bilinear(f64(2, 2), 0), ValueError,
     r"size must be positive"),
    ("Compose str", lambda c: Compose("abc"), TypeError, r"transforms must be a list"),
    ("Compose int", lambda c: Compose(5), TypeError, r"transforms must be a list"),
    ("Compose item", lambda c: Compose([ToTensor(), 1]), TypeError,
     r"transforms\[1\] must be callable"),
    ("labels 10", lambda c: get_fashion_mnist_labels(10), ValueError,
     r"labels must be < 10 \(the number of classes\), found 10"),
    ("labels -1", lambda c: get_fashion_mnist_labels([-1]), ValueError, r"labels must be >= 0"),
    ("labels 1.5", lambda c: get_fashion_mnist_labels([1.5]), ValueError,
     r"labels must be whole-number"),
    ("labels NaN", lambda c: get_fashion_mnist_labels(NAN), ValueError, r"labels must be finite"),
    ("labels str", lambda c: get_fashion_mnist_labels("3"), TypeError,
     r"labels must be integer class indices"),
    ("labels 2-D", lambda c: get_fashion_mnist_labels([[1, 2], [3, 4]]), ValueError,
     r"labels must be 1-D"),
    # nn.Dense
    ("Dense units 0", lambda c: nn.Dense(0), ValueError, r"units must be > 0, got 0"),
    ("Dense units -1", lambda c: nn.Dense(-1), ValueError, r"units must be > 0"),
    ("Dense units float", lambda c: nn.Dense(2.5), TypeError, r"units must be an int"),
    ("Dense units str", lambda c: nn.Dense("3"), TypeError, r"units must be an int"),
    ("Dense units bool", lambda c: nn.Dense(True), TypeError, r"units must be an int"),
    ("Dense units None", lambda c: nn.Dense(None), TypeError, r"units must be an int"),
    ("Dense in_units 0", lambda c: nn.Dense(3, in_units=0), ValueError, r"in_units must be > 0"),
    ("Dense in_units float", lambda c: nn.Dense(3, in_units=1.5), TypeError,
     r"in_units must be an int"),
    ("Dense dtype int32", lambda c: nn.Dense(3, dtype=np.int32), TypeError,
     r"dtype must be float32 or float64, got int32"),
    ("Dense dtype float16", lambda c: nn.Dense(3, dtype=np.float16), TypeError,
     r"dtype must be float32 or float64, got float16"),
    ("Dense dtype garbage", lambda c: nn.Dense(3, dtype="garbage"), TypeError,
     r"dtype must be float32 or float64, got str 'garbage'"),
    ("Dense dtype None", lambda c: nn.Dense(3, dtype=None), TypeError,
     r"dtype must be float32 or float64"),
    ("Dense weight_initializer", lambda c: nn.Dense(3, in_units=2, weight_initializer=3),
     TypeError, r"weight_initializer must be a fastshallow.init initializer"),
    ("Dense bias_initializer", lambda c: nn.Dense(3, bias_initializer="zeros"), TypeError,
     r"bias_initializer must be"),
    ("Dense rng", lambda c: nn.Dense(3, rng="x"), TypeError, r"rng must be None, a non-negative"),
    ("Dense initialize init", lambda c: dense().initialize("normal"), TypeError,
     r"init must be a fastshallow.init initializer"),
    ("Dense initialize rng", lambda c: dense().initialize(rng=-1), TypeError, r"rng must be"),
    ("Dense X features", lambda c: dense()(f64(4, 3)), ValueError,
     r"X must have 2 features per example \(this layer's in_units\), got shape \(4, 3\)"),
    ("Dense X str", lambda c: dense()(np.full((4, 2), "1")), TypeError,
     r"X must hold real numbers"),
    ("Dense X object", lambda c: dense()(X42.astype(object)), TypeError, r"X must hold real"),
    ("Dense X complex", lambda c: dense()(X42 + 0j), TypeError, r"X .*complex"),
    ("Dense X bool", lambda c: dense()(X42 > 0), TypeError, r"X .*bool"),
    ("Dense X scalar", lambda c: dense()(3.0), ValueError, r"X must have a batch dimension"),
    ("Dense X ragged", lambda c: dense()([[1.0, 2.0], [1.0]]), TypeError,
     r"X must be array-like"),
    ("Dense X no features", lambda c: nn.Dense(3)(f64(4, 0)), ValueError,
     r"the number of input features must be > 0"),
    ("Dense flatten=False 3-D", lambda c: nn.Dense(3, flatten=False)(f64(4, 2, 2)), ValueError,
     r"X must be 2-D for a Dense layer with flatten=False"),
    # The layer's sizes and its parameters' shapes may not drift apart: the compiled training
    # path sizes its buffers from them (these two used to corrupt the heap in fs.train).
    ("Dense in_units assigned", lambda c: setattr(dense(), "in_units", 300), AttributeError,
     r"in_units"),
    ("Dense dtype assigned", lambda c: setattr(dense(), "dtype", np.float32), AttributeError,
     r"dtype"),
    ("weight reinitialized to another shape",
     lambda c: dense().weight.initialize(f64(300, 3)), ValueError,
     r"weight: new data must have shape \(2, 3\), got \(300, 3\)"),
    ("bias reinitialized to another shape", lambda c: dense().bias.initialize(f64(40)),
     ValueError, r"bias: new data must have shape \(3,\), got \(40,\)"),
    ("weight set_data shape", lambda c: dense().weight.set_data(f64(3, 3)), ValueError,
     r"weight: new data must have shape \(2, 3\)"),
    ("weight set_data str", lambda c: dense().weight.set_data(np.full((2, 3), "x")), TypeError,
     r"weight must hold real numbers"),
    ("Parameter str", lambda c: Parameter(["a", "b"]), TypeError, r"param must hold real"),
    ("Parameter complex", lambda c: Parameter(np.ones(2, complex), name="w"), TypeError,
     r"w must hold real numbers.*complex"),
    ("deferred parameter read", lambda c: nn.Dense(3).weight.data, RuntimeError,
     r"parameter 'weight' is not initialized yet"),
    ("Flatten scalar", lambda c: nn.Flatten()(np.float64(1)), ValueError,
     r"X must have a batch dimension"),
    ("Sequential item", lambda c: nn.Sequential(dense(), 3), TypeError,
     r"Sequential holds fastshallow blocks, got int"),
    ("Sequential add", lambda c: nn.Sequential().add(lambda x: x), TypeError,
     r"Sequential holds fastshallow blocks, got function"),
    ("Sequential empty call", lambda c: nn.Sequential()(X42), RuntimeError,
     r"this Sequential is empty"),
    ("Sequential index", lambda c: nn.Sequential(dense())[3], IndexError, r"index"),
    ("backward grad shape", lambda c: losses.L2Loss()(dense(1)(X42), f64(4)).backward(f64(5)),
     ValueError, r"grad must have shape \(4,\) \(or broadcast to it\), got \(5,\)"),
    ("backward grad str", lambda c: losses.L2Loss()(dense(1)(X42), f64(4)).backward("a"),
     TypeError, r"grad must hold real numbers"),
    ("backward of a plain array", lambda c: f64(3).view(Tensor).backward(), RuntimeError,
     r"not produced by a fastshallow layer or loss"),
    # nn: save and load
    ("save deferred", lambda c: nn.Dense(3).save(c.tmp / "m.npz"), RuntimeError,
     r"parameter 'weight' is not initialized yet"),
    ("save path None", lambda c: dense().save(None), TypeError,
     r"path must be a str or os.PathLike, got NoneType"),
    ("save to a folder", lambda c: dense().save(c.tmp), IsADirectoryError,
     r"cannot write .*: it is a folder"),
    ("load path int", lambda c: nn.load(3), TypeError, r"path must be a str or os.PathLike"),
    ("load missing", lambda c: nn.load(c.tmp / "nope.npz"), FileNotFoundError, r"nope\.npz"),
    ("load folder", lambda c: nn.load(c.tmp), ValueError,
     r"is not a readable fastshallow model file"),
    ("load text file", lambda c: nn.load(c.file("m.npz", b"hello")), ValueError,
     r"m\.npz is not a readable fastshallow model file \(it does not start like an \.npz"),
    ("load other npz", lambda c: nn.load(
        (np.savez(c.tmp / "o.npz", a=np.ones(2)), c.tmp / "o.npz")[1]), ValueError,
     r"o\.npz is not a valid fastshallow model file: '__meta__'"),
    ("load_parameters other architecture", lambda c: dense(4, 2).load_parameters(
        c.saved(dense(3, 2))), ValueError, r"model\.npz holds a different architecture"),
    # losses
    ("L2 y_hat str", lambda c: losses.L2Loss()(np.full((2, 1), "a"), [1, 2]), TypeError,
     r"y_hat must hold real numbers"),
    ("L2 y_hat int", lambda c: losses.L2Loss()(np.ones((2, 1), int), [1, 2]), TypeError,
     r"y_hat must have dtype float32 or float64"),
    ("L2 y_hat scalar", lambda c: losses.L2Loss()(1.0, [1.0]), ValueError,
     r"y_hat must have a batch dimension"),
    ("L2 y size", lambda c: losses.L2Loss()(f64(4, 1), f64(3)), ValueError,
     r"y must have one target per prediction"),
    ("L2 y str", lambda c: losses.L2Loss()(f64(2, 1), ["a", "b"]), TypeError,
     r"y must hold real numbers"),
    ("L2 y object", lambda c: losses.L2Loss()(f64(2, 1), [None, 1.0]), TypeError,
     r"y must hold real numbers"),
    ("Huber delta 0", lambda c: losses.HuberLoss(0), ValueError, r"delta must be > 0"),
    ("Huber delta NaN", lambda c: losses.HuberLoss(NAN), ValueError, r"delta must be finite"),
    ("Huber delta str", lambda c: losses.HuberLoss("1"), TypeError, r"delta must be a real"),
    ("Huber y size", lambda c: losses.HuberLoss()(f64(4, 2), f64(4)), ValueError,
     r"y must have one target per prediction"),
    ("SCE smoothing 2", lambda c: losses.SoftmaxCrossEntropyLoss(2.0), ValueError,
     r"label_smoothing must be <= 1"),
    ("SCE smoothing NaN", lambda c: losses.SoftmaxCrossEntropyLoss(NAN), ValueError,
     r"label_smoothing must be finite"),
    ("SCE y_hat 1-D", lambda c: losses.SoftmaxCrossEntropyLoss()(f64(3), [0, 1, 2]), ValueError,
     r"y_hat must be 2-D"),
    ("SCE y_hat str", lambda c: losses.SoftmaxCrossEntropyLoss()(np.full((2, 3), "a"), [0, 1]),
     TypeError, r"y_hat must hold real numbers"),
    ("SCE label out of range", lambda c: losses.SoftmaxCrossEntropyLoss()(f64(2, 3), [0, 7]),
     ValueError, r"labels must be < 3 \(the number of classes\), found 7"),
    ("SCE label negative", lambda c: losses.SoftmaxCrossEntropyLoss()(f64(2, 3), [-2, 0]),
     ValueError, r"labels must be >= 0, found -2"),
    ("SCE label fractional", lambda c: losses.SoftmaxCrossEntropyLoss()(f64(2, 3), [0.2, 0]),
     ValueError, r"labels must be whole-number"),
    ("SCE labels short", lambda c: losses.SoftmaxCrossEntropyLoss()(f64(2, 3), [0]), ValueError,
     r"labels must have 2 entries"),
    ("loss backward without a layer", lambda c: losses.L2Loss()(f64(2, 1), f64(2)).backward(),
     RuntimeError, r"not produced by a fastshallow layer"),
    # optim
    ("SGD no params", lambda c: optim.SGD([], 0.1), TypeError,
     r"params must be a non-empty list of fastshallow Parameters"),
    ("SGD arrays", lambda c: optim.SGD([f64(2)], 0.1), TypeError, r"params must be"),
    ("SGD None", lambda c: optim.SGD(None, 0.1), TypeError, r"params must be"),
    ("SGD lr 0", lambda c: optim.SGD(dense(), 0), ValueError, r"lr must be > 0"),
    ("SGD lr -1", lambda c: optim.SGD(dense(), -1), ValueError, r"lr must be > 0"),
    ("SGD lr NaN", lambda c: optim.SGD(dense(), NAN), ValueError, r"lr must be finite"),
    ("SGD lr inf", lambda c: optim.SGD(dense(), INF), ValueError, r"lr must be finite"),
    ("SGD lr str", lambda c: optim.SGD(dense(), "0.1"), TypeError, r"lr must be a real number"),
    ("SGD lr None", lambda c: optim.SGD(dense(), None), TypeError, r"lr must be a real number"),
    ("SGD momentum 1", lambda c: optim.SGD(dense(), 0.1, momentum=1), ValueError,
     r"momentum must be < 1"),
    ("SGD momentum NaN", lambda c: optim.SGD(dense(), 0.1, momentum=NAN), ValueError,
     r"momentum must be finite"),
    ("SGD weight_decay -1", lambda c: optim.SGD(dense(), 0.1, weight_decay=-1), ValueError,
     r"weight_decay must be >= 0"),
    ("SGD schedule int", lambda c: optim.SGD(dense(), 0.1, schedule=3), TypeError,
     r"schedule must be a fastshallow.optim.Schedule"),
    ("SGD schedule lambda", lambda c: optim.SGD(dense(), 0.1, schedule=lambda t: 1.0),
     TypeError, r"schedule must be"),
    ("SGD step batch 0", lambda c: optim.SGD(dense(), 0.1).step(0), ValueError,
     r"batch_size must be > 0"),
    ("SGD step batch float", lambda c: optim.SGD(dense(), 0.1).step(2.5), TypeError,
     r"batch_size must be an int"),
    ("SGD step batch -3", lambda c: optim.SGD(dense(), 0.1).step(-3), ValueError,
     r"batch_size must be > 0"),
    ("SGD step batch bool", lambda c: optim.SGD(dense(), 0.1).step(True), TypeError,
     r"batch_size must be an int"),
    ("SGD step deferred", lambda c: optim.SGD(nn.Dense(3), 0.1).step(1), RuntimeError,
     r"parameter 'weight' is not initialized yet"),
    ("SGD momentum step deferred", lambda c: optim.SGD(nn.Dense(3), 0.1, momentum=0.9).step(1),
     RuntimeError, r"parameter 'weight' is not initialized yet"),
    ("Cosine total 0", lambda c: optim.CosineSchedule(0), ValueError, r"total_steps must be > 0"),
    ("Cosine total float", lambda c: optim.CosineSchedule(10.0), TypeError,
     r"total_steps must be an int"),
    ("Cosine final 1.5", lambda c: optim.CosineSchedule(10, final_factor=1.5), ValueError,
     r"final_factor must be <= 1"),
    ("Cosine final NaN", lambda c: optim.CosineSchedule(10, final_factor=NAN), ValueError,
     r"final_factor must be finite"),
    ("Cosine warmup -1", lambda c: optim.CosineSchedule(10, warmup_steps=-1), ValueError,
     r"warmup_steps must be >= 0"),
    ("Cosine warmup >= total", lambda c: optim.CosineSchedule(10, warmup_steps=10), ValueError,
     r"warmup_steps \(10\) must be < total_steps \(10\)"),
    ("Step step_size 0", lambda c: optim.StepSchedule(0), ValueError, r"step_size must be > 0"),
    ("Step gamma 0", lambda c: optim.StepSchedule(5, 0.0), ValueError, r"gamma must be > 0"),
    ("Step gamma 1.5", lambda c: optim.StepSchedule(5, 1.5), ValueError, r"gamma must be <= 1"),
    ("Step gamma NaN", lambda c: optim.StepSchedule(5, NAN), ValueError, r"gamma must be finite"),
    # init
    ("Normal sigma < 0", lambda c: init.Normal(-1), ValueError, r"sigma must be >= 0"),
    ("Normal sigma NaN", lambda c: init.Normal(NAN), ValueError, r"sigma must be finite"),
    ("Uniform scale < 0", lambda c: init.Uniform(-0.1), ValueError, r"scale must be >= 0"),
    ("Constant NaN", lambda c: init.Constant(NAN), ValueError, r"value must be finite"),
    ("Constant str", lambda c: init.Constant("1"), TypeError, r"value must be a real number"),
    ("Normal rng None", lambda c: init.Normal()((2, 3), np.float32, None), TypeError,
     r"rng must be a numpy Generator \(e\.g\. np\.random\.default_rng\(0\)\), got NoneType"),
    ("Xavier rng seed", lambda c: init.Xavier()((2, 3), np.float32, 0), TypeError,
     r"rng must be a numpy Generator"),
    ("Uniform rng None", lambda c: init.Uniform()((2,), np.float64, None), TypeError,
     r"rng must be a numpy Generator"),
    ("Normal dtype int8", lambda c: init.Normal()((2,), "int8", np.random.default_rng(0)),
     TypeError, r"dtype must be float32 or float64, got int8"),
    ("Xavier dtype int", lambda c: init.Xavier()((2, 2), int, np.random.default_rng(0)),
     TypeError, r"dtype must be float32 or float64, got int64"),
    ("Constant dtype int8", lambda c: init.Constant(0.5)((2,), "int8", None), TypeError,
     r"dtype must be float32 or float64, got int8"),
    ("seed -1", lambda c: fs.seed(-1), TypeError, r"seed must be None, a non-negative int"),
    # training: fs.train, fs.train_epoch, evaluate_accuracy, evaluate_loss, predict
    ("train epochs -1", lambda c: train_call(epochs=-1), ValueError,
     r"num_epochs must be >= 0, got -1"),
    ("train epochs float", lambda c: train_call(epochs=1.5), TypeError,
     r"num_epochs must be an int"),
    ("train epochs str", lambda c: train_call(epochs="3"), TypeError,
     r"num_epochs must be an int"),
    ("train num_threads 0 (fused)", lambda c: train_call(num_threads=0), ValueError,
     r"num_threads must be a positive int"),
    ("train fused=True not fusable", lambda c: train_call(
        net=nn.Sequential(dense(4, 2, np.float32), dense(1, 4, np.float32)), fused=True),
     ValueError, r"fused=True, but the fused kernels cannot run this training"),
    ("train features mismatch (fused)", lambda c: train_call(net=dense(1, 3, np.float32)),
     ValueError, r"the network expects 3 features, the training data has 2"),
    ("train features mismatch (loop)", lambda c: train_call(net=dense(1, 3, np.float32),
                                                            fused=False), ValueError,
     r"X must have 3 features per example"),
    ("train label out of range (fused)", lambda c: train_call(
        net=dense(3, 2, np.float32), it=pair_loader(classes=5),
        loss=losses.SoftmaxCrossEntropyLoss()), ValueError,
     r"labels must be < 3 \(the number of classes\), found 4"),
    ("train label out of range (loop)", lambda c: train_call(
        net=dense(3, 2, np.float32), it=pair_loader(classes=5),
        loss=losses.SoftmaxCrossEntropyLoss(), fused=False), ValueError,
     r"labels must be < 3 \(the number of classes\), found 4"),
    ("train fractional labels (fused)", lambda c: train_call(
        net=dense(3, 2, np.float32), loss=losses.SoftmaxCrossEntropyLoss(),
        it=fs.load_array((f32(4, 2), [0.0, 0.5, 1.0, 2.0]), 2)), ValueError,
     r"labels must be whole-number"),
    ("train NaN feature (fused)", lambda c: train_call(it=fs.DataLoader(fs.ArrayDataset(
        np.array([[1, 2], [NAN, 1], [0, 0]], np.float32), f32(3), check_finite=False), 1)),
     fs.TrainingDiverged, r"epoch 1, minibatch 2"),
    ("train NaN feature (loop)", lambda c: train_call(it=fs.DataLoader(fs.ArrayDataset(
        np.array([[1, 2], [NAN, 1], [0, 0]], np.float32), f32(3), check_finite=False), 1),
        fused=False), fs.TrainingDiverged, r"epoch 1, minibatch 2"),
    ("train inf target (loop)", lambda c: train_call(it=fs.DataLoader(fs.ArrayDataset(
        f32(3, 2), np.array([0, 0, INF], np.float32), check_finite=False), 1), fused=False),
     fs.TrainingDiverged, r"epoch 1, minibatch 3"),
    ("train inf target (fused)", lambda c: train_call(it=fs.DataLoader(fs.ArrayDataset(
        f32(3, 2), np.array([0, 0, INF], np.float32), check_finite=False), 1)), ValueError,
     r"targets must be finite"),
    ("train_epoch fused=True not fusable", lambda c: fs.train_epoch(
        nn.Sequential(dense(4, 2), dense(1, 4)), pair_loader(dtype=np.float64), losses.L2Loss(),
        lambda bs: None, fused=True), ValueError, r"fused=True"),
    ("evaluate_accuracy not iterable", lambda c: fs.evaluate_accuracy(dense(), 5), TypeError,
     r"the data iterator must be an iterable of \(X, y\) pairs"),
    ("evaluate_accuracy not pairs", lambda c: fs.evaluate_accuracy(dense(), [(X42,)]),
     TypeError, r"the data iterator must yield \(X, y\) pairs"),
    ("evaluate_accuracy features", lambda c: fs.evaluate_accuracy(dense(), [(f64(4, 5), [0] * 4)]),
     ValueError, r"X must have 2 features"),
    ("evaluate_loss not pairs", lambda c: fs.evaluate_loss(dense(1), [X42], losses.L2Loss()),
     TypeError, r"the data iterator must yield \(X, y\) pairs"),
    ("evaluate_accuracy list of 3", lambda c: fs.evaluate_accuracy(dense(), [[X42, [0] * 4, 1]]),
     TypeError, r"the data iterator must yield \(X, y\) pairs, got list of 3 items"),
    ("predict n 0", lambda c: fs.predict(dense(), [(f64(4, 2), [0] * 4)], n=0), ValueError,
     r"n must be > 0"),
    ("predict n str", lambda c: fs.predict(dense(), [(f64(4, 2), [0] * 4)], n="3"), TypeError,
     r"n must be"),
    ("predict not pairs", lambda c: fs.predict(dense(), [X42]), TypeError,
     r"the data iterator must yield \(X, y\) pairs"),
    ("predict path extension", lambda c: fs.predict(
        nn.Dense(10, in_units=784, rng=0), [(f32(3, 1, 28, 28), [0, 1, 2])],
        path=c.tmp / "grid.txt"), ValueError, r"path must end in an image extension"),
    ("predict path folder missing", lambda c: fs.predict(
        nn.Dense(10, in_units=784, rng=0), [(f32(3, 1, 28, 28), [0, 1, 2])],
        path=c.tmp / "nope" / "grid.png"), FileNotFoundError, r"path: folder .* does not exist"),
    ("train plot_path extension", lambda c: train_call(plot_path=c.tmp / "curve.doc"),
     ValueError, r"path must end in an image extension"),
    # scratch
    ("linreg w array", lambda c: fs.linreg(X42, f64(2, 1), Parameter(f64(1))), TypeError,
     r"w must be a fastshallow Parameter"),
    ("linreg b float", lambda c: fs.linreg(X42, Parameter(f64(2, 1)), 0.0), TypeError,
     r"b must be a fastshallow Parameter"),
    ("linreg X columns", lambda c: fs.linreg(f64(4, 3), Parameter(f64(2, 1)), Parameter(f64(1))),
     ValueError, r"X must have 2 columns \(the rows of w\)"),
    ("linreg X 1-D", lambda c: fs.linreg(f64(4), Parameter(f64(2, 1)), Parameter(f64(1))),
     ValueError, r"X must be 2-D"),
    ("linreg X str", lambda c: fs.linreg(np.full((4, 2), "a"), Parameter(f64(2, 1)),
                                         Parameter(f64(1))), TypeError, r"X must hold real"),
    ("linreg b size", lambda c: fs.linreg(X42, Parameter(f64(2, 3)), Parameter(f64(2))),
     ValueError, r"b must have 1 or 3 entries"),
    ("squared_loss y_hat str", lambda c: fs.squared_loss(["a"], [1.0]), TypeError,
     r"y_hat must hold real numbers"),
    ("squared_loss sizes", lambda c: fs.squared_loss(f64(4), f64(3)), ValueError,
     r"y must have one target per prediction"),
    ("squared_loss y object", lambda c: fs.squared_loss(f64(2), [None, 1]), TypeError,
     r"y must hold real numbers"),
    ("scratch sgd params Parameter", lambda c: fs.sgd(Parameter(f64(2)), 0.1, 1), TypeError,
     r"params must be a list of fastshallow Parameters, got Parameter"),
    ("scratch sgd params arrays", lambda c: fs.sgd([f64(2)], 0.1, 1), TypeError,
     r"params\[0\] must be a fastshallow Parameter"),
    ("scratch sgd params second bad", lambda c: fs.sgd([Parameter(f64(2)), 1.0], 0.1, 1), TypeError,
     r"params\[1\] must be a fastshallow Parameter"),
    ("scratch sgd lr 0", lambda c: fs.sgd([Parameter(f64(2))], 0, 1),
     ValueError, r"lr must be > 0"),
    ("scratch sgd lr NaN", lambda c: fs.sgd([Parameter(f64(2))], NAN, 1), ValueError,
     r"lr must be finite"),
    ("scratch sgd batch 0", lambda c: fs.sgd([Parameter(f64(2))], 0.1, 0), ValueError,
     r"batch_size must be > 0"),
    ("scratch softmax str", lambda c: fs.softmax(["a", "b"]),
     TypeError, r"X must hold real numbers"),
    ("scratch softmax bool", lambda c: fs.softmax([True, False]), TypeError, r"X .*bool"),
    ("scratch softmax 3-D", lambda c: fs.softmax(f64(2, 2, 2)),
     ValueError, r"X must be 1-D or 2-D"),
    ("scratch softmax ragged", lambda c: fs.softmax([[1.0, 2.0], [3.0]]), TypeError,
     r"X must be array-like"),
    ("scratch cross_entropy y_hat 1-D", lambda c: fs.cross_entropy(f64(3), [0]), ValueError,
     r"y_hat must be 2-D"),
    ("scratch cross_entropy y out of range", lambda c: fs.cross_entropy(f64(2, 3), [0, 3]),
     ValueError, r"y must be < 3"),
    ("scratch cross_entropy y negative", lambda c: fs.cross_entropy(f64(2, 3), [0, -1]), ValueError,
     r"y must be >= 0"),
    ("scratch cross_entropy y fractional", lambda c: fs.cross_entropy(f64(2, 3), [0, 1.5]),
     ValueError, r"y must be whole-number"),
    ("scratch cross_entropy y length", lambda c: fs.cross_entropy(f64(2, 3), [0]), ValueError,
     r"y must have 2 entries"),
    ("scratch cross_entropy y_hat str", lambda c: fs.cross_entropy(np.full((2, 3), "a"), [0, 1]),
     TypeError, r"y_hat must hold real numbers"),
    # metrics
    ("accuracy y_hat str", lambda c: fs.accuracy(np.array(["a", "b"]), [0, 1]), TypeError,
     r"y_hat must hold real numbers"),
    ("accuracy y str", lambda c: fs.accuracy([0, 1], ["0", "1"]), TypeError,
     r"y must hold real numbers"),
    ("accuracy y object", lambda c: fs.accuracy([0, 1], [None, 1]), TypeError,
     r"y must hold real numbers"),
    ("accuracy lengths", lambda c: fs.accuracy(f64(4, 3), [0, 1]), ValueError,
     r"y must have one label per prediction \(4\), got 2"),
    ("entropy not summing to 1", lambda c: fs.entropy([0.5, 0.6]), ValueError,
     r"p must sum to 1 along its last axis"),
    ("entropy negative", lambda c: fs.entropy([-0.5, 1.5]), ValueError,
     r"p must hold probabilities >= 0"),
    ("entropy NaN", lambda c: fs.entropy([NAN, 1.0]), ValueError, r"p must be finite"),
    ("entropy empty", lambda c: fs.entropy([]), ValueError, r"p must not be empty"),
    ("entropy str", lambda c: fs.entropy(["a"]), TypeError, r"p must hold real numbers"),
    ("entropy ragged", lambda c: fs.entropy([[0.5, 0.5], [1.0]]), TypeError,
     r"p must be array-like"),
    ("cross_entropy_between shapes", lambda c: fs.cross_entropy_between([0.5, 0.5],
                                                                         [0.2, 0.3, 0.5]),
     ValueError, r"p and q must have the same shape"),
    ("cross_entropy_between q", lambda c: fs.cross_entropy_between([0.5, 0.5], [0.7, 0.7]),
     ValueError, r"q must sum to 1"),
    ("kl q str", lambda c: fs.kl_divergence([0.5, 0.5], ["a", "b"]), TypeError,
     r"q must hold real numbers"),
    ("kl q inf", lambda c: fs.kl_divergence([0.5, 0.5], [INF, 0.0]), ValueError,
     r"q must be finite"),
    # least_squares
    ("lstsq X 1-D", lambda c: fs.least_squares(f64(4), f64(4)), ValueError, r"X must be 2-D"),
    ("lstsq y rows", lambda c: fs.least_squares(X42, f64(3)), ValueError,
     r"y must have 4 rows \(one per example\), got shape \(3,\)"),
    ("lstsq y 3-D", lambda c: fs.least_squares(X42, f64(4, 1, 1)), ValueError,
     r"y must be 1-D or 2-D"),
    ("lstsq X NaN", lambda c: fs.least_squares(np.array([[1.0, NAN]] * 3), f64(3)), ValueError,
     r"X must be finite"),
    ("lstsq y inf", lambda c: fs.least_squares(X42, [0, 0, 0, INF]), ValueError,
     r"y must be finite"),
    ("lstsq no examples", lambda c: fs.least_squares(f64(0, 2), f64(0)), ValueError,
     r"X must have at least one example"),
    ("lstsq X str", lambda c: fs.least_squares(np.full((3, 2), "a"), f64(3)), TypeError,
     r"X must hold real numbers"),
    ("lstsq X complex", lambda c: fs.least_squares(X42 + 1j, f64(4)), TypeError,
     r"X .*complex"),
    ("lstsq y bool", lambda c: fs.least_squares(X42, [True] * 4), TypeError, r"y .*bool"),
    ("lstsq solution overflows", lambda c: fs.least_squares(X42 * 1e-300, f64(4) * 1e300),
     ValueError, r"least-squares solution is too large for float64"),
    # scalars where distributions are expected; numbers past float and int64 ranges
    ("entropy scalar", lambda c: fs.entropy(1.0), ValueError, r"p must be a distribution"),
    ("kl scalars", lambda c: fs.kl_divergence(1.0, 1.0), ValueError,
     r"p must be a distribution"),
    ("permutation n huge", lambda c: K.permutation(2**63, 0), ValueError, r"n must be at most"),
    ("SGD lr past float", lambda c: optim.SGD(dense(), lr=10**400), ValueError,
     r"lr must be finite, got a number of about 401 digits"),
    ("sgd_update lr past float", lambda c: K.sgd_update(f64(3), f64(3), 10**400, 1), ValueError,
     r"lr must be finite"),
]


@pytest.mark.parametrize("call, exc, match", [pytest.param(*row[1:], id=row[0]) for row in BAD])
def test_bad_input_raises_clearly(ctx, call, exc, match):
    with pytest.raises(exc, match=match):
        call(ctx)


def test_diverging_regression_names_epoch_and_minibatch():
    for fused in (None, False):
        net = dense(1, 2, np.float32)
        with pytest.raises(fs.TrainingDiverged, match=r"in epoch 1, minibatch \d+ \(learning "
                                                      r"rate 1e\+06\)"):
            train_call(net=net, it=pair_loader(n=200, batch_size=10), epochs=3,
                       updater=optim.SGD(net.parameters(), lr=1e6), fused=fused)


def test_rejected_calls_change_nothing():
    """A call refused by validation leaves the network, optimizer and buffers as they were."""
    net = dense(3, 2, np.float32)
    trainer = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    W0, b0 = net.weight.data.copy(), net.bias.data.copy()
    for bad in (pair_loader(classes=5), fs.load_array((f32(4, 5), [0, 1, 2, 0]), 2)):
        with pytest.raises(ValueError):
            fs.train(net, bad, None, losses.SoftmaxCrossEntropyLoss(), 2, trainer, verbose=False)
    assert trainer.num_steps == 0
    np.testing.assert_array_equal(net.weight.data, W0)
    np.testing.assert_array_equal(net.bias.data, b0)


# ---- accepted input: the right answer ---------------------------------------------------------

def _mm_ref(X, W, b=None):
    X, W = np.asarray(X, np.float64), np.asarray(W, np.float64)
    with np.errstate(invalid="ignore"):
        return X @ W + (0 if b is None else np.asarray(b, np.float64))


def _close(got, ref, rtol=1e-12):
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol, equal_nan=True)


def _sce_ref(Z, y):
    Z = np.asarray(Z, np.float64)
    mx = Z.max(axis=1, keepdims=True)
    lse = mx[:, 0] + np.log(np.exp(Z - mx).sum(axis=1))
    P = np.exp(Z - lse[:, None])
    loss = lse - Z[np.arange(len(Z)), np.asarray(y, int)]
    G = P.copy()
    G[np.arange(len(Z)), np.asarray(y, int)] -= 1
    return loss, G


def _strided(base, step=2):
    return base[:, ::step]


def _overlapping_rows(n=5, k=3):
    """A read-only view whose rows overlap in memory (row i starts one element after row i-1)."""
    base = np.arange(n + k, dtype=np.float64)
    return np.lib.stride_tricks.as_strided(base, (n, k), (8, 8), writeable=False)


def _check_out_aliasing_copied_input():
    """A strided input is copied before the kernel runs, so an output sharing its memory gets
    the product of the input as it was."""
    B = f64(8)
    X = B[::2].reshape(4, 1)            # not contiguous: copied by the wrapper
    want_mm, want_g = _mm_ref(X, f64(1, 2)[:, :1]), X[[3, 0]].copy()
    _close(K.matmul_bias(X, f64(1, 2)[:, :1].copy(), out=B[:4].reshape(4, 1)), want_mm)
    B = f64(8)
    X = B[::2].reshape(4, 1)
    _close(K.gather_rows(X, [3, 0], out=B[:2].reshape(2, 1)), want_g)


def _check_loader_one_short_batch():
    X = f64(7, 2)
    it = fs.load_array((X, f64(7)), batch_size=100, is_train=False)
    batches = list(it)
    assert len(it) == 1 and len(batches) == 1
    _close(batches[0][0], X)
    assert fs.DataLoader(fs.ArrayDataset(X), 100, drop_last=True).__len__() == 0
    assert list(fs.DataLoader(fs.ArrayDataset(X), 100, drop_last=True)) == []


def _check_train_batch_larger_than_data():
    results = []
    for fused in (None, False):
        net = dense(1, 2, np.float32)
        it = pair_loader(n=12, batch_size=1000)
        h = train_call(net=net, it=it, epochs=2, updater=optim.SGD(net.parameters(), 0.1),
                       fused=fused)
        assert h.fused == (fused is None)
        results.append((net.weight.data.copy(), net.bias.data.copy(), h.train_loss))
    # One short batch of 12 examples per epoch, identical on both paths.
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][2], results[1][2], rtol=1e-6)
    # ... and equal to two full-batch gradient steps.
    X, y = pair_loader(n=12).dataset.arrays
    w, b = dense(1, 2, np.float32).weight.data.astype(np.float64), np.zeros(1)
    for _ in range(2):
        r = X @ w + b - y[:, None]
        w, b = w - 0.1 * X.T @ r / 12, b - 0.1 * r.sum(0) / 12
    np.testing.assert_allclose(results[0][0], w, rtol=1e-5, atol=1e-6)


def _check_train_on_unusual_arrays():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 6)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    ref = None
    for Xv, yv in ((X, y), (ro(X), ro(y)), (F(X), y), (np.repeat(X, 2, axis=1)[:, ::2], y),
                   (X, y.astype(np.float64)), (X, y.astype(np.uint8)), (X, y[:, None])):
        net = nn.Dense(3, in_units=6, rng=0)
        it = fs.load_array((Xv, yv), 8, seed=1)
        fs.train(net, it, None, losses.SoftmaxCrossEntropyLoss(), 2,
                 optim.SGD(net.parameters(), 0.5), verbose=False)
        if ref is None:
            ref = net.weight.data.copy()
        np.testing.assert_array_equal(net.weight.data, ref)


def _check_train_on_empty_data():
    net = dense(1, 2, np.float32)
    W0 = net.weight.data.copy()
    for fused in (None, False):
        h = train_call(net=net, it=fs.load_array((f32(0, 2), f32(0)), 4), epochs=2, fused=fused)
        assert np.isnan(h.train_loss).all()
    np.testing.assert_array_equal(net.weight.data, W0)


def _check_sparse_rows_past_int32(tmp_path):
    """A (2**32 + 16)-row uint8 source, memory-mapped from a sparse file (nothing is allocated):
    rows past 2**31 and 2**32 are gathered from where they are, not from a truncated index."""
    n = 2**32 + 16
    path = tmp_path / "big.u8"
    with open(path, "wb") as fh:
        fh.truncate(n * 2)
    m = np.memmap(path, np.uint8, "r+", shape=(n, 2))
    rows = np.array([3, 2**31 - 1, 2**31 + 5, 2**32 + 3, n - 1], np.int64)
    for i, r in enumerate(rows):
        m[r] = [i + 1, 200 - i]
    m.flush()
    del m
    src = np.memmap(path, np.uint8, "r", shape=(n, 2))
    want = np.array([[i + 1, 200 - i] for i in range(len(rows))], np.float32)
    for idx in (rows, rows.astype(np.uint64), list(rows)):
        _close(K.gather_rows(src, idx), want)
    _close(K.gather_rows(src, rows[[2]].astype(np.uint32)), want[[2]])
    _close(K.gather_rows(src, rows, scale=0.5, dtype=np.float64), want * 0.5)
    with pytest.raises(ValueError, match=r"indices must be in \[0, 4294967312\) .*found "
                                         r"4294967312"):
        K.gather_rows(src, [n])
    del src


ACCEPTED = [
    # (id, check taking tmp_path)
    ("mm non-contiguous X", lambda t: (lambda X: _close(K.matmul_bias(X, W23), _mm_ref(X, W23)))(
        _strided(f64(4, 4)))),
    ("mm Fortran X and W", lambda t: _close(K.matmul_bias(F(f64(5, 2)), F(W23), f64(3)),
                                            _mm_ref(f64(5, 2), W23, f64(3)))),
    ("mm read-only inputs", lambda t: _close(K.matmul_bias(ro(X42), ro(W23), ro(f64(3))),
                                             _mm_ref(X42, W23, f64(3)))),
    ("mm broadcast (stride 0) X", lambda t: (lambda X: _close(K.matmul_bias(X, W23),
                                                              _mm_ref(X, W23)))(
        np.broadcast_to(f64(1, 2), (50, 2)))),
    ("mm self-overlapping X", lambda t: (lambda X: _close(K.matmul_bias(X, f64(3, 4)),
                                                          _mm_ref(X, f64(3, 4))))(
        _overlapping_rows())),
    ("mm out aliasing a strided (copied) X", lambda t: _check_out_aliasing_copied_input()),
    ("mm out given", lambda t: (lambda o: (K.matmul_bias(X42, W23, out=o) is o
                                           and _close(o, _mm_ref(X42, W23))))(np.empty((4, 3)))),
    ("mm out a row block of a bigger buffer", lambda t: (lambda o: (
        K.matmul_bias(X42, W23, out=o[2:6]), _close(o[2:6], _mm_ref(X42, W23)),
        _close(o[:2], np.zeros((2, 3)))))(np.zeros((8, 3)))),
    ("mm NaN and inf propagate per row", lambda t: (lambda X: _close(
        K.matmul_bias(X, W23), _mm_ref(X, W23)))(np.array([[1.0, NAN], [INF, 0.0], [1, 2]]))),
    ("mm empty batch", lambda t: _close(K.matmul_bias(f64(0, 2), W23), np.zeros((0, 3)))),
    ("mm no features", lambda t: _close(K.matmul_bias(f64(3, 0), f64(0, 2), f64(2)),
                                        np.tile(f64(2), (3, 1)))),
    ("mm no outputs", lambda t: _close(K.matmul_bias(X42, f64(2, 0)), np.zeros((4, 0)))),
    ("mm num_threads numpy int", lambda t: _close(K.matmul_bias(X42, W23, num_threads=np.int64(2)),
                                                  _mm_ref(X42, W23))),
    ("mm float32 strided", lambda t: (lambda X: _close(K.matmul_bias(X, W23.astype(np.float32)),
                                                       _mm_ref(X, W23), rtol=1e-6))(
        _strided(f64(6, 4).astype(np.float32)))),
    ("bw non-contiguous G", lambda t: (lambda G: _close(K.matmul_bias_backward(X42, G)[0],
                                                        X42.T @ G))(_strided(f64(4, 6)))),
    ("bw empty batch", lambda t: _close(K.matmul_bias_backward(f64(0, 2), f64(0, 3))[0],
                                        np.zeros((2, 3)))),
    ("sce whole-number float labels", lambda t: _close(
        K.softmax_cross_entropy(f64(3, 4), [0.0, 3.0, 2.0])[0], _sce_ref(f64(3, 4), [0, 3, 2])[0])),
    ("sce small int label dtypes", lambda t: [
        _close(K.softmax_cross_entropy(f64(3, 4), np.array([0, 3, 2], dt))[1],
               _sce_ref(f64(3, 4), [0, 3, 2])[1]) for dt in (np.int8, np.uint8, np.int32,
                                                             np.uint64)]),
    ("sce (n, 1) labels", lambda t: _close(K.softmax_cross_entropy(f64(3, 4), [[1], [2], [0]])[0],
                                           _sce_ref(f64(3, 4), [1, 2, 0])[0])),
    ("sce -0.0 label", lambda t: _close(K.softmax_cross_entropy(f64(1, 2), [-0.0])[0],
                                        _sce_ref(f64(1, 2), [0])[0])),
    ("sce strided logits, read-only labels", lambda t: (lambda Z: _close(
        K.softmax_cross_entropy(Z, ro([1, 0, 2, 1]))[1], _sce_ref(Z, [1, 0, 2, 1])[1]))(
        _strided(f64(4, 6)))),
    ("sce empty batch", lambda t: [_close(a, np.zeros(s)) for a, s in zip(
        K.softmax_cross_entropy(f64(0, 3), []), ((0,), (0, 3)))]),
    ("sce one class", lambda t: [_close(a, np.zeros(s)) for a, s in zip(
        K.softmax_cross_entropy(f64(2, 1), [0, 0]), ((2,), (2, 1)))]),
    ("softmax 1-D", lambda t: _close(K.softmax([1.0, 2.0]), np.exp([1, 2]) / np.exp([1, 2]).sum())),
    ("softmax empty", lambda t: [_close(K.softmax(f64(*s)), np.zeros(s)) for s in
                                 ((0, 3), (3, 0), (0,))]),
    ("log_softmax Fortran", lambda t: (lambda Z: _close(np.exp(K.log_softmax(F(Z))), K.softmax(Z),
                                                        rtol=1e-12))(f64(3, 4))),
    ("sgd non-contiguous read-only grad", lambda t: (lambda p, g: _close(
        K.sgd_update(p, g, 0.5, 2), f64(3) - 0.5 * g / 2))(f64(3), ro(f64(6)[::2]))),
    ("sgd strided grad overlapping param", lambda t: (lambda p: _close(
        K.sgd_update(p[:3], p[1::2], 0.5, 1), f64(6)[:3] - 0.5 * f64(6)[1::2]))(f64(6))),
    ("sgd 0-D param", lambda t: _close(K.sgd_update(np.array(1.0), np.array(2.0), 0.5, 1), 0.0)),
    ("sgd numpy scalars", lambda t: _close(K.sgd_update(f64(2), f64(2), np.float32(0.5),
                                                        np.int64(2)), f64(2) - 0.25 * f64(2))),
    ("sgd empty param", lambda t: _close(K.sgd_update(f64(0), f64(0), 0.1, 1), np.zeros(0))),
    ("gather index dtypes", lambda t: [_close(K.gather_rows(X42, np.array([3, 0], dt)),
                                              X42[[3, 0]]) for dt in
                                       (np.int8, np.uint8, np.int16, np.int32, np.uint32,
                                        np.uint64)]),
    ("gather index list and tuple", lambda t: [_close(K.gather_rows(X42, i), X42[[1, 1]])
                                               for i in ([1, 1], (1, 1), np.array([1, 1]))]),
    ("gather no indices", lambda t: [_close(K.gather_rows(X42, i), np.zeros((0, 2)))
                                     for i in ([], np.array([], np.int64), np.zeros(0))]),
    ("gather from empty source", lambda t: _close(K.gather_rows(f64(0, 3), []), np.zeros((0, 3)))),
    ("gather read-only strided source", lambda t: (lambda S: _close(K.gather_rows(S, [2, 0]),
                                                                    S[[2, 0]]))(
        ro(f64(3, 8))[:, 1::3])),
    ("gather uint8 3-D scaled", lambda t: (lambda S: _close(
        K.gather_rows(S, [1, 0], scale=1 / 255), S[[1, 0]].astype(np.float32)
        * np.float32(1 / 255), rtol=1e-6))(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))),
    ("gather out given", lambda t: (lambda o: (K.gather_rows(X42, [2], out=o),
                                               _close(o, X42[[2]])))(np.empty((1, 2)))),
    ("gather out aliasing a strided (copied) src", lambda t: _check_out_aliasing_copied_input()),
    ("gather past int32 (sparse memmap)", lambda t: _check_sparse_rows_past_int32(t)),
    ("synthetic matrix w, vector b", lambda t: (lambda Xy: _close(
        Xy[1], Xy[0].astype(np.float64) @ f64(2, 3) + f64(3), rtol=1e-5))(
        fs.synthetic_data(f64(2, 3), f64(3), 5, noise=0, seed=0))),
    ("synthetic zero examples", lambda t: [a.shape for a in fs.synthetic_data([1, 2], 0, 0)]
     == [(0, 2), (0,)] or pytest.fail("shapes")),
    ("synthetic b of one value", lambda t: _close(
        fs.synthetic_data([1, 2], [3.0], 4, noise=0, seed=1, dtype=np.float64)[1],
        fs.synthetic_data([1, 2], 3.0, 4, noise=0, seed=1, dtype=np.float64)[1])),
    ("loader batch larger than data", lambda t: _check_loader_one_short_batch()),
    ("train batch larger than data", lambda t: _check_train_batch_larger_than_data()),
    ("train on read-only, Fortran, strided arrays", lambda t: _check_train_on_unusual_arrays()),
    ("train on no data", lambda t: _check_train_on_empty_data()),
    ("Dense strided input", lambda t: (lambda X: _close(dense()(X), _mm_ref(
        X, dense().weight.data, dense().bias.data)))(_strided(f64(4, 4)))),
    ("Dense int input converted", lambda t: _close(dense()(np.ones((2, 2), int)),
                                                   dense()(f64(2, 2) * 0 + 1))),
    ("Dense save then load round trip", lambda t: (lambda n: _close(
        nn.load((n.save(t / "m.npz"), t / "m.npz")[1])(X42), n(X42)))(dense())),
    ("lstsq Fortran and strided", lambda t: _close(fs.least_squares(F(X42 * [1, -1] + [0, 3]),
                                                                    f64(4))[0],
                                                   fs.least_squares(X42 * [1, -1] + [0, 3],
                                                                    f64(4))[0], rtol=1e-9)),
    ("accuracy compares values", lambda t: [
        fs.accuracy(np.array([0.9, 1.1, 1.0]), [0, 1, 1]) == 1.0 or pytest.fail("0.9 != 0"),
        fs.accuracy(np.array([1, 0]), np.array([1.0, 0.0])) == 2.0 or pytest.fail("ints")]),
    ("scratch softmax of ints", lambda t: _close(fs.softmax([[0, 0]]), [[0.5, 0.5]])),
    ("Xavier without fans", lambda t: [
        init.Xavier()(shape, np.float32, np.random.default_rng(0)).shape == shape
        or pytest.fail(str(shape)) for shape in ((0, 0), (0, 3, 0))]),
    # torch's DataLoader yields [X, y] lists: taken as the training loop takes them
    ("evaluate list batches", lambda t: (lambda net, y: [
        fs.evaluate_accuracy(net, [[X42, y]]) == fs.evaluate_accuracy(net, [(X42, y)])
        or pytest.fail("accuracy"),
        fs.evaluate_loss(net, [[X42, y]], losses.SoftmaxCrossEntropyLoss())
        == fs.evaluate_loss(net, [(X42, y)], losses.SoftmaxCrossEntropyLoss())
        or pytest.fail("loss")])(dense(), np.array([0, 1, 2, 1]))),
    ("set_num_threads numpy int", lambda t: (fs.set_num_threads(np.int64(1)),
                                             fs.set_num_threads(None))),
    # numbers beyond float32 range are refused only where the kernel computes in float32
    ("sgd lr beyond float32 on float64", lambda t: _close(
        K.sgd_update(np.ones(3), np.zeros(3), 1e300, 1, weight_decay=0.0), np.ones(3))),
    ("gather scale beyond float32 into float64", lambda t: _close(
        K.gather_rows(np.array([[0, 1]], np.uint8), [0], scale=1e300, dtype=np.float64),
        [[0.0, 1e300]])),
]


@pytest.mark.parametrize("check", [pytest.param(c, id=i) for i, c in ACCEPTED])
def test_accepted_input_gives_the_right_answer(tmp_path, check):
    check(tmp_path)


# ---- the command line -------------------------------------------------------------------------

CLI_BAD = [
    # (argv, exit status, regex on stderr)
    ("linreg --examples 0", 2, r"argument --examples: expected a positive integer, got 0"),
    ("linreg --examples -5", 2, r"argument --examples"),
    ("linreg --examples 1.5", 2, r"argument --examples: expected a positive integer, got '1.5'"),
    ("linreg --examples abc", 2, r"argument --examples"),
    ("linreg --features 0", 2, r"argument --features"),
    ("linreg --batch-size 0", 2, r"argument --batch-size"),
    ("linreg --batch-size abc", 2, r"argument --batch-size"),
    ("linreg --lr 0", 2, r"argument --lr: expected a positive finite number"),
    ("linreg --lr -1", 2, r"argument --lr"),
    ("linreg --lr nan", 2, r"argument --lr: expected a positive finite number, got nan"),
    ("linreg --lr inf", 2, r"argument --lr"),
    ("linreg --lr abc", 2, r"argument --lr"),
    ("linreg --epochs 0", 2, r"argument --epochs"),
    ("linreg --seed -1", 2, r"argument --seed: expected a non-negative integer"),
    ("linreg --seed x", 2, r"argument --seed"),
    ("linreg --threads 0", 2, r"argument --threads"),
    ("linreg --threads 100000", 2, r"argument --threads: expected an integer from 1 to 1024"),
    ("linreg --lr 1e6 --examples 200", 1,
     r"fastshallow linreg: error: the training loss became NaN or infinite in epoch 1, "
     r"minibatch \d+"),
    ("linreg --bogus 3", 2, r"unrecognized arguments: --bogus"),
    ("train --label-smoothing 1.5", 2, r"argument --label-smoothing"),
    ("train --label-smoothing nan", 2, r"argument --label-smoothing"),
    ("train --momentum 1", 2, r"argument --momentum: expected a number in \[0, 1\)"),
    ("train --momentum abc", 2, r"argument --momentum"),
    ("train --weight-decay nan", 2, r"--weight-decay must be a finite number >= 0"),
    ("train --weight-decay -1", 2, r"--weight-decay"),
    ("train --weight-decay inf", 2, r"--weight-decay"),
    ("train --recipe fast", 2, r"argument --recipe: invalid choice"),
    ("train --schedule linear", 2, r"argument --schedule: invalid choice"),
    ("train --batch-size 0", 2, r"argument --batch-size"),
    ("train --epochs -1", 2, r"argument --epochs"),
    # Output paths are checked before anything is loaded or trained.
    ("train --data-dir {tmp}/nope", 2, r"--data-dir: .*nope' is not a folder"),
    ("train --plot {tmp}/curve.txt", 2, r"--plot must end in an image extension"),
    ("train --plot {tmp}/nope/curve.png", 2, r"--plot: folder .*nope' does not exist"),
    ("train --predictions {tmp}/p.doc", 2, r"--predictions must end in an image extension"),
    ("train --save {tmp}/nope/m.npz", 2, r"--save: folder .*nope' does not exist"),
    ("train --save {tmp}", 2, r"--save: .* is a folder, not a file name"),
    ("bogus", 2, r"argument command: invalid choice: 'bogus'"),
    ("", 2, r"the following arguments are required: command"),
]


@pytest.mark.parametrize("argv, status, match", CLI_BAD, ids=[r[0] or "(none)" for r in CLI_BAD])
def test_command_line_refuses_bad_arguments(argv, status, match, tmp_path, capsys):
    args = argv.format(tmp=tmp_path).split()
    try:
        rc = cli.main(args)
    except SystemExit as exc:
        rc = exc.code
    finally:
        fs.set_num_threads(None)
    err = capsys.readouterr().err
    assert rc == status, err
    assert __import__("re").search(match, err), err
    assert "Traceback" not in err


def test_command_line_process_exit_status_and_short_batches(tmp_path):
    """The real process: refusals exit 1 or 2 with one line and no traceback; a batch larger
    than the data trains."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env, timeout=120,
                            cwd=tmp_path)
    bad = run([sys.executable, "-m", "fastshallow", "linreg", "--lr", "nan"])
    assert bad.returncode == 2 and "--lr" in bad.stderr and "Traceback" not in bad.stderr
    ok = run([sys.executable, "-m", "fastshallow", "linreg", "--examples", "10",
              "--batch-size", "100"])
    assert ok.returncode == 0, ok.stderr
    assert "error in estimating b" in ok.stdout


# ---- training-loop problems found here and fixed in _fused.py / training.py -----------------

RESERVED = [
    ("fused path trusts len(dataset) == rows of as_arrays() (segfault)", """
        class DS:
            def __len__(self): return 100000
            def __getitem__(self, i): return X[i], y[i]
            def as_arrays(self): return X, y, None, (20,)
        net = fs.nn.Dense(1, in_units=20)
        fs.train(net, fs.DataLoader(DS(), 10, shuffle=True), None, fs.losses.L2Loss(), 1,
                 fs.optim.SGD(net.parameters(), lr=0.1), verbose=False)
        """),
    ("a batch larger than the data is one short batch (fused path)", """
        net = fs.nn.Dense(1, in_units=20)
        fs.train(net, fs.load_array((X, y), 10**12), None, fs.losses.L2Loss(), 1,
                 fs.optim.SGD(net.parameters(), lr=0.1), verbose=False)
        raise ValueError("trained: one batch")
        """),
    ("loop path ignores a bad num_threads", """
        net = fs.nn.Dense(1, in_units=20, dtype=np.float64)
        fs.train(net, fs.load_array((X, y), 10), None, fs.losses.L2Loss(), 1,
                 fs.optim.SGD(net.parameters(), lr=0.1), verbose=False, num_threads=0)
        """),
    ("loop path: batches that are not (X, y) pairs give an unnamed unpacking error", """
        net = fs.nn.Dense(1, in_units=20)
        fs.train(net, [(X, y, y)], None, fs.losses.L2Loss(), 1,
                 fs.optim.SGD(net.parameters(), lr=0.1), verbose=False)
        """),
]


@pytest.mark.parametrize("code", [pytest.param(c, id=i) for i, c in RESERVED])
def test_training_loop_problems(code):
    prog = ("import numpy as np, fastshallow as fs\n"
            "X = np.random.default_rng(0).standard_normal((100, 20)).astype(np.float32)\n"
            "y = np.zeros(100, np.float32)\n"
            "try:\n" + textwrap.indent(textwrap.dedent(code), "    ") +
            "except (TypeError, ValueError) as exc:\n"
            "    import re, sys\n"
            "    sys.exit(0 if re.search(r'batch|dataset|num_threads|iterator|pair|rows', "
            "str(exc)) else 3)\n"
            "raise SystemExit(4)\n")
    r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}: {r.stderr[-500:]}"


def test_fused_evaluation_of_non_contiguous_features():
    """A dataset whose as_arrays() hands out Fortran-ordered features: evaluate_accuracy must
    give the per-batch answer.  The freed copy is usually reused by the kernel's own scratch
    buffer of the same size (32 rows on one thread), so the bug shows as wrong accuracies."""
    rng = np.random.default_rng(0)
    wrong = 0
    for trial in range(60):
        X = np.asfortranarray(rng.standard_normal((32, 20)).astype(np.float32) * 10)
        y = rng.integers(0, 10, 32)

        class Columns:
            def __len__(self):
                return len(X)

            def __getitem__(self, i):
                return X[i], y[i]

            def as_arrays(self):
                return X, y, None, (20,)

        net = nn.Dense(10, in_units=20, rng=trial)
        fast = fs.evaluate_accuracy(net, fs.DataLoader(Columns(), 8), num_threads=1)
        wrong += fast != fs.accuracy(net(X), y) / len(y)
    assert wrong == 0, f"{wrong} of 60 accuracies wrong"
