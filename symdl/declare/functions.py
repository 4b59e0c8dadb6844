"""Elementwise functions SymPy lacks, with their derivatives (the rule lives with the function)."""
import sympy as sp

from .reductions import REDUCTIONS


class sigmoid(sp.Function):
    """The logistic function 1 / (1 + exp(-x)); kept whole so backends can print a stable form."""

    nargs = 1

    def fdiff(self, argindex=1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_is_real(self):
        return self.args[0].is_real  # so SymPy never splits it into re() and im()

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sp.exp(-x))


class softplus(sp.Function):
    """log(1 + exp(x)), whose derivative is the sigmoid."""

    nargs = 1

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def _eval_is_real(self):
        return self.args[0].is_real

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return sp.log(1 + sp.exp(x))


# The elementwise functions of values a formula may use, under the names the declaration error
# lists: each is differentiated, printed by both backends and evaluated by symdl.reference
# (tests/test_printer_regressions.py compiles every one, forward and gradient, float32 and float64)
ELEMENTWISE = {"exp": sp.exp, "log": sp.log, "tanh": sp.tanh, "sin": sp.sin, "cos": sp.cos,
               "sinh": sp.sinh, "cosh": sp.cosh, "atan": sp.atan, "erf": sp.erf, "Abs": sp.Abs,
               "sign": sp.sign, "Max": sp.Max, "Min": sp.Min, "Heaviside": sp.Heaviside,
               "sigmoid": sigmoid, "softplus": softplus}


def relu(x: sp.Expr) -> sp.Expr:
    """max(x, 0); its derivative at 0 is 0, the frameworks' convention."""
    return sp.Max(x, 0)


def step(x: sp.Expr) -> sp.Expr:
    """1 where x > 0, else 0 (the derivative of relu, and symdl's Heaviside)."""
    return sp.Piecewise((1, x > 0), (0, True))


def heaviside_to_step(expr: sp.Expr) -> sp.Expr:
    """SymPy's Heaviside(0) is 1/2; symdl uses the frameworks' ReLU convention (0 at 0). The
    DiracDelta of d sign(x)/dx is 0 everywhere but at 0, where frameworks also take 0."""
    return expr.replace(sp.Heaviside, lambda *a: step(a[0])).replace(sp.DiracDelta, lambda *a: 0)


def max_min_to_piecewise(expr: sp.Expr) -> sp.Expr:
    """Max/Min of values as Piecewise choosing the first argument on ties, so the derivative follows
    one argument everywhere (Max(a, a) has derivative 1, not 0 as two half-steps would give); Abs of
    a value SymPy cannot prove real as a Piecewise whose derivative is sign(a) (0 at 0).
    Index arithmetic (Sum limits, subscripts) keeps its Max/Min."""
    if isinstance(expr, (sp.Indexed, sp.core.relational.Relational, sp.logic.boolalg.Boolean)) \
            or not expr.args:
        return expr  # conditions are never differentiated: leave them as written
    if isinstance(expr, REDUCTIONS):  # limits are index arithmetic
        return expr.func(max_min_to_piecewise(expr.function), *expr.args[1:])
    args = [max_min_to_piecewise(a) for a in expr.args]
    if isinstance(expr, sp.Abs) and args[0].is_extended_real is not True:
        a = args[0]  # SymPy differentiates Abs of a maybe-complex value (sqrt(x)) through atan2
        return sp.Piecewise((a, sp.Gt(a, 0)), (-a, sp.Lt(a, 0)), (0, True))
    if isinstance(expr, (sp.Max, sp.Min)):
        better = sp.Ge if isinstance(expr, sp.Max) else sp.Le
        pieces = [(a, sp.And(*[better(a, b) for b in args[n + 1:]]) if n + 1 < len(args) else sp.true)
                  for n, a in enumerate(args)]
        return sp.Piecewise(*pieces)
    return expr.func(*args)
