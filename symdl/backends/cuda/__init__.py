"""The cuda backend: loop IR -> numba.cuda.jit source (printing only: importing it loads no numba.cuda)."""
from .codegen import generate

__all__ = ["generate"]
