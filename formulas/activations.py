"""F16 activations, elementwise on a batch of rows; the row-wise softmax, log-softmax and
log-sum-exp.

The builders declare the textbook (naive) forms; the catalog registers them through
`symdl.passes.stabilize` (see formulas/__init__.py), which subtracts the row maximum, and the
verifier proves the stable programs equal to these (symdl.verify.equivalent). `stable_softmax`
(not an entry) is that stabilized softmax for symdl.nn's Dense and Activation layers.
"""
import sympy as sp

from symdl.declare import Formula, Program, relu, sigmoid
from symdl.passes import stabilize

from . import entry
from .common import B, N, idx, tensors

i, j = idx("i", B), idx("j", N)
x, y = tensors("x y")

ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": sp.tanh}


def activation(kind: str, src: str = "x", dst: str = "y") -> Formula:
    """dst[i, j] = f(src[i, j]) for f in relu, sigmoid, tanh."""
    a, b = sp.IndexedBase(src), sp.IndexedBase(dst)
    return Formula(sp.Eq(b[i, j], ACTIVATIONS[kind](a[i, j])), name=kind)


def softmax(src: str = "z", dst: str = "p", n=N) -> Program:
    """p[i, j] = exp(z[i, j]) / Σ_k exp(z[i, k]) over rows of length `n`: exponentials, row sums,
    division (naive: exp overflows above ~88 in float32; `symdl.passes.stabilize` subtracts the
    row maximum)."""
    j, k = idx("j", n), idx("k", n)
    z, e, s, p = sp.IndexedBase(src), sp.IndexedBase(f"{src}_exp"), sp.IndexedBase(f"{src}_sum"), \
        sp.IndexedBase(dst)
    return Program([
        Formula(sp.Eq(e[i, j], sp.exp(z[i, j])), name=f"{dst}.exp"),
        Formula(sp.Eq(s[i], sp.Sum(e[i, k], k)), name=f"{dst}.sum"),
        Formula(sp.Eq(p[i, j], e[i, j] / s[i]), name=f"{dst}.divide"),
    ], name="softmax")


def stable_softmax(src: str = "z", dst: str = "p") -> Program:
    """`softmax` over the last axis of src[i, j], stabilized (row max subtracted)."""
    return stabilize(softmax(src, dst))


def log_softmax(src: str = "z", dst: str = "y") -> Program:
    """dst[i, j] = log softmax(src)[i, j], naive: the softmax program, then a log (which is -inf
    where the softmax underflows to 0; stabilized it is z - max - log Σ exp(z - max))."""
    sm = softmax(src, f"{dst}_p")
    p, out = sp.IndexedBase(f"{dst}_p"), sp.IndexedBase(dst)
    return Program([*sm.formulas, Formula(sp.Eq(out[i, j], sp.log(p[i, j])), name=f"{dst}.log")],
                   name="log_softmax")


def logsumexp(src: str = "z", dst: str = "y") -> Formula:
    """dst[i] = log Σ_k exp(src[i, k]), naive (stabilized: m + log Σ exp(z - m), m the row max)."""
    k = idx("k", N)
    z, out = sp.IndexedBase(src), sp.IndexedBase(dst)
    return Formula(sp.Eq(out[i], sp.log(sp.Sum(sp.exp(z[i, k]), k))), name="logsumexp")


for _kind in ACTIVATIONS:
    entry(_kind, "F16", f"{_kind} activation, elementwise")(lambda k=_kind: activation(k))
entry("softmax", "F16", "row-wise softmax: row max, shifted exp, row sum, divide")(softmax)
entry("log_softmax", "F16", "row-wise log-softmax z - max - log Σ exp(z - max)")(log_softmax)
entry("logsumexp", "F16", "row-wise log-sum-exp max + log Σ exp(z - max)")(logsumexp)
entry("leaky_relu", "F16", "leaky relu max(x, 0.01 x)")(
    lambda: Formula(sp.Eq(y[i, j], sp.Max(x[i, j], sp.Rational(1, 100) * x[i, j])), name="leaky_relu"))
