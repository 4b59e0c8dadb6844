"""Expression printer for generated Numba source: typed float constants, integer index math.

Two contexts: float (values: every constant is `F(c)` so float32 kernels never promote to
float64) and int (index expressions: exact `//` division, which the autodiff guards make exact).
Rules are tables keyed by SymPy class; anything unknown raises an error naming the node.
"""
from __future__ import annotations

import builtins
import keyword
import math
import re
import unicodedata

import sympy as sp

from ...declare.functions import sigmoid, softplus

# names generated modules (cpu and cuda) define or call; py_name keeps user names off them. The
# generator's helpers and locals start with '_' (_exp, _t_); its functions match GENERATED
RESERVED = frozenset({"F", "np", "nb", "math", "cuda", "run", "parallel", "float32_frexp_exponent",
                      "float32_frexp_mantissa", "float32_ldexp", "RED_THREADS", "launch_grid",
                      "matmul_grid", "reduction_blocks"}
                     | set(dir(builtins)) | set(keyword.kwlist) | set(keyword.softkwlist))
GENERATED = re.compile(r"\w*_(?:serial|parallel|kernel|partial|final)|matmul\d*|MM_\w*")

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


# the decorators generated code puts on helpers (the kernels' own flags live in codegen.FASTMATH)
_FASTMATH = "{'reassoc', 'contract', 'nsz', 'arcp', 'afn'}"
HELPER = f"@nb.njit(cache=True, fastmath={_FASTMATH}, error_model='numpy')"
# float32 building blocks: reassociation would undo the two-part ln2 of _exp and Goldberg's log1p, so
# these allow FMA contraction only; they are small, and LLVM inlines them into the loops that call them
STRICT = "@nb.njit(cache=True, fastmath={'contract'}, error_model='numpy')"
# float32 compositions of the building blocks: inlined by numba itself, so a loop calling them still
# sees only small functions (a function that inlines both _exp and _log is too big for LLVM to inline,
# and a call left in a loop stops it vectorising)
INLINE = f"@nb.njit(cache=True, fastmath={_FASTMATH}, error_model='numpy', inline='always')"

# float functions: SymPy class -> printed name (helpers starting with "_" are defined in the module)
FLOAT_FUNCTIONS = {
    sp.exp: "math.exp", sp.log: "math.log", sp.tanh: "math.tanh", sp.sin: "math.sin",
    sp.cos: "math.cos", sp.Abs: "abs", sp.floor: "math.floor", sp.ceiling: "math.ceil",
    sigmoid: "_sigmoid", softplus: "_softplus", sp.sign: "_sign", sp.erf: "math.erf",
    sp.sinh: "math.sinh", sp.cosh: "math.cosh", sp.atan: "math.atan",
}
# float32 kernels replace libm's scalar calls, which keep loops from vectorising, by helpers
FLOAT32_FUNCTIONS = {**FLOAT_FUNCTIONS, sp.exp: "_exp", sp.log: "_log", sp.tanh: "_tanh"}

# name -> (decorator, source). float64 kernels use these (libm through math: exact to double);
# _sign, _sq and _cube serve float32 kernels too
HELPERS = {
    "_sigmoid": (HELPER, '''def _sigmoid(x):
    # the stable form: exp of a non-positive number never overflows
    if x >= F(0):
        return F(1) / (F(1) + math.exp(-x))
    z = math.exp(x)
    return z / (F(1) + z)'''),
    "_softplus": (HELPER, '''def _softplus(x):
    return max(x, F(0)) + math.log1p(math.exp(-abs(x)))'''),
    "_sign": (HELPER, '''def _sign(x):
    return F(1) if x > F(0) else (F(-1) if x < F(0) else F(0))'''),
    "_sq": (HELPER, '''def _sq(x):
    # a square of a computed value: the value is computed once
    return x * x'''),
    "_cube": (HELPER, '''def _cube(x):
    return x * x * x'''),
}

