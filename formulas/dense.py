"""F3 dense layers y = f(x W + b): the contraction, then the activation, as a Program."""
import sympy as sp

from symdl.declare import Formula, Program

from . import entry
from .activations import ACTIVATIONS, softmax
from .common import B, M, N, idx

i, j, k = idx("i", B), idx("j", M), idx("k", N)


def linear(x="x", W="W", b="b", out="y", name="dense") -> Formula:
    """out[i, j] = Σ_k x[i, k] W[k, j] + b[j] (Keras layout: kernel (in, out))."""
    X, Wt, bt, Y = (sp.IndexedBase(n) for n in (x, W, b, out))
    return Formula(sp.Eq(Y[i, j], sp.Sum(X[i, k] * Wt[k, j], k) + bt[j]), name=name)


def layer(activation: str | None, x="x", W="W", b="b", out="y") -> Program | Formula:
    """A dense layer with an activation: z = x W + b, then y = f(z)."""
    if activation in (None, "linear"):
        return linear(x, W, b, out)
    z = f"{out}_z"
    if activation == "softmax":
        sm = softmax(z, out)
        return Program([linear(x, W, b, z, name=f"{out}.dense"), *sm.formulas], name="dense_softmax")
    Z, Y = sp.IndexedBase(z), sp.IndexedBase(out)
    jj = idx("j", M)
    act = Formula(sp.Eq(Y[i, jj], ACTIVATIONS[activation](Z[i, jj])), name=f"{out}.{activation}")
    return Program([linear(x, W, b, z, name=f"{out}.dense"), act], name=f"dense_{activation}")


entry("dense", "F3", "dense layer y = x W + b")(linear)
for _act in ("relu", "sigmoid", "tanh", "softmax"):
    entry(f"dense_{_act}", "F3", f"dense layer with {_act}: y = {_act}(x W + b)")(lambda a=_act: layer(a))
