"""The small piece of reverse-mode bookkeeping a shallow network needs.

There is no general autograd engine: every layer and loss knows its own analytic gradient.  An
array a layer or loss returns is a :class:`Tensor` (a NumPy array) that remembers the function
sending a gradient back to its producer, so ``loss(net(X), y).backward()`` fills each parameter's
``.grad``.  Anything computed from a Tensor with plain NumPy is a plain array again.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Optional

import numpy as np

from . import _checks as C

__all__ = ["Parameter", "Tensor", "tensor", "record"]


def _param_dtype(name: str, dtype) -> np.dtype:
    """A parameter's dtype: float32 or float64 in native byte order, the only buffers the
    compiled updates read ('>f4' is taken as float32: the same numbers)."""
    try:
        dt = C.native(dtype)
    except Exception:
        raise TypeError(f"{name}: dtype must be float32 or float64, got {dtype!r:.60}") from None
    if dt not in C.FLOAT_DTYPES:
        raise TypeError(f"{name}: dtype must be float32 or float64, got {dt}")
    return dt


def _own(dtype: np.dtype) -> np.dtype:
    """NumPy's own instance of the float32 or float64 `dtype` equals: the compiled update's
    quick test (SGD.step) recognizes a parameter's dtype by identity, which an equal copy
    (byte-swapped data made native, an unpickled array) fails."""
    return C.FLOAT_DTYPES[dtype == C.FLOAT_DTYPES[1]]


class Parameter:
    """A trainable array with its gradient.

    ``.data`` is a C-contiguous float array that optimizers update in place; ``.grad`` has the
    same shape and receives the gradient of the *summed* minibatch loss on ``backward()``
    (overwritten, not accumulated, as in Gluon's default).  A layer whose input size is not known
    yet holds *deferred* parameters: they exist (an optimizer can be built on them) but reading
    their values raises until the first forward pass gives them a shape.

    dtype: float32 or float64 (a byte-swapped float is taken as the native one of its size);
    without it, float32 or float64 values keep their precision and others become float32."""

    def __init__(self, data=None, name: str = "param", dtype=None):
        self.name = name
        self._data = self._grad = None
        self._dtype = None if dtype is None else _param_dtype(name, dtype)
        if data is not None:
            self.initialize(data)

    def initialize(self, data) -> None:
        """Give the parameter its values, `data` (any array-like; a parameter that has values
        keeps its shape), and reset its gradient to zeros."""
        given = C.as_array(self.name, data, dtypes=None)
        dtype = self._dtype
        if dtype is None:
            # '>f8' data hold float64 numbers: keep their precision, in native order.
            dtype = C.native(given.dtype)
            if dtype not in C.FLOAT_DTYPES:
                dtype = np.dtype(np.float32)
        arr = C.as_array(self.name, given, dtype=dtype)
        # A parameter keeps its shape for life: its layer, its optimizer's momentum buffer and
        # the fused trainer all size their buffers from it.
        if self._data is not None and arr.shape != self._data.shape:
            raise ValueError(f"{self.name}: new data must have shape {self._data.shape}, got "
                             f"{arr.shape} (a parameter keeps its shape; create a new one "
                             "for another shape)")
        dtype = _own(arr.dtype)
        self._data = np.array(arr, copy=True, order="C", dtype=dtype)
        self._grad = np.zeros_like(self._data)
        self._dtype = dtype

    def __setstate__(self, state: dict) -> None:
        # Unpickled arrays carry equal but distinct dtype objects: give them NumPy's own, as
        # initialize does (views of the same memory, so nothing is copied).
        for key in ("_data", "_grad"):
            a = state.get(key)
            if isinstance(a, np.ndarray) and a.dtype in C.FLOAT_DTYPES:
                state[key] = a.view(_own(a.dtype))
        if state.get("_dtype") in C.FLOAT_DTYPES:
            state["_dtype"] = _own(state["_dtype"])
        self.__dict__.update(state)

    @property
    def initialized(self) -> bool:
        """Whether the parameter has values (False while its layer's input size is unknown)."""
        return self._data is not None

    def _need(self):
        if self._data is None:
            raise RuntimeError(f"parameter {self.name!r} is not initialized yet: its layer infers "
                               "its input size on the first call -- pass in_units= or call the "
                               "network on a batch first")

    # Read on every minibatch (the book's sgd reads both): the test is inlined, and _need
    # called only to raise.
    @property
    def data(self) -> np.ndarray:
        """The values, updated in place by the optimizers (Gluon's ``.data()``)."""
        data = self._data
        if data is None:
            self._need()
        return data

    @property
    def grad(self) -> np.ndarray:
        """The gradient of the summed minibatch loss, written by ``backward()``."""
        if self._data is None:
            self._need()
        return self._grad

    @property
    def shape(self) -> tuple:
        """The values' shape (raises while deferred)."""
        return self.data.shape

    @property
    def dtype(self) -> Optional[np.dtype]:
        """float32 or float64 (None for a deferred parameter given no dtype)."""
        return self._dtype

    def set_data(self, value) -> None:
        """Overwrite the values with `value` (same shape; converted to this parameter's
        dtype)."""
        value = C.as_array(self.name, value, dtype=self.dtype)
        if value.shape != self.data.shape:
            raise ValueError(f"{self.name}: new data must have shape {self.data.shape}, "
                             f"got {value.shape}")
        self._data[...] = value

    def attach_grad(self) -> None:
        """Allocate (reset) the gradient buffer, as MXNet's ``attach_grad``."""
        self._need()
        self._grad = np.zeros_like(self._data)

    def zero_grad(self) -> None:
        """Set the gradient to zeros (backward overwrites it anyway)."""
        if self._grad is not None:
            self._grad[...] = 0

    def __repr__(self) -> str:
        if self._data is None:
            return f"Parameter {self.name} (deferred, dtype={self._dtype})"
        return f"Parameter {self.name} (shape={self._data.shape}, dtype={self._data.dtype})"


class Tensor(np.ndarray):
    """A NumPy array produced by a layer or a loss, with ``.backward()``.

    ``grad_fn(G)`` receives the gradient of the (summed) objective with respect to this array.
    The library's own grad_fns also take ``G = None`` for all ones (the gradient of
    ``self.sum()``), which saves building and multiplying by an array of ones on every
    minibatch; a grad_fn given to :func:`tensor` always receives an array.  Ufunc results and
    reductions other than :meth:`sum` / :meth:`mean` are plain arrays."""

    grad_fn: Optional[Callable[[Optional[np.ndarray]], None]] = None
    _takes_none = False  # grad_fn accepts None for all ones (see _tensor)
    _probabilities = False  # made by scratch.softmax (see scratch.cross_entropy)

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        # Results of arithmetic are new values with no way back: return plain arrays.
        out = np.asarray(arr)
        return out[()] if return_scalar else out

    def backward(self, grad=None) -> None:
        """Send `grad` (default: ones, i.e. the gradient of ``self.sum()``) back to the
        parameters that produced this array."""
        if self.grad_fn is None:
            raise RuntimeError("this array was not produced by a fastshallow layer or loss "
                               "(or it was derived from one with NumPy), so it has no gradient "
                               "to send back")
        if grad is None:
            self.grad_fn(None if self._takes_none else np.ones(self.shape, self.dtype))
            return
        g = C.as_array("grad", grad, dtype=self.dtype)
        if g.shape != self.shape:
            try:
                g = np.broadcast_to(g, self.shape)
            except ValueError:
                raise ValueError(f"grad must have shape {self.shape} (or broadcast to it), got "
                                 f"{g.shape}") from None
        self.grad_fn(np.ascontiguousarray(g))

    def sum(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        """As ndarray.sum; the total of all values (no axis) is a Tensor with backward."""
        s = np.asarray(self).sum(axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kw)
        if axis is not None or out is not None or keepdims or self.grad_fn is None:
            return s
        return _tensor(np.asarray(s), lambda g: self.backward(
            None if g is None else np.full(self.shape, g, self.dtype)))

    def mean(self, axis=None, dtype=None, out=None, keepdims=False, **kw):
        """As ndarray.mean; the mean of all values (no axis) is a Tensor with backward."""
        s = np.asarray(self).mean(axis=axis, dtype=dtype, out=out, keepdims=keepdims, **kw)
        if axis is not None or out is not None or keepdims or self.grad_fn is None:
            return s
        n = max(self.size, 1)
        return _tensor(np.asarray(s),
                       lambda g: self.backward(np.full(self.shape, (1 if g is None else g) / n,
                                                       self.dtype)))

    def detach(self) -> np.ndarray:
        """The values as a plain array."""
        return np.asarray(self)


def record():
    """A context manager that does nothing: it exists so that the book's
    ``with autograd.record():`` blocks run unchanged.  MXNet only builds a graph inside it;
    here every layer and loss output always carries its way back, recorded or not."""
    return nullcontext()


def tensor(values: np.ndarray, grad_fn: Callable[[np.ndarray], None]) -> Tensor:
    """`values` as a Tensor whose ``backward(G)`` calls ``grad_fn(G)`` with the gradient of
    the objective with respect to them (an array of their shape): how a layer or loss of
    one's own joins ``loss(net(X), y).backward()``."""
    t = np.asarray(values).view(Tensor)
    t.grad_fn = grad_fn
    return t


def _tensor(values: np.ndarray, grad_fn: Callable[[Optional[np.ndarray]], None]) -> Tensor:
    """:func:`tensor` for the library's own grad_fns, which take None for all ones."""
    t = tensor(values, grad_fn)
    t._takes_none = True
    return t