# float32 versions: branch-free Cephes-style polynomials with range reduction, within a few ulps of
# float64 (tests/test_cpu_fast_paths.py), so the loops calling them vectorise
HELPERS_F32 = {
    **HELPERS,
    "_exp": (STRICT, '''def _exp(x):
    # float32 exp without libm (math.exp is a scalar call: loops calling it do not vectorise).
    # Cephes expf: x = n ln2 + r with |r| <= ln2/2, exp(r) by a polynomial, times 2**n
    y = x if not (x < F(-104.0)) else F(-104.0)  # comparisons are False for NaN: it passes through
    y = y if not (y > F(89.0)) else F(89.0)
    n = (y * F(1.44269504088896341) + F(12582912.0)) - F(12582912.0)  # round(y / ln2): + 1.5 * 2**23
    n = n if n > F(-200.0) else F(0)  # NaN -> 0, so float32_ldexp gets an integer
    r = y - n * F(0.693359375) + n * F(2.12194440e-4)  # ln2 in two parts: r is exact
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    p = p * r * r + r + F(1)
    e = float32_ldexp(p, n)  # overflows to inf and rounds into the subnormals as exp itself does
    return e if not (x < F(-104.0)) else F(0)'''),
    "_log": (STRICT, '''def _log(x):
    # float32 log without libm, as _exp. Cephes logf: x = m 2**e with m in [sqrt(1/2), sqrt(2)),
    # log(m) by a polynomial in m - 1
    tiny = x < F(1.17549435e-38)  # subnormal (or not positive): scaled by 2**23 to normalise
    xs = x * F(8388608.0) if tiny else x
    m = float32_frexp_mantissa(xs)  # in [0.5, 1)
    e = float32_frexp_exponent(xs) - (F(23) if tiny else F(0))
    low = m < F(0.707106781186547524)
    e = e - F(1) if low else e
    m = (m + m if low else m) - F(1)
    z = m * m
    y = F(7.0376836292e-2)
    y = y * m - F(1.1514610310e-1)
    y = y * m + F(1.1676998740e-1)
    y = y * m - F(1.2420140846e-1)
    y = y * m + F(1.4249322787e-1)
    y = y * m - F(1.6668057665e-1)
    y = y * m + F(2.0000714765e-1)
    y = y * m - F(2.4999993993e-1)
    y = y * m + F(3.3333331174e-1)
    y = y * m * z - e * F(2.12194440e-4) - F(0.5) * z
    r = m + y + e * F(0.693359375)
    r = r if x < F(np.inf) else x  # inf and NaN stay themselves
    return r if not (x <= F(0)) else (F(-np.inf) if x == F(0) else F(np.nan))'''),
    "_log1p": (STRICT, '''def _log1p(z):
    # Goldberg: log(u) * z / (u - 1) with u = 1 + z corrects u's rounding; z itself where u == 1
    u = F(1) + z
    d = u - F(1)
    v = _log(u) * (z / d)
    return v if d != F(0) else z'''),
    "_tanh": (INLINE, '''def _tanh(x):
    # Cephes tanhf: an odd polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above; both are
    # computed and one is selected, so loops over it vectorise
    a = abs(x)
    z = x * x
    p = F(-5.70498872745e-3)
    p = p * z + F(2.06390887954e-2)
    p = p * z - F(5.37397155531e-2)
    p = p * z + F(1.33314422036e-1)
    p = p * z - F(3.33332819422e-1)
    p = p * z * x + x
    t = F(1) - F(2) / (_exp(a + a) + F(1))
    t = t if x >= F(0) else -t
    return p if not (a >= F(0.625)) else t'''),
    "_sigmoid": (INLINE, '''def _sigmoid(x):
    # 1 / (1 + exp(-x)) without branches or overflow: exp(-|x|) is at most 1
    z = _exp(-abs(x))
    s = F(1) / (F(1) + z)
    return s if x >= F(0) else z * s'''),
    "_softplus": (INLINE, '''def _softplus(x):
    return max(x, F(0)) + _log1p(_exp(-abs(x)))'''),
}
# helpers that call other helpers
HELPER_DEPS = {"_tanh": ("_exp",), "_sigmoid": ("_exp",), "_softplus": ("_exp", "_log1p"),
               "_log1p": ("_log",)}
