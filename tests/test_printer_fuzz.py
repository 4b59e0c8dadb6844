"""Differential tests of the expression printer: random SymPy trees, printed, run, and compared
with SymPy's own evaluation of the same tree at 40 digits.

Parentheses are the printer's easiest mistake to make and the hardest to see (`-3*w*(x + z)` once
printed as `F(-3) * x + z * w`), so the trees are drawn to stress them: sums under negative,
rational and float coefficients, reciprocals and negative powers of sums, nested powers, unary
minus, every elementwise function, Piecewise, and index arithmetic with `//` and `%` (inside reads,
and on its own through `python_function`, exactly). Values stay in each function's domain (log
and sqrt of positive forms); a draw whose exact evaluation overflows or sits on a branch point is
skipped.

Checks, cheapest first: float64 text under Python `eval` (many draws); batches of draws compiled by
numba at float32 and float64 (the helpers and numba's typing); a few drawn formulas through the
whole pipeline (`Formula.compile`). Examples are derandomized; SYMDL_FUZZ=<n> multiplies the draws
and searches fresh ones. tests_cuda/test_printer_fuzz.py runs the cuda printer on the same trees.
"""
from __future__ import annotations

import math
import os

import numba as nb
import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, Phase, assume, given, note, settings
from hypothesis import strategies as st

import symdl
from symdl.backends.cpu import shared
from symdl.backends.cpu.helpers import fingerprint
from symdl.backends.cpu.printer import CpuPrinter as Printer
from symdl.printing import python_function

FUZZ = int(os.environ.get("SYMDL_FUZZ", "0"))


def fuzz_settings(n: int):
    """n derandomized examples; n * SYMDL_FUZZ fresh ones (with shrinking) when searching."""
    return settings(max_examples=n * max(FUZZ, 1), deadline=None, derandomize=not FUZZ, database=None,
                    phases=list(Phase) if FUZZ else [Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck))


# -- the trees ------------------------------------------------------------------------------------
A, B, C = sp.symbols("a b c", real=True)
DIM = sp.Symbol("n", integer=True, positive=True)      # a dimension: printed F(n) in float context
I, J = sp.symbols("i j", integer=True)                  # indices
H = sp.Symbol("H", integer=True, positive=True)         # a dimension in index arithmetic
T = sp.IndexedBase("t", real=True)                               # a tensor read at index arithmetic
T_VALUES = (0.25, -1.5, 2.0, -0.75)                     # exact in float32
# two points, exact in float32 so both dtypes see the same inputs as the exact evaluation
POINTS = ({A: 0.75, B: -1.25, C: 1.5, DIM: 3, I: 5, J: -2, H: 3},
          {A: -1.625, B: 0.5, C: -0.375, DIM: 2, I: -3, J: 4, H: 2})
INPUTS = (A, B, C, DIM)
MAGNITUDE = 1e5  # draws whose exact intermediate values exceed this are skipped (overflow, not printing)

COEFFICIENTS = [sp.Integer(-1), sp.Integer(-2), sp.Integer(-3), sp.Integer(2), sp.Rational(-1, 2),
                sp.Rational(1, 3), sp.Rational(-3, 4), sp.Rational(5, 2), sp.Float(-0.75), sp.Float(1.5),
                sp.Float(-2.5), -sp.sqrt(2), sp.pi / 4]
REAL_POWERS = [sp.Rational(1, 2), sp.Rational(-1, 2), sp.Rational(3, 2), sp.Rational(-3, 2),
               sp.Rational(1, 3), sp.Float(0.7), sp.Float(-1.25), sp.Integer(5), sp.Integer(-6)]
BOUNDED = [sp.tanh, sp.sin, sp.cos, sp.atan, sp.erf, symdl.sigmoid]
GROWING = [sp.exp, sp.sinh, sp.cosh, symdl.softplus, sp.Abs, sp.sign]


def positive(draw, x):
    """An expression of x that is positive everywhere (log, sqrt, real powers, divisors)."""
    forms = [lambda: 1 + x**2, lambda: sp.exp(x), lambda: sp.Rational(1, 2) + x**2,
             lambda: 1 + sp.exp(-x), lambda: symdl.softplus(x) + sp.Rational(1, 4), lambda: sp.cosh(x),
             lambda: sp.Abs(x) + 1, lambda: sp.Float(0.5) + x**4]
    return draw(st.sampled_from(forms))()


