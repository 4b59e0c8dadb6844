"""MNIST handwritten digits (60,000 train + 10,000 test, 28x28 uint8), Keras' `load_data()`.

Downloads the four IDX files from the standard mirrors on first use (see `_fetch` for the cache
folder and the offline error); `read_split(folder, "t10k")` reads a folder of IDX files without
any download or checksum (e.g. the real MNIST test set in the project's shared data).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _fetch
from .idx import read_image_label_pair

MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "https://storage.googleapis.com/cvdf-datasets/mnist/",
           "http://yann.lecun.com/exdb/mnist/")
SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
NAME = "mnist"


def read_split(folder: str | Path, prefix: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) from `{prefix}-images-idx3-ubyte[.gz]` and `{prefix}-labels-idx1-ubyte[.gz]`."""
    folder = Path(folder)

    def find(kind: str) -> Path:
        for name in (f"{prefix}-{kind}-ubyte.gz", f"{prefix}-{kind}-ubyte"):
            if (folder / name).exists():
                return folder / name
        raise FileNotFoundError(f"no {prefix}-{kind}-ubyte[.gz] in {folder}")
    return read_image_label_pair(find("images-idx3"), find("labels-idx1"))


def load_from(name: str, mirrors, sha256: dict):
    files = {f: _fetch.fetch(name, f, mirrors, sha256[f]) for f in sha256}
    train = read_image_label_pair(files["train-images-idx3-ubyte.gz"], files["train-labels-idx1-ubyte.gz"])
    test = read_image_label_pair(files["t10k-images-idx3-ubyte.gz"], files["t10k-labels-idx1-ubyte.gz"])
    return train, test


def load_data():
    """((x_train, y_train), (x_test, y_test)): uint8 images (n, 28, 28) with values 0..255 and
    uint8 labels (n,), as `keras.datasets.mnist.load_data()`."""
    return load_from(NAME, MIRRORS, SHA256)