INTRINSICS = ("from symdl.backends.cpu.intrinsics import float32_frexp_exponent, float32_frexp_mantissa, "
              "float32_ldexp")


def python_function(expr, names, dims=(), condition: bool = False):
    """An index expression (or an index condition) as a plain Python function of `names`, printed
    once: binding checks and trip counts evaluate bounds at Python speed, with exact `//`."""
    printer = Printer(dims)
    text = printer.cond(expr) if condition else printer.index(sp.sympify(expr))
    fn = eval(f"lambda {', '.join(py_name(str(n)) for n in names)}: {text}",  # noqa: S307 (our own printer's output)
              {"max": max, "min": min})
    renamed = {str(n): py_name(str(n)) for n in names if py_name(str(n)) != str(n)}
    if not renamed:
        return fn
    # keyword calls (binding) use the formula's names: map the few py_name changed (max -> max_)
    return lambda *args, **kw: fn(*args, **{renamed.get(k, k): v for k, v in kw.items()})


def py_name(name: str) -> str:
    """The identifier generated source uses for a tensor, scalar, index or dimension name.

    One to one on identifiers, and never a name the module defines: a name reserved up to its
    trailing '_' gets one more (np -> np_, np_ -> np__), a name starting with '_' gets '_u'
    (_exp -> _exp_u), any other is itself. Declarations accept only identifiers
    (declare/names.py); anything else is made one ('C_{in}' -> 'C__in_'), not one to one."""
    if not (name.isidentifier() and unicodedata.normalize("NFKC", name) == name):
        name = "".join(ch if ("a" + ch).isidentifier() else "_" for ch in unicodedata.normalize("NFKC", name))
        name = name if name.isidentifier() else "_" + name  # empty, or a leading digit
    if name.startswith("_"):
        return name + "_u"
    base = name.rstrip("_")
    return name + "_" if base in RESERVED or GENERATED.fullmatch(base) else name


class Printer:
    """Prints SymPy expressions of one kernel. `dims` print as ints; in float context they are
    wrapped in F(). `helpers` collects the helper functions the printed code calls; `dtype` picks
    them (float32: vectorisable polynomials, float64: libm through `math`)."""

    def __init__(self, dims=(), integer_tensors=(), dtype: str = "float64"):
        if dtype not in ("float32", "float64"):
            raise ValueError(f"the cpu backend prints float32 or float64 kernels, not {dtype!r}")
        self.dims = set(dims)
        self.integer_tensors = set(integer_tensors)
        self.dtype = dtype
        self.functions = FLOAT32_FUNCTIONS if dtype == "float32" else FLOAT_FUNCTIONS
        self.helper_table = HELPERS_F32 if dtype == "float32" else HELPERS
        self.helpers: set = set()

    def use(self, name: str) -> str:
        """Record that printed code calls helper `name` (and what that helper calls)."""
        if name not in self.helpers:
            self.helpers.add(name)
            for dep in HELPER_DEPS.get(name, ()) if self.dtype == "float32" else ():
                self.use(dep)
        return name

    def helper_source(self, name: str) -> str:
        """The decorated definition of one helper, for the generated module."""
        decorator, text = self.helper_table[name]
        return f"{decorator}\n{text}\n"

    @property
    def imports(self) -> list[str]:
        """Import lines the printed helpers need (the float32 exponent-field intrinsics live in a real module, so
        numba's cache can re-import them in the next process)."""
        return [INTRINSICS] if self.helpers & {"_exp", "_log"} else []

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
        raise NotImplementedError(f"the cpu backend cannot print {type(e).__name__}: {e}")

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
        return f"{py_name(str(e.base.label))}[{', '.join(self.index(i) for i in e.indices)}]"

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
        raise NotImplementedError(f"the cpu backend cannot print index expression {e}")

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
        raise NotImplementedError(f"the cpu backend cannot print condition {c}")

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
