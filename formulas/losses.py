"""F11 mean squared error and F12 cross-entropies (binary, categorical, sparse with integer labels).

Each loss is the batch mean, as Keras reports it. `clip` (not an entry) is Keras' clipping of
probabilities, which symdl.nn puts in front of the losses on probabilities.
"""
import sympy as sp

from symdl.declare import Formula, Program, sigmoid

from . import entry
from .activations import softmax
from .common import B, C, idx

b, c = idx("b", B), idx("c", C)
L = sp.Symbol("L")


def mse() -> Formula:
    """L = 1/(B C) Σ_b Σ_c (yhat[b, c] - y[b, c])²."""
    yhat, y = sp.IndexedBase("yhat"), sp.IndexedBase("y")
    return Formula(sp.Eq(L, sp.Sum((yhat[b, c] - y[b, c]) ** 2, b, c) / (B * C)), name="mse")


def binary_crossentropy() -> Formula:
    """L = -1/B Σ_b (t log p + (1 - t) log(1 - p)), p a probability, t in [0, 1]."""
    p, t = sp.IndexedBase("p"), sp.IndexedBase("t")
    body = -sp.Sum(t[b] * sp.log(p[b]) + (1 - t[b]) * sp.log(1 - p[b]), b) / B
    return Formula(sp.Eq(L, body), name="binary_crossentropy",
                   domains={"p": (0.05, 0.95), "t": (0.0, 1.0)})


def categorical_crossentropy() -> Formula:
    """L = -1/B Σ_b Σ_c t[b, c] log p[b, c] with one-hot (or soft) targets t."""
    p, t = sp.IndexedBase("p"), sp.IndexedBase("t")
    return Formula(sp.Eq(L, -sp.Sum(t[b, c] * sp.log(p[b, c]), b, c) / B),
                   name="categorical_crossentropy", domains={"p": (0.05, 1.0), "t": (0.0, 1.0)})


def sparse_categorical_crossentropy() -> Formula:
    """L = -1/B Σ_b log p[b, t[b]] with integer labels t (a gather: no one-hot tensor)."""
    p, t = sp.IndexedBase("p", shape=(B, C)), sp.IndexedBase("t", integer=True)
    return Formula(sp.Eq(L, -sp.Sum(sp.log(p[b, t[b]]), b) / B),
                   name="sparse_categorical_crossentropy", domains={"p": (0.05, 1.0)})


entry("mse", "F11", "mean squared error")(mse)
entry("binary_crossentropy", "F12", "binary cross-entropy on probabilities")(binary_crossentropy)
entry("categorical_crossentropy", "F12", "categorical cross-entropy on probabilities")(
    categorical_crossentropy)
entry("sparse_categorical_crossentropy", "F12", "cross-entropy with integer labels")(
    sparse_categorical_crossentropy)


# -- on logits: declared naive (probabilities, then their logs), registered stabilized -------------
# The catalog runs these through symdl.passes.stabilize (formulas/__init__.py): the sigmoid or
# softmax stage is fused into the log, giving softplus(z) - t z, and Σ_c t (lse(z) - z) with the
# row maximum subtracted; the verifier proves each rewrite (symdl.verify.equivalent).

def binary_crossentropy_logits() -> Program:
    """L = -1/B Σ_b (t log σ(z) + (1 - t) log(1 - σ(z))) on logits z; stabilized:
    1/B Σ_b softplus(z) - t z (softplus printed as max(z, 0) + log1p(exp(-|z|)))."""
    z, p = sp.IndexedBase("z"), sp.IndexedBase("p")
    return Program([Formula(sp.Eq(p[b], sigmoid(z[b])), name="p.sigmoid"),
                    binary_crossentropy()], name="binary_crossentropy_logits")


def categorical_crossentropy_logits() -> Program:
    """L = -1/B Σ_b Σ_c t[b, c] log softmax(z)[b, c]; stabilized: 1/B Σ_b Σ_c t (m + log Σ exp(z - m)
    - z), m the row max. Its gradient is (Σ_c t[b, c] p - t) / B: (p - t) / B for one-hot rows."""
    return Program([*softmax("z", "p", C).formulas, categorical_crossentropy()],
                   name="categorical_crossentropy_logits")


def sparse_categorical_crossentropy_logits() -> Program:
    """L = -1/B Σ_b log softmax(z)[b, t[b]] with integer labels; stabilized: 1/B Σ_b (m + log Σ
    exp(z - m) - z[b, t[b]]), whose gradient is (p - onehot(t)) / B."""
    return Program([*softmax("z", "p", C).formulas, sparse_categorical_crossentropy()],
                   name="sparse_categorical_crossentropy_logits")


entry("binary_crossentropy_logits", "F12", "binary cross-entropy on logits: softplus(z) - t z")(
    binary_crossentropy_logits)
entry("categorical_crossentropy_logits", "F12", "softmax + categorical cross-entropy, fused on logits")(
    categorical_crossentropy_logits)
entry("sparse_categorical_crossentropy_logits", "F12", "softmax + cross-entropy with integer labels, on logits")(
    sparse_categorical_crossentropy_logits)


# -- Keras' clipping of probabilities before a log (symdl.nn.losses) -------------------------------
EPSILON = 1e-7  # Keras' backend epsilon: probabilities are clipped to [eps, 1 - eps] under log


def clip(src: str, dst: str, rank: int, eps: float = EPSILON) -> Formula:
    """dst = src clipped to [eps, 1 - eps], over the first `rank` of the axes (B, C). A Piecewise,
    not Min(Max(...)): NaN fails both tests and stays NaN (the printed max/min would turn it into
    eps, and a diverged model would report a finite loss)."""
    ix = tuple([idx("i", B), idx("j", C)][:rank])
    a, out = sp.IndexedBase(src), sp.IndexedBase(dst)
    e, x = sp.Float(eps), a[ix]
    return Formula(sp.Eq(out[ix], sp.Piecewise((e, x < e), (1 - e, x > 1 - e), (x, True))),
                   name=f"clip{rank}")
