"""Expression printer for generated Numba source: typed float constants, integer index math.

Two contexts: float (values: every constant is `F(c)` so float32 kernels never promote to
float64) and int (index expressions: exact `//` division, which the autodiff guards make exact).
Rules are tables keyed by SymPy class; anything unknown raises an error naming the node.
"""
from __future__ import annotations

import keyword

import sympy as sp
from sympy.printing.precedence import precedence

from ...declare.functions import sigmoid, softplus

RESERVED = {"F", "np", "nb", "math", "run", "parallel"} | set(keyword.kwlist) | {"max", "min", "abs",
                                                                                   "range"}

# float functions: SymPy class -> printed name (helpers starting with "_" are defined in the module)
FLOAT_FUNCTIONS = {
    sp.exp: "math.exp", sp.log: "math.log", sp.tanh: "math.tanh", sp.sin: "math.sin",
    sp.cos: "math.cos", sp.Abs: "abs", sp.floor: "math.floor", sp.ceiling: "math.ceil",
    sigmoid: "_sigmoid", softplus: "_softplus", sp.sign: "_sign",
}

HELPERS = {
    "_sigmoid": '''def _sigmoid(x):
    # the stable form: exp of a non-positive number never overflows
    if x >= F(0):
        return F(1) / (F(1) + math.exp(-x))
    z = math.exp(x)
    return z / (F(1) + z)''',
    "_softplus": '''def _softplus(x):
    return max(x, F(0)) + math.log1p(math.exp(-abs(x)))''',
    "_sign": '''def _sign(x):
    return F(1) if x > F(0) else (F(-1) if x < F(0) else F(0))''',
}


def py_name(name: str) -> str:
    """A Python identifier for a tensor, index or dimension name."""
    clean = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    if not clean or clean[0].isdigit():
        clean = "_" + clean
    return clean + "_" if clean in RESERVED else clean


