"""Kernels the printer once got wrong (or could), compiled and compared with NumPy; and every
elementwise function the declaration error lists, forward and gradient, float32 and float64.

SymPy's precedence() ranks a product with a negative coefficient with +, so `-3*w*(x + z)` printed
as `F(-3) * x + z * w` and `-2/(1 + exp(-x))` as `F(-2) / F(1) + math.exp(-x)`.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import reference
from symdl.backends.cpu.printer import CpuPrinter as Printer
from symdl.printing import python_function
from symdl.declare.functions import ELEMENTWISE
from symdl.errors import FormulaError

N, D = sp.symbols("N D", integer=True, positive=True)
i, j = sp.Idx("i", N), sp.Idx("j", D)
x, w, z, y, g = map(sp.IndexedBase, "x w z y g".split())
RNG = np.random.default_rng(3)
TOL = {"float64": 1e-10, "float32": 2e-5}
DTYPES = ["float64", "float32"]


def _close(got, want, dtype):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_coefficient_times_a_sum(dtype):
    f = symdl.Formula(sp.Eq(y[i], -3 * w[i] * (x[i] + z[i])), name="reg_neg_sum")
    a = {k: RNG.normal(size=5).astype(dtype) for k in "xwz"}
    _close(f.compile()(**a), -3 * a["w"].astype(float) * (a["x"].astype(float) + a["z"]), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_negative_coefficient_over_a_sum(dtype):
    f = symdl.Formula(sp.Eq(y[i], -2 / (1 + sp.exp(-x[i]))), name="reg_neg_over_sum")
    xv = RNG.normal(size=5).astype(dtype)
    _close(f.compile()(x=xv), -2 / (1 + np.exp(-xv.astype(float))), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hand_written_sigmoid_gradient(dtype):
    """d/dx 1/(1 + exp(-x)) = exp(-x)/(1 + exp(-x))**2: the -c/(a + b) patterns of the chain rule."""
    f = symdl.Formula(sp.Eq(y[i], 1 / (1 + sp.exp(-x[i]))), name="reg_sigmoid_hand")
    xv, gy = RNG.normal(size=6).astype(dtype), RNG.normal(size=6).astype(dtype)
    s = 1 / (1 + np.exp(-xv.astype(float)))
    _close(f.compile().vjp(gy, x=xv)["x"], gy * s * (1 - s), dtype)


def test_layer_norm_gradient_matches_numpy():
    """y = (x - mean) / sqrt(var + eps) in one formula; its gradient against NumPy's hand-written one."""
    eps = sp.Rational(1, 100)
    k, m = sp.Idx("k", D), sp.Idx("m", D)
    mean = sp.Sum(x[i, k], k) / D
    var = sp.Sum((x[i, m] - mean) ** 2, m) / D
    f = symdl.Formula(sp.Eq(y[i, j], (x[i, j] - mean) / sp.sqrt(var + eps)), name="reg_layer_norm")
    xv, gy = RNG.normal(size=(3, 5)), RNG.normal(size=(3, 5))
    mu = xv.mean(1, keepdims=True)
    r = 1 / np.sqrt(((xv - mu) ** 2).mean(1, keepdims=True) + 0.01)
    xhat = (xv - mu) * r
    _close(f.compile()(x=xv), xhat, "float64")
    want = r * (gy - gy.mean(1, keepdims=True) - xhat * (gy * xhat).mean(1, keepdims=True))
    _close(f.compile().vjp(gy, x=xv)["x"], want, "float64")


