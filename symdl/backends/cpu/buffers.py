"""The generated drivers' temporaries: `np.empty`, NaN-filled while the self-check runs a module
(runtime/selfcheck.py `poisoned`). The check's small sizes make small temporaries, which NumPy
often carves from memory just freed by the check's own reference; a driver reading one before
writing it could pass there on numbers that happened to be right (a GEMM once read its operand's
gather that had not run)."""
from __future__ import annotations

import contextlib

import numpy as np

_poisoned = False


def temp(shape: tuple, dtype) -> np.ndarray:
    a = np.empty(shape, dtype=dtype)
    if _poisoned:
        a.fill(np.nan)
    return a


@contextlib.contextmanager
def poisoned():
    """Temporaries made inside the block hold NaN until written."""
    global _poisoned
    before, _poisoned = _poisoned, True
    try:
        yield
    finally:
        _poisoned = before
