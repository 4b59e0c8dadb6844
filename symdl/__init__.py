"""symdl: formulas in SymPy index notation -> exact gradients -> Numba kernels, verified."""
from .declare import Formula, Max, Min, Product, Program, ReduceMax, ReduceProduct, relu, sigmoid, softplus, step
from .errors import CompileError, FormulaError
from . import api  # installs the verbs behind f.vjp(), f.compile(), ... (symdl/api.py)
from .api import (compile, flush_subnormals, get_num_threads, set_num_threads, stabilize,  # noqa: A004 (compile)
                  vjp)
from .version import __version__

__all__ = ["CompileError", "Formula", "FormulaError", "Max", "Min", "Product", "Program", "ReduceMax", "ReduceProduct",
           "flush_subnormals", "get_num_threads", "relu", "set_num_threads", "sigmoid", "softplus", "stabilize", "step",
           "verify", "vjp"]


def __getattr__(name):  # keep `import symdl` light: numba and the verifier load on first use
    if name in ("verify", "nn", "datasets", "formulas"):
        import importlib
        return importlib.import_module(f"symdl.{name}")
    raise AttributeError(name)