class Printer:
    """Prints SymPy expressions of one kernel. `dims` print as ints; in float context they are
    wrapped in F(). `helpers` collects the helper functions the printed code calls."""

    def __init__(self, dims=(), integer_tensors=()):
        self.dims = set(dims)
        self.integer_tensors = set(integer_tensors)
        self.helpers: set = set()

    # -- float context ----------------------------------------------------------------------------
    def value(self, e) -> str:
        e = sp.sympify(e)
        if e.is_Integer:
            return f"F({int(e)})"
        if e.is_Rational or e.is_Float or isinstance(e, sp.NumberSymbol):
            return f"F({float(e)!r})"
        if e is sp.oo or e is -sp.oo:
            return "F(np.inf)" if e is sp.oo else "F(-np.inf)"
        if isinstance(e, sp.Symbol):
            return f"F({py_name(e.name)})" if e in self.dims or e.is_integer else py_name(e.name)
        if isinstance(e, sp.Indexed):
            return self.read(e)
        if isinstance(e, sp.Add):
            return self._join(e, [self._paren(a, e) for a in e.args], " + ").replace("+ -", "- ")
        if isinstance(e, sp.Mul):
            return self._mul(e)
        if isinstance(e, sp.Pow):
            return self._pow(e)
        if isinstance(e, (sp.Max, sp.Min)):
            return f"{'max' if isinstance(e, sp.Max) else 'min'}({', '.join(self.value(a) for a in e.args)})"
        if isinstance(e, sp.Piecewise):
            out = "F(0)"
            for v, c in reversed(e.args):
                out = self.value(v) if c is sp.true else f"({self.value(v)} if {self.cond(c)} else {out})"
            return out
        if isinstance(e, sp.KroneckerDelta):
            return f"(F(1) if {self.cond(sp.Eq(*e.args, evaluate=False))} else F(0))"
        if isinstance(e, sp.Heaviside):
            return f"(F(1) if {self.value(e.args[0])} > F(0) else F(0))"
        for cls, name in FLOAT_FUNCTIONS.items():
            if isinstance(e, cls):
                if name.startswith("_"):
                    self.helpers.add(name)
                return f"{name}({', '.join(self.value(a) for a in e.args)})"
        raise NotImplementedError(f"the cpu backend cannot print {type(e).__name__}: {e}")

    def _paren(self, a, parent) -> str:
        s = self.value(a)
        return f"({s})" if precedence(a) < precedence(parent) else s

    @staticmethod
    def _join(e, parts, sep):
        return sep.join(parts)

    def _mul(self, e) -> str:
        coeff, rest = e.as_coeff_Mul()
        if coeff == -1:
            return "-" + self._paren(rest, e) if not isinstance(rest, sp.Add) else f"-({self.value(rest)})"
        num, den = [], []
        for f in sp.Mul.make_args(e):
            if isinstance(f, sp.Pow) and f.exp.is_Number and f.exp < 0:
                den.append(f.base ** -f.exp)
            elif f.is_Rational and not f.is_Integer and f.p == 1:
                den.append(sp.Integer(f.q))
            else:
                num.append(f)
        top = " * ".join(self._paren(f, e) for f in num) if num else "F(1)"
        if not den:
            return top
        bottom = " * ".join(self._paren(f, e) for f in den)
        return f"{top} / ({bottom})" if len(den) > 1 else f"{top} / {self._paren(den[0], e)}"

    def _pow(self, e) -> str:
        base, ex = e.base, e.exp
        b = self._paren(base, e)
        if ex.is_Integer and 1 <= ex <= 4:
            return "(" + " * ".join([b] * int(ex)) + ")"
        if ex.is_Integer and -4 <= ex <= -1:
            return "(F(1) / (" + " * ".join([b] * int(-ex)) + "))"
        if ex == sp.Rational(1, 2):
            return f"math.sqrt({self.value(base)})"
        if ex == -sp.Rational(1, 2):
            return f"(F(1) / math.sqrt({self.value(base)}))"
        if base == sp.E:
            return f"math.exp({self.value(ex)})"
        return f"{b} ** {self._paren(ex, e)}"

    # -- index (int) context --------------------------------------------------------------------
    def read(self, e: sp.Indexed) -> str:
        return f"{py_name(str(e.base.label))}[{', '.join(self.index(i) for i in e.indices)}]"

    def index(self, e) -> str:
        e = sp.sympify(e)
        if isinstance(e, (sp.Add, sp.Mul)) and any(not c.is_Integer for c in e.atoms(sp.Rational)):
            num, den = sp.fraction(sp.together(e))
            if den != 1:
                return f"({self.index(sp.expand(num))}) // {self.index(den)}"
        if e.is_Integer:
            return str(int(e))
        if isinstance(e, sp.Symbol):
            return py_name(e.name)
        if isinstance(e, sp.Indexed):
            return self.read(e)
        if isinstance(e, sp.Add):
            terms = [self.index(a) for a in sp.Add.make_args(e)]
            return " + ".join(terms).replace("+ -", "- ")
        if isinstance(e, sp.Mul):
            c, rest = e.as_coeff_Mul()
            if c == -1:
                return f"-{self._iparen(rest)}"
            return " * ".join(self._iparen(a) for a in sp.Mul.make_args(e))
        if isinstance(e, sp.Pow) and e.exp.is_Integer and e.exp > 0:
            return f"{self._iparen(e.base)} ** {int(e.exp)}"
        if isinstance(e, (sp.Max, sp.Min)):
            return f"{'max' if isinstance(e, sp.Max) else 'min'}({', '.join(self.index(a) for a in e.args)})"
        if isinstance(e, (sp.floor, sp.ceiling)):
            num, den = sp.fraction(sp.together(e.args[0]))
            if isinstance(e, sp.floor):
                return f"({self.index(sp.expand(num))}) // {self.index(den)}"
            return f"-((-({self.index(sp.expand(num))})) // {self.index(den)})"
        if isinstance(e, sp.Mod):
            return f"({self.index(e.args[0])}) % {self._iparen(e.args[1])}"
        raise NotImplementedError(f"the cpu backend cannot print index expression {e}")

    def _iparen(self, a) -> str:
        s = self.index(a)
        return f"({s})" if isinstance(a, (sp.Add,)) or (s.startswith("-") and not a.is_Integer) else s

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
        if isinstance(c, sp.core.relational.Relational):
            side = self.index if self._is_integer(c.lhs - c.rhs) else self.value
            op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[c.rel_op]
            return f"{side(c.lhs)} {op} {side(c.rhs)}"
        raise NotImplementedError(f"the cpu backend cannot print condition {c}")

    def _is_integer(self, e) -> bool:
        """Index arithmetic: only indices, dimensions and integer tensor reads."""
        for node in sp.preorder_traversal(e):
            if isinstance(node, sp.Indexed) and not node.base.is_integer:
                return False
            if isinstance(node, sp.Symbol) and not node.is_integer and not isinstance(node, sp.Dummy):
                if node not in self.dims:
                    return False
            if isinstance(node, sp.Function) and not isinstance(node, (sp.floor, sp.ceiling, sp.Mod,
                                                                       sp.Max, sp.Min)):
                return False
        return True
