"""SymPy expressions as Numba source, for every backend: typed float constants, integer index
math, conditions, helper calls, precedence and parentheses.

Two contexts: float (values: every constant is `F(c)` so float32 kernels never promote to
float64) and int (index expressions: exact `//` division, which the autodiff guards make exact).
Rules are tables keyed by SymPy class; anything unknown raises an error naming the node. A backend
subclasses `Printer` only for what differs: its function table, its helpers' decorators, imports.
"""
from __future__ import annotations

import math

import sympy as sp

from ..declare.functions import sigmoid, softplus
from .names import py_name

# the float dtypes generated kernels are printed for, and the NumPy type `F` names in each
DTYPES = {"float32": "np.float32", "float64": "np.float64"}

# Printed text with its Python precedence. A child printed below what its position needs is
# parenthesised: decided on the printed form, never on SymPy's precedence() (which ranks -3*x with
# +, so the sum it multiplied lost its parentheses). Conditional expressions are always wrapped.
Printed = tuple[str, int]
ATOM, POW, UNARY, MUL, ADD = 100, 70, 60, 50, 40  # names, calls, subscripts, (...); ** ; -x ; * / // % ; + -


def _wrap(printed: Printed, need: int) -> str:
    text, prec = printed
    return text if prec >= need else f"({text})"


def _constant(e) -> float | None:
    """A closed-form real constant as a float, or None (complex, infinite, not a number)."""
    try:
        c = float(e)
    except (TypeError, ValueError):
        return None
    return c if math.isfinite(c) else None


# float functions: SymPy class -> printed name (helpers starting with "_" are defined in the module)
FLOAT_FUNCTIONS = {
    sp.exp: "math.exp", sp.log: "math.log", sp.tanh: "math.tanh", sp.sin: "math.sin",
    sp.cos: "math.cos", sp.Abs: "abs", sp.floor: "math.floor", sp.ceiling: "math.ceil",
    sigmoid: "_sigmoid", softplus: "_softplus", sp.sign: "_sign", sp.erf: "math.erf",
    sp.sinh: "math.sinh", sp.cosh: "math.cosh", sp.atan: "math.atan",
}


