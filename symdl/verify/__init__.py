"""Stage 8, verify: symbolic, numeric and backend checks of formulas, and the catalog runner.

    symdl.verify.symbolic(dense, sizes={B: 2, N: 3, M: 2})  # exact, by sympy.diff
    symdl.verify.numeric(dense)                             # finite differences, float64
    symdl.verify.backends(dense)                            # reference vs compiled
    symdl.verify.equivalent(naive, stable)                  # same outputs and gradients, exactly
"""
from .backends import backends
from .equivalent import equivalent
from .numeric import numeric
from .symbolic import symbolic

__all__ = ["backends", "equivalent", "numeric", "symbolic"]
