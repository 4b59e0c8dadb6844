"""How many threads symdl's kernels use: numba's parallel loops and the BLAS library NumPy calls for
matrix products.

By default both use every core numba sees (NUMBA_NUM_THREADS); a parallel flavour runs only for
nests large enough to pay for waking the threads (backends/cpu/backend.py). On a machine shared
with other work, `symdl.set_num_threads(1)` is often fastest: no thread then waits for a core.
"""
from __future__ import annotations

import ctypes
import functools

# OpenBLAS's setter under the names NumPy's wheels (scipy-openblas) and system builds export
_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_", "openblas_set_num_threads")


def set_num_threads(n: int) -> None:
    """Use `n` threads in numba's parallel loops and, where NumPy's BLAS is OpenBLAS, in matrix
    products too (ValueError outside 1..NUMBA_NUM_THREADS)."""
    import numba

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"set_num_threads: n must be an integer from 1 to {numba.config.NUMBA_NUM_THREADS} "
                         f"(NUMBA_NUM_THREADS), got {n!r}")
    numba.set_num_threads(n)
    setter = _blas_setter()
    if setter is not None:
        setter(n)


def get_num_threads() -> int:
    """The thread count of numba's parallel loops (the one set_num_threads sets)."""
    import numba

    return numba.get_num_threads()


@functools.cache
def _blas_setter():
    """OpenBLAS's set_num_threads from the library NumPy loaded, or None (another BLAS: its own
    environment variables, e.g. MKL_NUM_THREADS, decide)."""
    import numpy as np

    np.dot(np.ones((2, 2)), np.ones((2, 2)))  # NumPy loads its BLAS on first use
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line})
    except OSError:  # not Linux
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], None
                return fn
    return None
