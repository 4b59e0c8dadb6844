"""Seeds and small conversions shared by the nn modules."""
from __future__ import annotations

import numpy as np

_GLOBAL = {"rng": np.random.default_rng()}


def set_seed(seed: int | None) -> None:
    """Seed the generator that models without their own `seed=` draw from (initial weights,
    shuffling, dropout masks), like `keras.utils.set_random_seed`."""
    _GLOBAL["rng"] = np.random.default_rng(seed)


def global_rng() -> np.random.Generator:
    return _GLOBAL["rng"]


def make_rng(seed: int | None) -> np.random.Generator:
    """A generator from `seed`, or a child of the global one when seed is None."""
    if seed is None:
        return np.random.default_rng(global_rng().integers(2**63))
    return np.random.default_rng(seed)


def as_float32(x, what: str = "x") -> np.ndarray:
    """A C-contiguous float32 copy or view of x (Keras' floatx)."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{what} must hold numbers, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)