@st.composite
def indices(draw, depth: int = 2):
    """Integer index arithmetic over i, j and the dimension H: + - *, powers, floor, ceiling, Mod."""
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from([I, J, H, sp.Integer(1), sp.Integer(2), sp.Integer(-3)]))
    sub = indices(depth - 1)
    divisor = draw(st.sampled_from([H, 2 * H, H + 1, sp.Integer(3), 2 * H - 1, H**2]))
    kind = draw(st.sampled_from(["add", "sub", "mul", "neg", "pow", "floor", "ceiling", "mod", "max"]))
    x, y = draw(sub), draw(sub)
    return {"add": lambda: x + y + draw(sub), "sub": lambda: x - draw(st.sampled_from([1, 2, -3])) * y,
            "mul": lambda: draw(st.sampled_from([-1, -2, 3])) * x * y, "neg": lambda: -x,
            "pow": lambda: sp.Pow(draw(st.sampled_from([x + y, 2 * x, -x, x * y])), draw(st.sampled_from([2, 3]))),
            "floor": lambda: sp.floor(x / divisor), "ceiling": lambda: sp.ceiling(x / divisor),
            "mod": lambda: sp.Mod(x, divisor), "max": lambda: draw(st.sampled_from([sp.Max, sp.Min]))(x, y)}[kind]()


@st.composite
def values(draw, depth: int = 3, reads: bool = True):
    """A float expression over a, b, c (and the dimension n and reads t[...] when `reads`), with
    Piecewise at the top only: SymPy distributes operations into a Piecewise and simplifies the
    conditions it collects, which can take minutes."""
    x = draw(smooth(depth, reads))
    kind = draw(st.sampled_from(["smooth", "smooth", "piecewise", "scaled", "power", "inside"]))
    if kind == "smooth":
        return x
    arms = draw(st.lists(smooth(depth - 1, reads), min_size=4, max_size=4))
    pw = piecewise(draw, *arms)
    return {"piecewise": lambda: pw, "scaled": lambda: draw(st.sampled_from(COEFFICIENTS)) * pw * x,
            "power": lambda: sp.Pow(pw, draw(st.sampled_from([2, 3, -1])), evaluate=False) + x,
            "inside": lambda: draw(st.sampled_from(BOUNDED))(pw) - x}[kind]()


def piecewise(draw, x, y, z, w):
    """Piecewise((x, c1), [(z, c2),] (w, True)), unevaluated (see values)."""
    gt, lt, le = (lambda u, v, rel=rel: rel(u, v, evaluate=False) for rel in (sp.Gt, sp.Lt, sp.Le))
    cond = draw(st.sampled_from([gt(y, 0), lt(y, x), sp.And(gt(y, 0), lt(z, 1), evaluate=False),
                                 sp.Or(gt(x, 1), le(z, y), evaluate=False)]))
    arms = [(x, cond)] + ([(z, gt(y, -1))] if draw(st.booleans()) else [])
    return sp.Piecewise(*arms, (w, True), evaluate=False)


@st.composite
def smooth(draw, depth: int = 3, reads: bool = True):
    """values without Piecewise."""
    leaves = [A, B, C, sp.Integer(2), sp.Integer(-3), sp.Rational(1, 2), sp.Rational(-2, 3), sp.Float(0.25)]
    if reads:
        leaves += [DIM]
    if depth <= 0 or draw(st.integers(0, 3)) == 0:
        if reads and draw(st.integers(0, 5)) == 0:
            return T[sp.Mod(draw(indices()), 4)]  # % keeps the read inside t
        return draw(st.sampled_from(leaves))
    sub = smooth(depth - 1, reads)
    x = draw(sub)
    kind = draw(st.sampled_from(["add", "sub", "scale", "mul", "div", "recip", "pow", "realpow", "neg",
                                 "bounded", "growing", "log", "sqrt", "maxmin"]))
    if kind == "add":
        return sp.Add(x, *draw(st.lists(sub, min_size=1, max_size=2)))
    if kind == "sub":
        return x - draw(sub)
    if kind == "scale":  # -3*w*(x + z): a coefficient in front of a product with a sum in it
        return draw(st.sampled_from(COEFFICIENTS)) * x * draw(sub)
    if kind == "mul":
        return sp.Mul(x, *draw(st.lists(sub, min_size=1, max_size=2)))
    if kind == "div":  # one or several factors below the line
        den = sp.Mul(*[positive(draw, draw(sub)) for _ in range(draw(st.integers(1, 2)))])
        return draw(st.sampled_from(COEFFICIENTS + [sp.Integer(1)])) * x / den
    if kind == "recip":  # -2/(1 + exp(-x)), (1 + x**2)**-3
        return draw(st.sampled_from(COEFFICIENTS)) * positive(draw, x) ** -draw(st.integers(1, 5))
    if kind == "pow":
        return x ** draw(st.integers(2, 4))
    if kind == "realpow":  # including powers of powers
        inner = positive(draw, x) ** draw(st.sampled_from(REAL_POWERS))
        return inner ** draw(st.sampled_from([sp.Integer(1), sp.Integer(2), sp.Rational(-1, 2), sp.Float(1.5)]))
    if kind == "neg":
        return -x
    if kind == "bounded":
        return draw(st.sampled_from(BOUNDED))(x)
    if kind == "growing":
        return draw(st.sampled_from(GROWING))(x)
    if kind == "log":
        return sp.log(positive(draw, x))
    if kind == "sqrt":
        return sp.sqrt(positive(draw, x))
    # unevaluated: SymPy orders arguments by proving inequalities between them, which can be slow
    return draw(st.sampled_from([sp.Max, sp.Min]))(x, *draw(st.lists(sub, min_size=1, max_size=2)),
                                                  evaluate=False)


