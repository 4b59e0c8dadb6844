"""Stage 1, declare: formulas in SymPy index notation, validated and made canonical."""
from .formula import Formula, Tensor
from .functions import relu, sigmoid, softplus, step
from .program import Program
from .reductions import ArgMax, Max, Min, Product, ReduceMax, ReduceProduct

__all__ = ["ArgMax", "Formula", "Max", "Min", "Product", "Program", "ReduceMax", "ReduceProduct", "Tensor", "relu",
           "sigmoid", "softplus", "step"]
