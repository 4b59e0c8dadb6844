"""Stage 2, differentiate: reverse mode on formulas, symbolically, with delta elimination."""
from .vjp import grad_name, program_vjp, rename, vjp

__all__ = ["grad_name", "program_vjp", "rename", "vjp"]
