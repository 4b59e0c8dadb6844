"""Stage 8, verify: symbolic, numeric and backend checks of formulas, and the catalog runner.

    symdl.verify.all(dense)                                 # the three below, in order: use this
    symdl.verify.symbolic(dense, sizes={B: 2, N: 3, M: 2})  # the gradient mathematics, exactly
    symdl.verify.numeric(dense)                             # compiled gradients vs finite differences
    symdl.verify.backends(dense)                            # compiled kernels vs the NumPy reference
    symdl.verify.equivalent(naive, stable)                  # same outputs and gradients, exactly
"""
from .backends import backends
from .checks import Summary, VerificationFailed
from .checks import all  # noqa: A004 (used as symdl.verify.all; not in __all__, so `import *` keeps the builtin)
from .equivalent import equivalent
from .numeric import numeric
from .symbolic import SymbolicResult, Undecided, symbolic

__all__ = ["Summary", "SymbolicResult", "Undecided", "VerificationFailed", "backends", "equivalent", "numeric",
           "symbolic"]