def test_negative_half_gamma_squared_times_sums():
    """-γ²/2·(Σd² + Σl²), forward and the gradients of all three inputs."""
    k = sp.Idx("k", D)
    d, lv, gam, out = sp.IndexedBase("d"), sp.IndexedBase("l"), sp.IndexedBase("gam"), sp.IndexedBase("out")
    body = -gam[i] ** 2 / 2 * (sp.Sum(d[i, k] ** 2, k) + sp.Sum(lv[i, k] ** 2, k))
    f = symdl.Formula(sp.Eq(out[i], body), name="reg_gamma_sq")
    a = {"d": RNG.normal(size=(3, 4)), "l": RNG.normal(size=(3, 4)), "gam": RNG.normal(size=3)}
    s = (a["d"] ** 2).sum(1) + (a["l"] ** 2).sum(1)
    _close(f.compile()(**a), -a["gam"] ** 2 / 2 * s, "float64")
    go = RNG.normal(size=3)
    grads = f.compile().vjp(go, **a)
    _close(grads["gam"], -go * a["gam"] * s, "float64")
    _close(grads["d"], (-go * a["gam"] ** 2)[:, None] * a["d"], "float64")
    _close(grads["l"], (-go * a["gam"] ** 2)[:, None] * a["l"], "float64")


