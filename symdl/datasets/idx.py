"""The IDX format of MNIST and Fashion-MNIST (raw or gzip): a 4-byte magic (two zero bytes, a type
code, the number of axes), big-endian uint32 lengths, then the values in row-major order."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(data: bytes, what: str = "IDX data") -> np.ndarray:
    """The array an IDX byte string holds; ValueError naming `what` if it is malformed."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise ValueError(f"{what}: not an IDX file (magic bytes {data[:4].hex() or 'missing'})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{what}: truncated IDX header")
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_TYPES[data[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(f"{what}: IDX header says shape {shape} ({expected} bytes), the data has "
                         f"{len(data)} bytes")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path: str | Path) -> np.ndarray:
    """The array in an IDX file (gzip-compressed or not)."""
    return parse_idx(Path(path).read_bytes(), what=str(path))


def read_image_label_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (n, rows, cols) and uint8 labels (n,), checked against each other."""
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{images} / {labels}: expected images (n, rows, cols) and labels (n,), got "
                         f"{x.shape} and {y.shape}")
    return x.astype(np.uint8), y.astype(np.uint8)
