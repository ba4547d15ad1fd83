"""Parameter's dtype: float32 or float64 in native byte order, whichever way its values arrive
(the optimizers hand its buffers to compiled code that reads nothing else)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from fastshallow import Parameter

from conftest import assert_bits_equal


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float16, np.complex128, object, bool,
                                   "U3", np.longdouble, ">i8"])
def test_a_dtype_other_than_float32_or_float64_is_refused(dtype):
    want = rf"w: dtype must be float32 or float64, got {np.dtype(dtype).newbyteorder('=')}"
    with pytest.raises(TypeError, match=want):
        Parameter(np.ones(3), name="w", dtype=dtype)
    with pytest.raises(TypeError, match=want):  # deferred: refused before any data arrives
        Parameter(name="w", dtype=dtype)


def test_a_dtype_that_is_no_dtype_is_refused():
    with pytest.raises(TypeError, match=r"w: dtype must be float32 or float64, got 'float33'"):
        Parameter(np.ones(3), name="w", dtype="float33")


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_values_of_either_byte_order_are_kept_at_their_precision(dtype):
    given = np.array([1 + 1e-12, -2.5, 3e-30], dtype)
    native = np.dtype(dtype).newbyteorder("=")
    p = Parameter(given)
    assert p.dtype == native and p.data.dtype.isnative and p.grad.dtype == native
    assert_bits_equal(p.data, given.astype(native))
    # as the dtype argument, a byte-swapped float is the same numbers in native order
    q = Parameter(given, dtype=dtype)
    assert q.dtype == native and q.data.dtype.isnative
    assert_bits_equal(q.data, given.astype(native))


def test_set_data_and_initialize_store_the_parameter_dtype_natively():
    p = Parameter(np.zeros(2), name="w")
    p.set_data(np.array([1 + 1e-12, 2.0], ">f8"))
    assert p.data.dtype.isnative and p.data[0] != 1.0
    deferred = Parameter(name="w", dtype=">f8")
    deferred.initialize(np.array([1 + 1e-12, 2.0], ">f8"))
    assert deferred.data.dtype == np.float64 and deferred.data.dtype.isnative
    assert deferred.data[0] != 1.0


@pytest.mark.parametrize("data", [np.ones(3, ">f8"), np.ones(3, np.float32)])
def test_parameters_hold_numpys_own_dtypes_also_after_pickling(data):
    """SGD.step recognizes a parameter's buffers by dtype identity, the quick way; byte-swapped
    data and unpickled arrays come with equal but distinct dtype objects, which sent every step
    down the slow full check."""
    for p in (Parameter(data), pickle.loads(pickle.dumps(Parameter(data)))):
        want = np.dtype(np.float64) if data.dtype.itemsize == 8 else np.dtype(np.float32)
        assert p.data.dtype is want and p.grad.dtype is want and p.dtype is want
        assert_bits_equal(p.data, np.ones(3, want))
