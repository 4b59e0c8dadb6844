"""The cuda backend: loop IR -> numba.cuda.jit source. Printing loads no numba.cuda; the backend
object (CudaBackend) does, when the first kernel is made."""
from .codegen import generate

__all__ = ["generate"]
