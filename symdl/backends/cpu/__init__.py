"""The cpu backend: loop IR -> numba.njit source."""
from .codegen import generate

__all__ = ["generate"]