@pytest.mark.parametrize("expr, want", [
    ((2 * sp.Symbol("p", integer=True)) ** 2, lambda p, H: (2 * p) ** 2),
    (sp.Pow(2 * sp.Symbol("p", integer=True), 3, evaluate=False), lambda p, H: (2 * p) ** 3),
    (sp.Pow(-sp.Symbol("p", integer=True), 3, evaluate=False), lambda p, H: (-p) ** 3),
    (sp.floor(sp.Symbol("p", integer=True) / (2 * sp.Symbol("H", integer=True, positive=True))),
     lambda p, H: p // (2 * H)),
    (sp.Mod(sp.Symbol("p", integer=True), 2 * sp.Symbol("H", integer=True, positive=True)), lambda p, H: p % (2 * H)),
    (sp.ceiling(sp.Symbol("p", integer=True) / (3 * sp.Symbol("H", integer=True, positive=True))),
     lambda p, H: -(-p // (3 * H))),
    (-sp.Symbol("H", integer=True, positive=True) * sp.floor(sp.Symbol("p", integer=True) / 2),
     lambda p, H: -H * (p // 2)),
])
def test_index_context(expr, want):
    """Powers of products and floor division by products, printed as index arithmetic."""
    p, H = sp.Symbol("p", integer=True), sp.Symbol("H", integer=True, positive=True)
    fn = python_function(expr, [p, H], dims=[H])
    for pv in range(-7, 8):
        for hv in (1, 2, 3):
            assert fn(pv, hv) == want(pv, hv) == int(expr.subs({p: pv, H: hv})), (expr, Printer([H]).index(expr))


def test_index_condition_with_a_fraction_is_not_rounded():
    p, H = sp.Symbol("p", integer=True), sp.Symbol("H", integer=True, positive=True)
    for cond in (p < (H - 1) / 2, sp.Eq(p, H / 2), p >= H / 3):
        fn = python_function(cond, [p, H], dims=[H], condition=True)
        for pv in range(-4, 6):
            for hv in (1, 2, 3, 4):
                assert fn(pv, hv) == bool(cond.subs({p: pv, H: hv})), (cond, pv, hv)


@pytest.mark.parametrize("expr", [
    -3 * sp.Symbol("a") * (sp.Symbol("b") + sp.Symbol("c")),
    -2 / (1 + sp.exp(-sp.Symbol("a"))),
    sp.Symbol("b") - 3 / (sp.Symbol("a") ** 2 + 1) / (sp.exp(sp.Symbol("c")) + 2),
    -sp.Symbol("a") ** 2,
    sp.Piecewise((sp.Symbol("a") + sp.Symbol("b"), sp.Symbol("c") > 0), (0, True)) * -2,
])
def test_printed_text_is_python_of_the_same_value(expr):
    """The printed text, run by Python, against SymPy."""
    point = {sp.Symbol("a"): 0.5, sp.Symbol("b"): -1.25, sp.Symbol("c"): 2.0}
    text = Printer().value(expr)
    got = eval(text, {"F": float, "math": math, "np": np}, {s.name: v for s, v in point.items()})  # noqa: S307
    assert got == pytest.approx(float(expr.subs(point)), rel=1e-12), text


# every function the declaration error lists (ELEMENTWISE), each in its domain
ARGUMENT = {"log": lambda a: a**2 + sp.Rational(1, 2), "sign": lambda a: a, "Max": lambda a: a,
            "Min": lambda a: a, "Heaviside": lambda a: a}
CALL = {"Max": lambda a: sp.Max(a, sp.Rational(1, 3)), "Min": lambda a: sp.Min(a, -sp.Rational(1, 4))}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ELEMENTWISE))
def test_every_listed_function_forward_and_gradient(name, dtype):
    """y = f(x) * w + x: forward against symdl.reference and NumPy-free SymPy, gradients against
    central finite differences in float64 (away from kinks: inputs are at least 0.05 from 0)."""
    fn = CALL.get(name, ELEMENTWISE[name])
    body = fn(ARGUMENT.get(name, lambda a: a)(x[i])) * w[i] + x[i]
    f = symdl.Formula(sp.Eq(y[i], body), name=f"reg_fn_{name}")
    xv = np.array([-1.3, -0.4, 0.05, 0.7, 1.6])
    wv = np.array([0.5, -1.0, 2.0, 0.25, -0.75])
    kern = f.compile()
    got = kern(x=xv.astype(dtype), w=wv.astype(dtype))
    a = sp.Symbol("a", real=True)
    scalar = fn(ARGUMENT.get(name, lambda a: a)(a))
    scalar = scalar.replace(symdl.sigmoid, lambda u: 1 / (1 + sp.exp(-u))).replace(
        symdl.softplus, lambda u: sp.log(1 + sp.exp(u)))
    want = np.array([float(sp.N(scalar.subs(a, v), 30)) * wv[n] + v for n, v in enumerate(xv)])
    _close(got, want, dtype)
    _close(got, reference.evaluate(f, {"x": xv, "w": wv}), dtype)
    gy = np.array([1.0, -0.5, 0.25, 2.0, -1.5])
    grads = kern.vjp(gy.astype(dtype), x=xv.astype(dtype), w=wv.astype(dtype))
    h = 1e-6

    def at(xs):
        return np.array([float(sp.N(scalar.subs(a, v), 30)) for v in xs])

    fd_x = gy * ((at(xv + h) - at(xv - h)) / (2 * h) * wv + 1)
    tol = 1e-6 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(np.asarray(grads["x"], float), fd_x, rtol=tol, atol=tol)
    np.testing.assert_allclose(np.asarray(grads["w"], float), gy * at(xv), rtol=tol, atol=tol)


def test_declaration_error_lists_the_new_functions():
    with pytest.raises(FormulaError, match="erf, Abs, sign"):
        symdl.Formula(sp.Eq(y[i], sp.gamma(x[i])), name="reg_unsupported")


@pytest.mark.parametrize("stride", [1, 2])
def test_parallel_parts_of_a_compound_range(stride):
    """Was: the parallel flavour's parts of a loop over [0, L - K + 1) printed as
    `1 + L - K * _part // _parts` (backends/statements.py `_parts_loop`), a wrong split the
    serial flavour never showed: only calls of 2^18 (compiled) or 2^22 iterations take the parallel flavour."""
    L, K = sp.symbols("L K", integer=True, positive=True)
    m = sp.Idx("m", K)
    xs, ws, ys = sp.IndexedBase("x", shape=(L,)), sp.IndexedBase("w"), sp.IndexedBase("y")
    i = sp.Idx("i", L - K + 1 if stride == 1 else (L - K) // 2 + 1)
    f = symdl.Formula(sp.Eq(ys[i], sp.Sum(ws[m] * xs[stride * i + m], m)), name=f"parts_s{stride}")
    symdl.verify.backends(f, sizes={"L": 11, "K": 3}, parallel=True)
