"""CIFAR-10 (50,000 + 10,000 32x32 colour images, 10 classes), Keras' `load_data()`.

Reads the *binary* distribution (cifar-10-binary.tar.gz): the python one is pickles, which symdl
never loads. Each batch file is a run of 3073-byte records: the label byte, then 1024 red, 1024
green and 1024 blue bytes (rows of 32). Members are read from the archive, never extracted.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from . import _fetch

MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
FILENAME = "cifar-10-binary.tar.gz"
SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
RECORD = 1 + 3 * 32 * 32
TRAIN = tuple(f"data_batch_{n}.bin" for n in range(1, 6))
TEST = ("test_batch.bin",)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def parse_batch(data: bytes, what: str = "CIFAR-10 batch") -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (n, 32, 32, 3) channels last, uint8 labels (n, 1)) from binary records."""
    if len(data) % RECORD:
        raise ValueError(f"{what}: {len(data)} bytes is not a whole number of {RECORD}-byte records")
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD)
    labels = rec[:, :1].copy()
    if labels.size and labels.max() > 9:
        raise ValueError(f"{what}: label {labels.max()} out of range 0..9")
    images = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, labels


def read_archive(path: str | Path):
    """((x_train, y_train), (x_test, y_test)) from a cifar-10-binary.tar.gz."""
    found: dict[str, bytes] = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if member.isfile() and base in TRAIN + TEST:
                found[base] = tar.extractfile(member).read()
    missing = [n for n in TRAIN + TEST if n not in found]
    if missing:
        raise ValueError(f"{path}: not the CIFAR-10 binary archive (missing {missing})")

    def join(names):
        parts = [parse_batch(found[n], f"{path}:{n}") for n in names]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    return join(TRAIN), join(TEST)


def load_data():
    """((x_train, y_train), (x_test, y_test)): uint8 images (n, 32, 32, 3), uint8 labels (n, 1),
    as `keras.datasets.cifar10.load_data()`."""
    return read_archive(_fetch.fetch("cifar10", FILENAME, MIRRORS, SHA256))
