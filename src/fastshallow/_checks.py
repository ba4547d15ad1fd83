"""Argument checks shared by every public entry point.

Each check either returns a value the compiled kernels can trust (right dtype, C-contiguous,
in range) or raises a TypeError / ValueError naming the argument, what was expected and what came.
"""
from __future__ import annotations

import math
import numbers
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES
F32_MAX = float(np.finfo(np.float32).max)
INT64_MAX = np.iinfo(np.int64).max
_FAST_DTYPES = frozenset(FLOAT_DTYPES)


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"array of dtype {a.dtype} and shape {a.shape}"
    return f"{type(a).__name__} {a!r}"[:120]


def as_array(name: str, a, *, ndim: int | tuple | None = None, dtypes=FLOAT_DTYPES,
             dtype=None, allow_empty: bool = True, finite: bool = False) -> np.ndarray:
    """`a` as a C-contiguous ndarray of one of `dtypes` (or converted to `dtype`).

    Arrays of another numeric kind are converted only when `dtype` is given; object, string,
    complex and bool arrays are always refused."""
    # The common case -- already a C-contiguous float array -- costs well under a microsecond,
    # which matters when a kernel call on a minibatch takes a few.
    if (type(a) is np.ndarray and dtype is None and not finite and allow_empty
            and a.dtype in _FAST_DTYPES and a.flags.c_contiguous and a.flags.aligned
            and (ndim is None or a.ndim == ndim) and dtypes is FLOAT_DTYPES and a.ndim):
        return a
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like, got {_describe(a)} ({exc})") from None
    kind = arr.dtype.kind
    if kind in "OUSVcbMm":
        what = {"O": "object", "U": "string", "S": "bytes", "V": "structured", "c": "complex",
                "b": "bool", "M": "datetime", "m": "timedelta"}[kind]
        raise TypeError(f"{name} must hold real numbers, got a {what} array (dtype {arr.dtype})")
    # np.asarray(order="C") rather than np.ascontiguousarray, which turns a scalar into (1,).
    if dtype is not None:
        arr = np.asarray(arr, dtype=dtype, order="C")
    elif dtypes is not None and arr.dtype not in dtypes:
        if native(arr.dtype) not in dtypes:
            names = " or ".join(str(d) for d in dtypes)
            raise TypeError(f"{name} must have dtype {names}, got {arr.dtype}")
        # Byte-swapped ('>f8'): the same numbers, which the kernels read only in native order.
        # The array is only read, so a native copy serves (as elsewhere in the library).
        arr = np.asarray(arr, dtype=native(arr.dtype), order="C")
    else:
        arr = np.asarray(arr, order="C")
    if not arr.flags.aligned:  # (np.frombuffer at an odd offset) C reads it as its type: copy
        arr = arr.copy()
    if ndim is not None:
        allowed = ndim if isinstance(ndim, tuple) else (ndim,)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be {want}, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if finite and arr.dtype.kind == "f" and arr.size and not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr.reshape(-1)))
        raise ValueError(f"{name} must be finite, found {bad.size} NaN/inf value(s) "
                         f"(first at flat index {bad[0]})")
    return arr


def _swapped(name: str, dt: np.dtype, allowed, use: str) -> str | None:
    """The refusal of a byte-swapped float whose native type is `allowed` for an array the
    kernels write, or None for any other dtype.  It holds the right numbers, but a native copy
    would leave the caller's array unchanged, so it cannot be converted as inputs are."""
    if dt.isnative or native(dt) not in allowed:
        return None
    want = " or ".join(str(d) for d in allowed)
    order = "big-endian" if dt.byteorder == ">" else "little-endian"
    return (f"{name} must be native {want}: byte-swapped ({order}) {native(dt)} is not native: "
            f"{name} is {use}, so it cannot be converted here; convert it once with "
            f".astype({str(native(dt))!r}) and pass that")


def as_out(name: str, out, shape: tuple, dtype, inputs=()) -> np.ndarray:
    """A caller-supplied output buffer: exact shape and dtype, C-contiguous, writeable, and not
    sharing memory with any input (the kernels read inputs while they write outputs)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {_describe(out)}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {out.shape}")
    if out.dtype != np.dtype(dtype):
        raise TypeError(_swapped(name, out.dtype, (np.dtype(dtype),), "written")
                        or f"{name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    if not (out.flags.c_contiguous and out.flags.aligned):
        raise ValueError(f"{name} must be C-contiguous and aligned to its element size")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    for other_name, other in inputs:
        if other is not None and np.may_share_memory(out, other):
            raise ValueError(f"{name} must not overlap {other_name}")
    return out


def as_writeable(name: str, a, dtypes=FLOAT_DTYPES) -> np.ndarray:
    """An array updated in place: must already be C-contiguous, writeable, of a float dtype."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (it is updated in place), "
                        f"got {_describe(a)}")
    if a.dtype not in dtypes:
        raise TypeError(_swapped(name, a.dtype, dtypes, "updated in place")
                        or f"{name} must have dtype float32 or float64, got {a.dtype}")
    if not (a.flags.c_contiguous and a.flags.aligned):
        raise ValueError(f"{name} must be C-contiguous and aligned to its element size (it is "
                         "updated in place)")
    if not a.flags.writeable:
        raise ValueError(f"{name} is read-only and cannot be updated in place")
    return a


