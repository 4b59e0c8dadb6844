"""The independent reference: what a formula means, evaluated with NumPy straight from its SymPy
form (never from the loop IR or generated code), and the random inputs every check draws."""
from .evaluator import evaluate, evaluate_system

__all__ = ["evaluate", "evaluate_system"]
