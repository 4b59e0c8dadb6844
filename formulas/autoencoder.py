"""F9 autoencoder: encoder h = σ(x W1 + b1) (optionally a second layer), decoder x̂ = σ(h W + b),
with a reconstruction loss (MSE on x̂, or binary cross-entropy written on the decoder's logits).

Each layer has its own dimension symbols (N inputs, M and K hidden), so verification runs at
distinct widths and a transposed weight cannot pass unnoticed.
"""
import sympy as sp

from symdl.declare import Formula, Program, softplus

from . import entry
from .activations import ACTIVATIONS
from .common import B, M, N

K = sp.Symbol("K", integer=True, positive=True)  # width of the optional second hidden layer


def dense(x: str, W: str, b: str, out: str, n_in, n_out, activation: str | None = None,
          sizes: dict | None = None, domains: dict | None = None) -> list:
    """[out_z[i, j] = Σ_k x[i, k] W[k, j] + b[j], out = f(out_z)] (formulas.dense.linear with its
    own dimensions; one formula when there is no activation)."""
    i, j, k = sp.Idx("i", B), sp.Idx("j", n_out), sp.Idx("k", n_in)
    X, Wt, bt = (sp.IndexedBase(n) for n in (x, W, b))
    z = out if activation is None else f"{out}_z"
    stages = [Formula(sp.Eq(sp.IndexedBase(z)[i, j], sp.Sum(X[i, k] * Wt[k, j], k) + bt[j]),
                      name=f"{out}.dense", sizes=sizes, domains=domains)]
    if activation is not None:
        act = ACTIVATIONS[activation](sp.IndexedBase(z)[i, j])
        stages.append(Formula(sp.Eq(sp.IndexedBase(out)[i, j], act), name=f"{out}.{activation}"))
    return stages


def mse(pred: str = "xhat", target: str = "x", out: str = "L", n=N, sizes: dict | None = None) -> Formula:
    """out = 1/(B n) Σ_i Σ_j (pred[i, j] - target[i, j])²."""
    i, j = sp.Idx("i", B), sp.Idx("j", n)
    p, t = sp.IndexedBase(pred), sp.IndexedBase(target)
    return Formula(sp.Eq(sp.Symbol(out), sp.Sum((p[i, j] - t[i, j]) ** 2, i, j) / (B * n)), name=f"{out}.mse",
                   sizes=sizes)


def bce_logits(logits: str = "xhat_z", target: str = "x", out: str = "L", n=N,
               sizes: dict | None = None) -> Formula:
    """Binary cross-entropy of p = σ(a) against targets t in [0, 1], on the logits a:
    -t log σ(a) - (1 - t) log(1 - σ(a)) = t softplus(-a) + (1 - t) softplus(a), finite for any a."""
    i, j = sp.Idx("i", B), sp.Idx("j", n)
    a, t = sp.IndexedBase(logits), sp.IndexedBase(target)
    body = sp.Sum(t[i, j] * softplus(-a[i, j]) + (1 - t[i, j]) * softplus(a[i, j]), i, j) / (B * n)
    return Formula(sp.Eq(sp.Symbol(out), body), name=f"{out}.bce", domains={target: (0.0, 1.0)},
                   sizes=sizes)


def autoencoder(loss: str | None = "mse", layers: int = 1, x: str = "x", out: str = "xhat",
                hidden: str = "h", loss_name: str = "L", sizes: dict | None = None,
                name: str | None = None) -> Program:
    """Sigmoid autoencoder x[B, N] -> h[B, M] (-> h2[B, K] with `layers=2`) -> xhat[B, N].
    Weights are W1, b1, W2, b2, ... in layer order (one encoder layer: decoder W2, b2).
    `loss` "mse" or "bce" appends the reconstruction loss `loss_name` (the program's output;
    xhat is still computed) -- BCE reads the decoder's logits `xhat_z`, so it never takes log 0."""
    if layers not in (1, 2):
        raise ValueError(f"layers must be 1 or 2, got {layers}")
    widths = [N, M, K][:layers + 1] + [N]
    names = [x] + [hidden if n == 1 else f"{hidden}{n}" for n in range(1, layers + 1)] + [out]
    if loss not in ("mse", "bce", None):
        raise ValueError(f"loss must be 'mse', 'bce' or None, got {loss!r}")
    # a Program takes an input's domain from the first formula reading it: BCE targets are in [0, 1]
    first = {"sizes": sizes, "domains": {x: (0.0, 1.0)} if loss == "bce" else None}
    stages = []
    for n in range(len(widths) - 1):
        stages += dense(names[n], f"W{n + 1}", f"b{n + 1}", names[n + 1], widths[n], widths[n + 1], "sigmoid",
                        **(first if n == 0 else {}))
    if loss == "mse":
        stages.append(mse(out, x, loss_name))
    elif loss == "bce":
        stages.append(bce_logits(f"{out}_z", x, loss_name))
    default = "autoencoder" + ("2" if layers == 2 else "") + (f"_{loss}" if loss else "")
    return Program(stages, name=name or default,
                   outputs=(loss_name,) if loss else None)


_SIZES = {B: 2, N: 3, M: 2, K: 1}
entry("autoencoder", "F9", "sigmoid autoencoder x -> h = σ(x W1 + b1) -> xhat = σ(h W2 + b2)")(
    lambda: autoencoder(None, sizes=_SIZES))
entry("autoencoder_mse", "F9", "sigmoid autoencoder with mean squared reconstruction error")(
    lambda: autoencoder("mse", sizes=_SIZES))
entry("autoencoder_bce", "F9", "sigmoid autoencoder with binary cross-entropy on the decoder logits")(
    lambda: autoencoder("bce", sizes=_SIZES))
entry("autoencoder2_mse", "F9", "two-layer sigmoid encoder, sigmoid decoder, MSE")(
    lambda: autoencoder("mse", layers=2, sizes=_SIZES))
