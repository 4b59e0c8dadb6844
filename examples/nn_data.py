"""Data for the symdl.nn examples: the bundled digits (offline), or MNIST with --mnist.

MNIST comes from `symdl.datasets.mnist.load_data()` (downloaded once); without network access the
examples fall back to MNIST idx files in the folder named by SYMDL_MNIST_DIR, if set (the
t10k test set: first 8,000 images to train, last 2,000 to test).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from symdl.datasets import DownloadError, digits, mnist



def load(use_mnist: bool, images: bool):
    """((x_train, y_train), (x_test, y_test)), float32 in [0, 1]; images (n, h, w, 1) or flat."""
    if use_mnist:
        try:
            (xtr, ytr), (xte, yte) = mnist.load_data()
        except DownloadError as e:
            local = Path(os.environ.get("SYMDL_MNIST_DIR", "")) if os.environ.get("SYMDL_MNIST_DIR") else None
            if local is None or not local.is_dir():
                raise SystemExit(f"MNIST is not available offline: {e} (set SYMDL_MNIST_DIR to a folder of "
                                 f"MNIST idx files to use those)") from e
            print(f"(no download possible: using the MNIST test set in {local}, 8000/2000 split)")
            x, y = mnist.read_split(local, "t10k")
            (xtr, ytr), (xte, yte) = (x[:8000], y[:8000]), (x[8000:], y[8000:])
        scale = 255.0
    else:
        (xtr, ytr), (xte, yte) = digits.load_data()
        scale = float(digits.MAX_PIXEL)

    def prep(x):
        x = x.astype(np.float32) / np.float32(scale)
        return x[..., None] if images else x.reshape(len(x), -1)
    return (prep(xtr), ytr), (prep(xte), yte)
