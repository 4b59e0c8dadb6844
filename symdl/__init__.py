"""symdl: formulas in SymPy index notation -> exact gradients -> Numba kernels, verified."""
from .declare import Formula, Max, Program, ReduceMax, relu, sigmoid, softplus, step
from .errors import CompileError, FormulaError
from . import api  # installs the verbs behind f.vjp(), f.compile(), ... (symdl/api.py)
from .api import compile, stabilize, vjp  # noqa: A004 (symdl.compile; kept out of __all__)

from .version import __version__
__all__ = ["CompileError", "Formula", "FormulaError", "Max", "Program", "ReduceMax", "relu", "sigmoid",
           "softplus", "stabilize", "step", "verify", "vjp"]


def __getattr__(name):  # keep `import symdl` light: numba and the verifier load on first use
    if name in ("verify", "nn", "datasets", "formulas"):
        import importlib
        return importlib.import_module(f"symdl.{name}")
    raise AttributeError(name)
