"""fastshallow: fast, deterministic CPU training of shallow networks (linear and softmax
regression), covering the "Linear Neural Networks" chapter of Dive into Deep Learning."""
from ._version import __version__
from ._ext import kernels as _load_kernels

_load_kernels()  # fail at import, with instructions, if the compiled core is missing

from . import kernels  # noqa: E402
from ._config import get_num_threads, set_num_threads, show_config  # noqa: E402
from .data import ArrayDataset, DataLoader, load_array, synthetic_data  # noqa: E402

__all__ = [
    "__version__",
    "kernels",
    "show_config",
    "get_num_threads",
    "set_num_threads",
    "synthetic_data",
    "ArrayDataset",
    "DataLoader",
    "load_array",
]
