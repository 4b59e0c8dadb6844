"""Stage 1, declare: formulas in SymPy index notation, validated and made canonical."""
from .formula import Formula, Tensor
from .functions import relu, sigmoid, softplus, step
from .program import Program

__all__ = ["Formula", "Program", "Tensor", "relu", "sigmoid", "softplus", "step"]
