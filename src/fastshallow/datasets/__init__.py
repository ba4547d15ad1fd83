"""Datasets of the book: Fashion-MNIST (section 3.5), its loaders and image transforms.

Nothing here reaches the network unless a file is missing everywhere it is looked for; see
:class:`FashionMNIST` for where that is.
"""
from . import transforms
from ._download import DatasetNotFoundError, cache_dir
from ._idx import DataFileError, read_idx
from .fashion_mnist import (
    TEXT_LABELS,
    FashionMNIST,
    TransformedDataset,
    get_fashion_mnist_labels,
    load_data_fashion_mnist,
)
from .transforms import Compose, Resize, ToTensor

__all__ = [
    "FashionMNIST",
    "TransformedDataset",
    "get_fashion_mnist_labels",
    "load_data_fashion_mnist",
    "TEXT_LABELS",
    "transforms",
    "ToTensor",
    "Resize",
    "Compose",
    "DataFileError",
    "DatasetNotFoundError",
    "read_idx",
    "cache_dir",
]