# -- SymPy's evaluation -----------------------------------------------------------------------------
DIGITS = 40
SYMDL_DEFINITIONS = {symdl.sigmoid: lambda x: 1 / (1 + sp.exp(-x)), symdl.softplus: lambda x: sp.log(1 + sp.exp(x))}


class Skip(Exception):
    """The draw cannot be compared: it overflows or sits on a branch point."""


def exact(expr, point: dict) -> tuple[float, float]:
    """(value, largest intermediate magnitude) of `expr` at `point`, by SymPy at 40 digits, node by
    node from the leaves (so every intermediate value is seen and branch points are found)."""
    largest = 0.0

    def ev(e):
        nonlocal largest
        if isinstance(e, sp.Indexed):
            return sp.Float(T_VALUES[int(ev(e.indices[0]))], DIGITS)
        if e in point:
            v = point[e]
            return sp.Integer(v) if isinstance(v, int) else sp.Float(v, DIGITS)
        if e.is_Atom:
            return e
        args = [ev(a) for a in e.args]
        v = SYMDL_DEFINITIONS[e.func](*args) if e.func in SYMDL_DEFINITIONS else e.func(*args)
        if isinstance(e, sp.core.relational.Relational) or isinstance(e, (sp.sign, sp.Abs)):
            gap = abs(sp.N(args[0] - args[1], DIGITS)) if len(args) == 2 else abs(sp.N(args[0], DIGITS))
            if gap < 1e-6 * max(largest, 1.0):
                raise Skip(f"{e} is on its branch point")
        if isinstance(v, sp.Expr) and v.is_number:
            v = sp.N(v, DIGITS)
            if not v.is_real or not v.is_finite or abs(v) > MAGNITUDE:
                raise Skip(f"{e} = {v}")
            largest = max(largest, float(abs(v)))
        return v

    value = ev(expr)
    return float(value), largest


def reference(expr, n: int = len(POINTS)):
    """[(value, magnitude)] at the first n points, or skip the draw."""
    try:
        return [exact(expr, p) for p in POINTS[:n]]
    except Skip as why:
        note(str(why))
        assume(False)


def close(got: float, want: float, magnitude: float, rtol: float) -> bool:
    """Relative to the value and the largest intermediate: a sum may cancel to far below its terms."""
    return bool(np.isfinite(got)) and abs(got - want) <= rtol * (abs(want) + magnitude)


RTOL = {"float64": 1e-9, "float32": 2e-4}


# -- running printed text -------------------------------------------------------------------------
def namespace(dtype: str, printer_class=Printer) -> dict:
    """Globals for printed text: F, np, math and every helper of the dtype (compiled once)."""
    key = (dtype, printer_class)
    if key not in _NAMESPACES:
        p = printer_class(dtype=dtype)
        ns = {"F": np.dtype(dtype).type, "np": np, "math": math, "nb": nb}
        names = sorted(p.helper_table)  # as generated modules import them (backends/cpu/shared.py)
        ns.update(zip(names, shared.helpers(dtype, fingerprint(dtype), *names), strict=True))
        _NAMESPACES[key] = ns
    return _NAMESPACES[key]


_NAMESPACES: dict = {}