def parameter_buffers(name: str, data: np.ndarray, grad: np.ndarray) -> None:
    """Raise unless a Parameter's `data` and `grad` can go to the compiled update as they are.

    A Parameter allocates both itself (C-contiguous, of its native float dtype), but an
    array's dtype and writeable flag can be reassigned in place and its size changed
    (ndarray.resize), and the update reads as many elements of data's type from grad as data
    has.  This runs for every parameter on every minibatch, so the usual case is recognized by
    identity, size and flag alone; anything else is checked in full."""
    dt = data.dtype
    if (grad.dtype is dt and (dt is _F32 or dt is _F64) and grad.size == data.size
            and data.flags.writeable):
        return
    as_writeable(f"parameter {name!r}", data)
    if grad.dtype != data.dtype:
        raise TypeError(f"the gradient of {name!r} has dtype {grad.dtype}, the parameter "
                        f"{data.dtype}")
    if grad.shape != data.shape:
        raise ValueError(f"the gradient of {name!r} has shape {grad.shape}, the parameter "
                         f"{data.shape}")
    if not (grad.flags.c_contiguous and grad.flags.aligned):
        raise ValueError(f"the gradient of {name!r} must be C-contiguous and aligned")


def gradient_buffer(name: str, grad: np.ndarray, shape: tuple, dtype: np.dtype) -> None:
    """Raise unless a Parameter's gradient buffer `grad` can take a compiled backward's `shape`
    values of `dtype` as it is: its size, dtype, layout and writeable flag can all be changed
    in place (``resize``, assigning ``.dtype``, ``.shape``, ``.strides`` or ``.flags``)."""
    if grad.dtype != dtype:
        raise TypeError(f"the gradient buffer of {name!r} has dtype {grad.dtype}; the layer's "
                        f"gradient is {dtype}")
    if grad.shape != shape:
        raise ValueError(f"the gradient buffer of {name!r} has shape {grad.shape}; the layer's "
                         f"gradient has shape {shape}")
    as_writeable(f"the gradient buffer of {name!r}", grad)


def one_per_row(shape: tuple) -> bool:
    """Whether an array of `shape` holds at most one value per row: (n,) or (n, 1) (or a
    scalar), the shapes labels and predicted labels may have."""
    return len(shape) <= 1 or (len(shape) == 2 and shape[1] == 1)


def same_rows(name: str, shape: tuple, ref_name: str, ref_shape: tuple) -> None:
    """Raise unless `shape` has `ref_shape`'s rows (first axis) and as many values in each:
    targets of shape (n,) and (n, 1) fit (n, 1) and (n,) predictions, but a transposed array
    of the same size, read in the predictions' shape, would pair values of different
    examples.  Two arrays without values pair nothing, whatever their shapes."""
    if (shape[:1] != ref_shape[:1] or math.prod(shape[1:]) != math.prod(ref_shape[1:])) and (
            math.prod(shape) or math.prod(ref_shape)):
        raise ValueError(f"{name} must have one target per prediction, row by row: {ref_name} "
                         f"has shape {ref_shape}, {name} has shape {shape}")


def as_labels(name: str, y, n_classes: int | None = None, length: int | None = None) -> np.ndarray:
    """Integer class labels as a C-contiguous int64 vector, each in [0, n_classes).

    Float labels are accepted when every value is a whole number (as data loaders often give).
    The range is checked on the values as given, before any conversion, so an out-of-range
    uint64 or float label is reported as itself rather than as what int64 would wrap it to."""
    try:
        arr = np.asarray(y)
    except Exception as exc:
        raise TypeError(f"{name} must be array-like, got {_describe(y)} ({exc})") from None
    if arr.dtype.kind == "f":
        if arr.size and not np.isfinite(arr).all():
            raise ValueError(f"{name} must be finite class indices, found NaN/inf")
        if arr.size and not (arr == np.round(arr)).all():
            raise ValueError(f"{name} must be whole-number class indices, found fractional values")
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer class indices, got dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have {length} entries (one per row), got {arr.shape[0]}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0:
            raise ValueError(f"{name} must be >= 0, found {lo}")
        limit = INT64_MAX + 1 if n_classes is None else n_classes
        if hi >= limit:
            raise ValueError(f"{name} must be < {limit}"
                             + (" (the number of classes)" if n_classes is not None else "")
                             + f", found {hi}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_indices(name: str, idx, n: int) -> np.ndarray:
    """Row indices as a C-contiguous int64 vector, each in [0, n)."""
    try:
        arr = np.asarray(idx)
    except Exception as exc:
        raise TypeError(f"{name} must be array-like, got {_describe(idx)} ({exc})") from None
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # an empty list arrives as float64
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > INT64_MAX:
        raise ValueError(f"{name} holds values past int64")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    # One reduction instead of min and max: read as unsigned, a negative index is larger than
    # any valid one.  This runs on every minibatch.
    if arr.size and int(arr.view(np.uint64).max()) >= n:
        lo, hi = int(arr.min()), int(arr.max())
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} must be in [0, {n}) (the rows of the source), found {bad}")
    return arr