class Printer:
    """Prints SymPy expressions of one kernel. `dims` print as ints; in float context they are
    wrapped in F(). `helpers` collects the helper functions the printed code calls."""

    functions = FLOAT_FUNCTIONS  # SymPy class -> printed name; a backend may replace entries

    def __init__(self, dims=(), integer_tensors=(), dtype: str = "float64"):
        if dtype not in DTYPES:
            raise ValueError(f"kernels are printed for {' or '.join(DTYPES)}, not {dtype!r}")
        self.dims = set(dims)
        self.integer_tensors = set(integer_tensors)
        self.dtype = dtype
        self.helpers: set = set()
        self.unsigned: dict = {}  # loop variable -> the unsigned copy a subscript that is exactly it reads

    def use(self, name: str) -> str:
        """Record that printed code calls helper `name`."""
        self.helpers.add(name)
        return name

    def helper_source(self, name: str) -> str:
        """The decorated definition of one helper, for the generated module: the backend's."""
        raise NotImplementedError(f"{type(self).__name__} does not define helper {name}")

    @property
    def imports(self) -> list[str]:
        """Import lines the printed helpers need."""
        return []

    # -- float context ----------------------------------------------------------------------------
    def value(self, e) -> str:
        """`e` as a float expression."""
        return self._value(sp.sympify(e))[0]

    def _value(self, e) -> Printed:
        if e.is_Integer:
            return f"F({int(e)})", ATOM
        if e.is_Rational or e.is_Float or isinstance(e, sp.NumberSymbol):
            return f"F({float(e)!r})", ATOM
        if e is sp.oo or e is -sp.oo:
            return ("F(np.inf)" if e is sp.oo else "F(-np.inf)"), ATOM
        if e.is_number and not e.is_Atom:  # sqrt(2), 2/sqrt(pi) (d erf): one constant, rounded once
            c = _constant(e)
            if c is not None:
                return f"F({c!r})", ATOM
        if isinstance(e, sp.Symbol):
            return (f"F({py_name(e.name)})" if e in self.dims or e.is_integer else py_name(e.name)), ATOM
        if isinstance(e, sp.Indexed):
            return self.read(e), ATOM
        if isinstance(e, sp.Add):
            return self._sum(e, self._value)
        if isinstance(e, sp.Mul):
            return self._mul(e)
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if isinstance(e, (sp.Max, sp.Min)):
            return f"{'max' if isinstance(e, sp.Max) else 'min'}({', '.join(self.value(a) for a in e.args)})", ATOM
        if isinstance(e, sp.Piecewise):
            out = ("F(0)", ATOM)
            for v, c in reversed(e.args):
                out = self._value(v) if c is sp.true else \
                    (f"({_wrap(self._value(v), ADD)} if {self.cond(c)} else {out[0]})", ATOM)
            return out
        if isinstance(e, sp.KroneckerDelta):
            return f"(F(1) if {self.cond(sp.Eq(*e.args, evaluate=False))} else F(0))", ATOM
        if isinstance(e, sp.Heaviside):
            return f"(F(1) if {_wrap(self._value(e.args[0]), ADD)} > F(0) else F(0))", ATOM
        for cls, name in self.functions.items():
            if isinstance(e, cls):
                if name.startswith("_"):
                    self.use(name)
                return f"{name}({', '.join(self.value(a) for a in e.args)})", ATOM
        raise NotImplementedError(f"{type(self).__name__} cannot print {type(e).__name__}: {e}")

    def _sum(self, e, show) -> Printed:
        """Terms in SymPy's order; one with a negative coefficient after the first is subtracted,
        decided per term (x - F(3) * y, not x + F(-3) * y)."""
        text = ""
        for n, term in enumerate(sp.Add.make_args(e)):
            if n and term.as_coeff_Mul()[0].is_negative:
                text += f" - {_wrap(show(-term), ADD + 1)}"
            else:
                text += f" + {_wrap(show(term), ADD + 1)}" if n else _wrap(show(term), ADD)
        return text, ADD

    @staticmethod
    def _product(factors, show) -> Printed:
        """Factors left to right: a factor that is itself a product or quotient after the first
        keeps its parentheses (a * (b / c) is not a * b / c in floats, nor in // arithmetic)."""
        if len(factors) == 1:
            return show(factors[0])
        return " * ".join(_wrap(show(f), MUL + (n > 0)) for n, f in enumerate(factors)), MUL

    def _mul(self, e) -> Printed:
        constants = [f for f in e.args if f.is_number]
        if any(not f.is_Number for f in constants):  # sqrt(2)/2 * x: one constant F(0.7071...) * x
            c = _constant(sp.Mul(*constants))
            if c is not None:
                rest = [f for f in e.args if not f.is_number]  # unevaluated: 2.0 * (a + b) stays one product
                return self._mul(sp.Mul(sp.Float(c), *rest, evaluate=False))
        coeff, rest = e.as_coeff_Mul()
        if coeff == -1:
            text, prec = self._value(rest)
            # -a * b / c is (-a) * b / c, the same float as -(a * b / c): a product needs no parentheses
            if prec >= MUL and not text.startswith("-"):
                return "-" + text, min(prec, UNARY)
            return f"-({text})", UNARY
        num, den = [], []
        for f in sp.Mul.make_args(e):
            if isinstance(f, sp.Pow) and f.exp.is_Number and f.exp < 0:
                den.append(f.base ** -f.exp)
            elif f.is_Rational and not f.is_Integer and f.p == 1:
                den.append(sp.Integer(f.q))
            else:
                num.append(f)
        top = self._product(num, self._value) if num else ("F(1)", ATOM)
        if not den:
            return top
        # a divisor is one operand: a / (b * c), a / (b + c), never a / b * c
        return f"{_wrap(top, MUL)} / {_wrap(self._product(den, self._value), MUL + 1)}", MUL

    def _pow(self, e) -> Printed:
        base, ex = e.base, e.exp
        if ex.is_Integer and 1 <= abs(ex) <= 4:
            power = self._int_power(base, abs(int(ex)))
            return power if ex > 0 else (f"F(1) / {_wrap(power, MUL + 1)}", MUL)
        if ex == sp.Rational(1, 2):
            return f"math.sqrt({self.value(base)})", ATOM
        if ex == -sp.Rational(1, 2):
            return f"F(1) / math.sqrt({self.value(base)})", MUL
        if base == sp.E:
            return self._value(sp.exp(ex, evaluate=False))
        # ** is right-associative and binds tighter than unary minus (-x ** 2 is -(x ** 2)): both
        # operands are atoms or parenthesised
        return f"{_wrap(self._value(base), ATOM)} ** {_wrap(self._value(ex), ATOM)}", POW

    def _int_power(self, base, n: int) -> Printed:
        if n == 1:
            return self._value(base)
        if isinstance(base, (sp.Symbol, sp.Indexed)) or base.is_Number:
            factor = _wrap(self._value(base), ATOM)
            return "(" + " * ".join([factor] * n) + ")", ATOM
        # a computed base (tanh(x)**2) goes through a helper, so it is computed once
        inner = self.value(base)
        if n == 3:
            return f"{self.use('_cube')}({inner})", ATOM
        square = f"{self.use('_sq')}({inner})"
        return (square if n == 2 else f"_sq({square})"), ATOM

    # -- index (int) context --------------------------------------------------------------------
    def read(self, e: sp.Indexed) -> str:
        return f"{py_name(str(e.base.label))}[{', '.join(self.subscript(i) for i in e.indices)}]"

    def subscript(self, e) -> str:
        """One subscript of an array access: the loop variable's unsigned copy where the subscript
        is the variable itself (numba wraps a signed subscript below zero, a select that keeps the
        loop from vectorising; statements.py's parallel parts), else the integer expression."""
        name = self.unsigned.get(e) if isinstance(e, (sp.Symbol, sp.Idx)) else None
        return name or self.index(e)

    def index(self, e) -> str:
        """`e` as an integer expression (exact `//` and `%`)."""
        return self._index(sp.sympify(e))[0]

    def _index(self, e) -> Printed:
        if isinstance(e, (sp.Add, sp.Mul)) and any(not c.is_Integer for c in e.atoms(sp.Rational)):
            num, den = sp.fraction(sp.together(e))
            if den != 1:  # parenthesised whole: 2 * ((1 + H) // 2) is not 2 * (1 + H) // 2
                return self._divide(num, den, "//")
        if e.is_Integer:
            return str(int(e)), (ATOM if e >= 0 else UNARY)
        if isinstance(e, sp.Symbol):
            return py_name(e.name), ATOM
        if isinstance(e, sp.Indexed):
            return self.read(e), ATOM
        if isinstance(e, sp.Add):
            return self._sum(e, self._index)
        if isinstance(e, sp.Mul):
            c, rest = e.as_coeff_Mul()
            if c == -1:  # -(a // b) is not -a // b: only an operand above * goes bare
                return f"-{_wrap(self._index(rest), UNARY)}", UNARY
            return self._product(sp.Mul.make_args(e), self._index)
        if isinstance(e, sp.Pow) and e.exp.is_Integer and e.exp > 0:
            return f"{_wrap(self._index(e.base), ATOM)} ** {int(e.exp)}", POW
        if isinstance(e, (sp.Max, sp.Min)):
            return f"{'max' if isinstance(e, sp.Max) else 'min'}({', '.join(self.index(a) for a in e.args)})", ATOM
        if isinstance(e, (sp.floor, sp.ceiling)):
            num, den = sp.fraction(sp.together(e.args[0]))
            if isinstance(e, sp.floor):
                return self._divide(num, den, "//")
            text, _ = self._divide(-num, den, "//")
            return f"(-{text})", ATOM
        if isinstance(e, sp.Mod):
            return self._divide(e.args[0], e.args[1], "%")
        raise NotImplementedError(f"{type(self).__name__} cannot print index expression {e}")

    def _divide(self, num, den, op: str) -> Printed:
        """`((num) // den)` or `((num) % den)`: the divisor is one operand (x // (2 * H))."""
        return f"(({self.index(sp.expand(num))}) {op} {_wrap(self._index(den), MUL + 1)})", ATOM

    # -- conditions ------------------------------------------------------------------------------
    def cond(self, c) -> str:
        if c is sp.true:
            return "True"
        if c is sp.false:
            return "False"
        if isinstance(c, sp.And):
            return " and ".join(f"({self.cond(a)})" for a in c.args)
        if isinstance(c, sp.Or):
            return " or ".join(f"({self.cond(a)})" for a in c.args)
        if isinstance(c, sp.Not):
            return f"not ({self.cond(c.args[0])})"
        if isinstance(c, sp.ITE):  # SymPy's form of a condition on a Piecewise value
            a, b, d = (self.cond(x) for x in c.args)
            return f"(({b}) if ({a}) else ({d}))"
        if isinstance(c, sp.core.relational.Relational):
            op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[c.rel_op]
            side = self._value
            if self._is_integer(c.lhs - c.rhs):
                num, den = sp.fraction(sp.together(c.lhs - c.rhs))
                if den != 1 and den.is_positive:  # i < H/2 is 2*i - H < 0: // would round
                    return f"{self.index(sp.expand(num))} {op} 0"
                side = self._index
            lhs, rhs = (_wrap(side(sp.sympify(a)), ADD) for a in (c.lhs, c.rhs))
            return f"{lhs} {op} {rhs}"
        raise NotImplementedError(f"{type(self).__name__} cannot print condition {c}")

    def _is_integer(self, e) -> bool:
        """Index arithmetic: only indices, dimensions and integer tensor reads."""
        for node in sp.preorder_traversal(e):
            if isinstance(node, sp.Indexed) and not node.base.is_integer:
                return False
            if (node.is_number and not node.is_Rational) or (isinstance(node, sp.Pow)
                                                             and not node.exp.is_Integer):
                return False  # 2.5, pi, sqrt(3), sqrt(H): a comparison of values
            if isinstance(node, sp.Symbol) and not node.is_integer and not isinstance(node, sp.Dummy):
                if node not in self.dims:
                    return False
            if isinstance(node, sp.Function) and not isinstance(node, (sp.floor, sp.ceiling, sp.Mod,
                                                                       sp.Max, sp.Min)):
                return False
        return True
