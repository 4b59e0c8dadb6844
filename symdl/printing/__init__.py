"""Printing: SymPy expressions as Numba-compatible Python source, for every backend and for the
host-side index evaluation (binding checks, trip counts). Knows SymPy and the declared functions,
nothing of loops or kernels."""
from .expressions import DTYPES, Printer
from .host import python_function
from .names import RESERVED, comment, py_name

__all__ = ["DTYPES", "RESERVED", "Printer", "comment", "py_name", "python_function"]
