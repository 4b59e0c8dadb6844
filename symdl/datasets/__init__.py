"""Datasets: the bundled UCI digits (offline) and Keras-style loaders that download once
(mnist, fashion_mnist, cifar10; cache in $SYMDL_DATA_DIR or ~/.cache/symdl/datasets)."""

from . import cifar10, digits, fashion_mnist, mnist
from ._fetch import DownloadError, data_dir

__all__ = ["DownloadError", "cifar10", "data_dir", "digits", "fashion_mnist", "mnist"]
