"""The cpu backend: loop IR -> numba.njit source."""
from .backend import CpuBackend
from .codegen import generate

__all__ = ["CpuBackend", "generate"]
