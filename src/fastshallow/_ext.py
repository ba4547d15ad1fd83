"""Import of the compiled kernels with an error that says how to get them."""
from __future__ import annotations

import importlib

_mod = None


def kernels():
    """The compiled module `fastshallow._kernels`, or an ImportError explaining how to build it."""
    global _mod
    if _mod is None:
        try:
            # import_module, not "from . import": a missing module then says so plainly instead
            # of blaming a circular import.
            _kernels = importlib.import_module("fastshallow._kernels")
        except ImportError as exc:  # pragma: no cover - exercised only on broken installs
            raise ImportError(
                "fastshallow's compiled kernels (fastshallow._kernels) are missing or failed to "
                f"load ({exc}). Install the package with `pip install .` (or a wheel) rather "
                "than importing the source tree, or build in place with "
                "`python setup.py build_ext --inplace`; a C compiler, Cython>=3.1 and numpy are "
                "needed to build."
            ) from exc
        _mod = _kernels
    return _mod
