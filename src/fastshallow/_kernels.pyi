"""Type stubs for the compiled kernels (``_kernels.pyx``).

These functions trust their caller and check nothing: call them through
:mod:`fastshallow.kernels`, which validates.  Array arguments are C-contiguous; every float array
of one call has the same dtype (float32 or float64, the kernel's fused type); integer index and
label arrays are int64 (fused_sgd also takes uint8 labels).  ``nt`` is the OpenMP thread count
(1 runs on the calling thread).
"""
from typing import Any

import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Int64s = npt.NDArray[np.int64]
_Rows = npt.NDArray[np.uint8] | npt.NDArray[np.float32] | npt.NDArray[np.float64]

__test__: dict[str, str]  # Cython's doctest table (empty); declared so that stubtest is clean

# ---- build information ------------------------------------------------------------------------

def openmp_enabled() -> bool:
    """True when the kernels were compiled with OpenMP."""

def compiler() -> str:
    """The compiler that built the kernels, with its version."""

def isa() -> str:
    """The instruction set the matrix products use on this CPU (chosen at run time)."""

def max_threads() -> int:
    """OpenMP's default team size in the calling thread (OMP_NUM_THREADS, lowered or raised by
    omp_set_num_threads, as threadpoolctl calls it); 1 in a serial build."""

# ---- layer kernels (outputs are written in place) ---------------------------------------------

def matmul_bias(X: _Floats, W: _Floats, b: _Floats | None, out: _Floats, nt: int) -> None:
    """out = X @ W + b (b may be None); X (n, k), W (k, m), out (n, m); all sizes > 0."""

def matmul_bias_backward(X: _Floats, G: _Floats, dW: _Floats, db: _Floats | None,
                         nt: int) -> None:
    """dW = X.T @ G and db = G.sum(axis=0) (db may be None); all sizes > 0."""

def matmul_bias_backward_into_if_plain(X: object, G: object, dW: object, db: object,
                                       nt: int) -> bool:
    """dW = X.T @ G, db = G.sum(0) into dW, db and True when all are exactly what the kernel
    takes, else False."""

def matmul_bias_backward_if_plain(X: object, G: object, nt: int,
                                  serial_work: int) -> tuple[_Floats, _Floats] | None:
    """(X.T @ G, G.sum(0)) when X and G are exactly what the kernel takes, else None."""

def softmax_cross_entropy(Z: _Floats, y: _Int64s, smooth: float, loss: _Floats, G: _Floats,
                          nt: int, chunk: int = ...) -> None:
    """Per-row loss (n,) and dL/dZ (n, m) of softmax cross-entropy, labels in [0, m),
    label smoothing `smooth`; `chunk` (> 0) rows per call of the C kernel, which the results do
    not depend on."""

def softmax(Z: _Floats, out: _Floats, log: bool, nt: int) -> None:
    """Row-wise softmax of Z into out, or log-softmax when `log`."""

def sgd_update(param: _Floats, grad: _Floats, lr: float, batch_size: float, momentum: float,
               weight_decay: float, velocity: _Floats | None, nt: int) -> None:
    """In place on 1-D `param` (and `velocity`, when given):
    param -= lr * (grad / batch_size + weight_decay * param), through the velocity buffer."""

def sgd_update_if_plain(param: object, grad: object, lr: object, batch_size: object,
                        momentum: object, weight_decay: object, velocity: object, nt: int,
                        serial_work: int) -> bool:
    """Run the update and return True when every argument is exactly what it takes."""

def gather_rows(src: _Rows, idx: _Int64s, out: _Floats, scale: float, nt: int) -> None:
    """out[i, :] = src[idx[i], :] * scale, converted to out's dtype; src is 2-D uint8 or out's
    float dtype."""

def gather_rows_if_plain(src: object, idx: object, out: object, scale: object, nt: int,
                         serial_work: int) -> _Floats | None:
    """src[idx] * scale into `out` (allocated when None) when every argument is exactly what
    the kernel takes, else None."""

def regression_loss(P: _Floats, T: _Floats, huber: bool, delta: float, loss: _Floats,
                    G: _Floats, nt: int) -> None:
    """Per-row L2 (or Huber) loss of P against T (n x m, m > 0), averaged over the outputs, and
    its gradient with respect to P."""

def regression_loss_if_plain(P: object, T: object, huber: bool, delta: float, nt: int,
                             serial_work: int) -> tuple[_Floats, _Floats] | None:
    """(loss, grad) when P is a 1-D or 2-D C-contiguous non-empty float array and T a
    C-contiguous array of its type and size, else None."""

# ---- fused training ---------------------------------------------------------------------------

def panel_width(dtype: npt.DTypeLike) -> int:
    """Output columns per packed weight panel: 16 for float32, 8 for float64."""

def to_working_layout(W: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """W (k, m) -> a new array, 64-byte aligned, in the layout the fused kernels update: W.T
    when m <= 16, else packed panels."""

def from_working_layout(P: npt.NDArray[Any], k: int, m: int,
                        out: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Inverse of to_working_layout, written into `out` (k, m), which is returned."""

def fused_sgd(X: _Rows, labels: _Int64s | npt.NDArray[np.uint8] | None,
              targets: _Floats | None, perm: _Int64s, batch: int, loss: int, smooth: float,
              delta: float, Wp: _Floats, b: _Floats, V: _Floats | None, vb: _Floats | None,
              lrs: _Floats, momentum: float, weight_decay: float, scale: float,
              batch_loss: npt.NDArray[np.float64], batch_hits: _Int64s, t0: int, t1: int,
              nt: int, scratch: tuple[np.ndarray, ...]) -> int:
    """Run minibatches [t0, t1) of an epoch (gather, forward, loss, gradient, SGD update) in one
    call, updating Wp, b (and V, vb) in place and filling batch_loss / batch_hits.  Returns the
    index of the first batch whose loss was not finite, or -1."""

def fused_plan(batch: int, k: int, m: int, dtype: Any, x_itemsize: int) -> str:
    """How fused_sgd sums a minibatch's weight gradient for these sizes: "panels", "rows" or
    "shares"."""

def fused_split(cum: Any, n: int, unit: int) -> list[tuple[int, int, int, int]]:
    """How fused_sgd splits n items among threads whose shares before thread i add up to
    cum[i]: for each thread, its items [lo, hi) and its chunks of `unit` items [c0, c1)."""

def fused_scratch(batch: int, k: int, m: int, dtype: Any,
                  x_itemsize: int) -> tuple[np.ndarray, ...]:
    """Work buffers for fused_sgd over examples of `x_itemsize` bytes per feature (1: uint8),
    sized for one full minibatch."""

def fused_forward(X: _Rows, idx: _Int64s | None, Wp: _Floats, b: _Floats, scale: float,
                  out: _Floats | None, nt: int, labels: _Int64s | None = None) -> int | None:
    """out = (scale * X[idx]) @ W + b with W in the working layout (idx None: all rows); with
    `labels`, returns how many rows' argmax (NumPy's) is their label, and `out` may be None
    (no outputs kept)."""

PERM_BUCKETED: int
PERM_BLOCK: int

def permutation(n: int, seed: int, nt: int = 1, bucketed_from: int = ...,
                block: int = ...) -> np.ndarray:
    """A random permutation of range(n) as int64, determined by `seed` (and, from
    `bucketed_from` rows on, by `block`; never by `nt`)."""
    ...

def matmul_bias_if_plain(X: Any, W: Any, b: Any, out: Any, nt: int,
                         serial_work: int) -> np.ndarray | None:
    """X @ W + b (into `out`) when the arguments are exactly what the kernel takes, else None."""
    ...
