"""F16 activations, elementwise on a batch of rows, and the row-wise softmax as a Program."""
import sympy as sp

from symdl import Formula, Program, relu, sigmoid

from . import entry
from .common import B, N, idx, tensors

i, j = idx("i", B), idx("j", N)
x, y = tensors("x y")

ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": sp.tanh}


def activation(kind: str, src: str = "x", dst: str = "y") -> Formula:
    """dst[i, j] = f(src[i, j]) for f in relu, sigmoid, tanh."""
    a, b = sp.IndexedBase(src), sp.IndexedBase(dst)
    return Formula(sp.Eq(b[i, j], ACTIVATIONS[kind](a[i, j])), name=kind)


def softmax(src: str = "z", dst: str = "p") -> Program:
    """p[i, j] = exp(z[i, j]) / Σ_k exp(z[i, k]): exponentials, row sums, division."""
    k = idx("k", N)
    z, e, s, p = sp.IndexedBase(src), sp.IndexedBase(f"{src}_exp"), sp.IndexedBase(f"{src}_sum"), \
        sp.IndexedBase(dst)
    return Program([
        Formula(sp.Eq(e[i, j], sp.exp(z[i, j])), name=f"{dst}.exp"),
        Formula(sp.Eq(s[i], sp.Sum(e[i, k], k)), name=f"{dst}.sum"),
        Formula(sp.Eq(p[i, j], e[i, j] / s[i]), name=f"{dst}.divide"),
    ], name="softmax")


for _kind in ACTIVATIONS:
    entry(_kind, "F16", f"{_kind} activation, elementwise")(lambda k=_kind: activation(k))
entry("softmax", "F16", "row-wise softmax: exp, row sum, divide")(softmax)
entry("leaky_relu", "F16", "leaky relu max(x, 0.01 x)")(
    lambda: Formula(sp.Eq(y[i, j], sp.Max(x[i, j], sp.Rational(1, 100) * x[i, j])), name="leaky_relu"))
