"""F13 gradient descent: w_(t+1) = w_t - η ∇L(w_t), on a flat parameter vector."""
import sympy as sp

from symdl import Formula

from . import entry
from .common import N, idx

i = idx("i", N)
w, g, w_new = sp.IndexedBase("w"), sp.IndexedBase("g"), sp.IndexedBase("w_new")
lr = sp.Symbol("lr")


def sgd_update() -> Formula:
    """w_new[i] = w[i] - lr · g[i]."""
    return Formula(sp.Eq(w_new[i], w[i] - lr * g[i]), name="sgd_update")


entry("sgd_update", "F13", "gradient-descent step w - lr g")(sgd_update)
