"""numba's start-up, paid once per process before the first kernel runs: `import numba` (~0.2 s)
and loading its CPU target's implementations (~0.15-0.4 s: more where SciPy is installed, which
numba imports for its BLAS check). The first kernel loaded from the cache pays it otherwise, inside
the first training step. `symdl.nn` runs kernels in every call, so it pays it at import
(`import symdl` alone stays light: formulas, gradients and the verifier need no numba)."""
from __future__ import annotations

import functools


@functools.cache
def start() -> None:
    import numba  # noqa: F401 (imported for its start-up)
    from numba.core.registry import cpu_target

    # What numba's cache does before its first load (numba/core/caching.py load_overload): idempotent.
    cpu_target.target_context.refresh()
