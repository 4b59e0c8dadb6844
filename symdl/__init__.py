"""symdl: formulas in SymPy index notation -> exact gradients -> Numba kernels, verified."""
from .declare import Formula, Max, Program, ReduceMax, relu, sigmoid, softplus, step
from .errors import CompileError, FormulaError

__version__ = "0.1.0"
__all__ = ["CompileError", "Formula", "FormulaError", "Max", "Program", "ReduceMax", "relu", "sigmoid",
           "softplus", "step", "verify"]


def __getattr__(name):  # keep `import symdl` light: numba and the verifier load on first use
    if name in ("verify", "nn", "datasets", "formulas"):
        import importlib
        return importlib.import_module(f"symdl.{name}")
    raise AttributeError(name)