def arguments(point: dict, dtype: str) -> dict:
    f = np.dtype(dtype).type
    return {"a": f(point[A]), "b": f(point[B]), "c": f(point[C]), "n": point[DIM], "i": point[I],
            "j": point[J], "H": point[H], "t": np.array(T_VALUES, dtype=dtype)}


def compile_batch(texts: list[str], dtype: str):
    """One numba function computing every text into out[k] (numba compiles once per batch)."""
    lines = [f"    out[{k}] = {text}" for k, text in enumerate(texts)]
    ns = dict(namespace(dtype))
    exec("def batch(a, b, c, n, i, j, H, t, out):\n" + "\n".join(lines) + "\n", ns)  # noqa: S102
    return nb.njit(error_model="numpy")(ns["batch"])


def run_batch(exprs: list, dtype: str) -> list[np.ndarray]:
    """Each expression printed at `dtype` and run by numba: out[point][k]."""
    p = Printer([DIM], dtype=dtype)
    fn = compile_batch([p.value(e) for e in exprs], dtype)
    outs = []
    for point in POINTS:
        out = np.zeros(len(exprs), dtype=dtype)
        fn(**arguments(point, dtype), out=out)
        outs.append(out)
    return outs


# -- the tests --------------------------------------------------------------------------------------
@fuzz_settings(100)
@given(values())
def test_float64_text_matches_sympy(expr):
    """The float64 text under Python's eval (the printed precedence is Python's)."""
    want = reference(expr)
    text = Printer([DIM]).value(expr)
    note(f"expr: {expr}\ntext: {text}")
    for point, (value, magnitude) in zip(POINTS, want, strict=True):
        got = float(eval(text, namespace("float64"), arguments(point, "float64")))  # noqa: S307
        assert close(got, value, magnitude, RTOL["float64"]), (expr, text, point, got, value)


@fuzz_settings(2)
@given(st.lists(values(), min_size=25, max_size=25))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_numba_batches_match_sympy(dtype, exprs):
    """25 draws per numba function (numba compiles once per batch), at each dtype (float32: the
    vectorising helpers)."""
    checked = []
    for e in exprs:
        try:
            checked.append((e, [exact(e, p) for p in POINTS]))
        except Skip:
            pass
    assume(checked)
    outs = run_batch([e for e, _ in checked], dtype)
    for k, (e, want) in enumerate(checked):
        for out, (value, magnitude) in zip(outs, want, strict=True):
            assert close(float(out[k]), value, magnitude, RTOL[dtype]), \
                (e, Printer([DIM], dtype=dtype).value(e), float(out[k]), value)


@fuzz_settings(300)
@given(indices(depth=3), indices(depth=2))
def test_index_arithmetic_matches_sympy_exactly(e, other):
    """Index arithmetic as `python_function` prints it (binding, trip counts, loop bounds)."""
    names = [I, J, H]
    fn = python_function(e, names, dims=[H])
    cond = python_function(sp.Lt(e, other, evaluate=False), names, dims=[H], condition=True)
    for point in POINTS:
        at = {s: point[s] for s in names}
        want, other_want = e.xreplace(at), other.xreplace(at)
        note(f"{e} -> {Printer([H]).index(e)}")
        assert fn(*at.values()) == int(want), (e, Printer([H]).index(e), at)
        assert cond(*at.values()) == bool(want < other_want), (e, other, at)


@fuzz_settings(4)
@given(smooth(depth=3, reads=False))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_drawn_formulas_compile_and_match_sympy(dtype, expr):
    """A few draws through the whole pipeline: y[k] = expr(x[k], w[k], z[k])."""
    assume(expr.free_symbols & {A, B, C})  # a formula needs an input to size it
    want = reference(expr)
    N = sp.Symbol("N", integer=True, positive=True)
    k = sp.Idx("k", N)
    x, w, z, y = map(sp.IndexedBase, "x w z y".split())
    f = symdl.Formula(sp.Eq(y[k], expr.xreplace({A: x[k], B: w[k], C: z[k]})), name="printer_fuzz")
    note(f"formula: {f}")
    arrays = {name: np.array([p[s] for p in POINTS], dtype=dtype) for name, s in zip("xwz", (A, B, C))
              if name in f.input_names}
    got = f.compile()(**arrays)
    assert got.dtype == dtype
    for g, (value, magnitude) in zip(np.asarray(got, dtype=np.float64), want, strict=True):
        assert close(float(g), value, magnitude, RTOL[dtype]), (expr, g, value)