def positive_int(name: str, v, *, allow_zero: bool = False) -> int:
    # type() before the ABC check: isinstance against numbers.Integral is slow, and this runs
    # on every optimizer step.
    if type(v) is not int and (isinstance(v, (bool, np.bool_))
                               or not isinstance(v, numbers.Integral)):
        raise TypeError(f"{name} must be an int, got {_describe(v)}")
    v = int(v)
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")
    return v


def function(name: str, f, what: str = "callable"):
    """`f` when it can be called; `what` says what it should be (e.g. "a loss function")."""
    if not callable(f):
        raise TypeError(f"{name} must be {what}, got {_describe(f)}")
    return f


def boolean(name: str, v, *, allow_none: bool = False) -> bool | None:
    """A bool (or NumPy bool, or the int 0 or 1, as in verbose=1): a string such as "no" or
    "False" is truthy, so taking any value's truth would quietly do the opposite of what was
    meant."""
    if v is None and allow_none:
        return None
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, numbers.Integral) and v in (0, 1)):
        return bool(v)
    what = "None, True or False" if allow_none else "True or False"
    raise TypeError(f"{name} must be {what}, got {_describe(v)}")


def checked_property(name: str, check, doc: str) -> property:
    """A property kept as ``_<name>`` whose every assignment, the constructor's included, goes
    through ``check(name, value)``: settings users change between epochs are refused when
    assigned, not halfway through the next epoch."""
    attr = "_" + name

    def assign(self, value) -> None:
        setattr(self, attr, check(name, value))

    return property(operator.attrgetter(attr), assign, doc=doc)


def label_smoothing(v) -> float:
    """A label smoothing: a real in [0, 1] (1 is the uniform target)."""
    return real("label_smoothing", v, low=0.0, high=1.0)


def huber_delta(v) -> float:
    """A Huber threshold: a real > 0."""
    return real("delta", v, low=0.0, low_open=True)


def float_dtype(name: str, dtype) -> np.dtype:
    """A dtype argument that must name float32 or float64."""
    try:
        if dtype is None:  # np.dtype(None) would quietly be float64
            raise TypeError
        dt = np.dtype(dtype)
    except Exception:
        raise TypeError(f"{name} must be float32 or float64, got {_describe(dtype)}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def native(dtype) -> np.dtype:
    """`dtype` in this machine's byte order.  '>f4' holds the same numbers as float32 but
    compares unequal to it, so a dtype choice made on it would quietly differ."""
    dt = np.dtype(dtype)
    # from its string, NumPy's own instance of it ('<f4' is np.dtype(np.float32) itself),
    # which the hot paths recognize by identity
    return dt if dt.isnative else np.dtype(dt.newbyteorder("=").str)


def digits(v) -> int:
    """About how many decimal digits the integer part of `v` has, for a message about a number
    too large for a float (str() may refuse to write such an int out)."""
    return int(abs(int(v)).bit_length() * math.log10(2)) + 1


def real(name: str, v, *, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False) -> float:
    """A finite real scalar within the given bounds."""
    if type(v) is not float and type(v) is not int and (
            isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real)):
        raise TypeError(f"{name} must be a real number, got {_describe(v)}")
    try:
        v = float(v)
    except OverflowError:  # an int (or Fraction, Decimal) beyond float range
        raise ValueError(f"{name} must be finite, got a number of about {digits(v)} "
                         "digits") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {v}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {v}")
    return v


def finite_in(name: str, v: float, dtype, what: str) -> float:
    """`v`, a finite float, when it is finite in `dtype` too: a kernel working in float32
    would compute with inf (and 0 * inf is NaN) where NumPy's float64 arithmetic would not.
    `what`: the arrays of that dtype, for the message."""
    if dtype == _F32 and abs(v) > F32_MAX:
        raise ValueError(f"{name} must be at most {F32_MAX:g} in magnitude for {what} "
                         f"(the kernel computes in float32), got {v:g}")
    return v


def seed_or_rng(name: str, seed) -> np.random.Generator:
    """A numpy Generator from None, an int seed, or a Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TypeError(f"{name} must be None, a non-negative int or a numpy Generator, "
                        f"got {_describe(seed)}")
    return np.random.default_rng(int(seed))
