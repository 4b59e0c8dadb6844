"""F7 additive (Bahdanau) attention and F8 scaled dot-product attention, as staged Programs.

Each stage is one small formula (projections, scores, softmax as exp / row sum / divide, the
weighted sum of values), so every derived gradient is itself a small contraction with the cost of
its forward stage. The causal mask is a Piecewise on the indices around the exponential: masked
weights are exactly 0, their gradients exactly 0, and nothing infinite is ever formed (a -inf score
would give 0·inf = NaN in the backward pass).

The softmax is plain by default: exp / row sum / divide. Its forward is finite while scores stay
below ~700 (float64) / ~88 (float32), but its derived gradient divides by the squared row sum,
which overflows once scores pass ~354 / ~44 (the gradient then silently loses a term). For training,
`stable=True` subtracts the row maximum first (`symdl.Max`, whose arg-max gradient costs one scan
per row). The builders declare the plain form by default; the catalog registers it through
`symdl.passes.stabilize` (the same row-max shift; masked entries stand in as the row minimum),
which the verifier proves region by region (symdl.verify.equivalent): expanding a whole stabilized
program is too slow.

`keras_dot_attention`, `keras_multi_head_attention` and `keras_additive_attention` (not entries)
adapt these programs, stabilized, to the inputs and weights of symdl.nn's attention layers.
"""
import sympy as sp

from symdl.declare import Formula, Max, Program
from symdl.passes import stabilize

from . import entry
from .common import B

# F7: queries T, keys/values S (the "H" of the documents), features D, attention units U.
# F8: sequence S (queries T = S in self-attention), embedding E, heads NH, head size D.
T, S, D, U, E, NH = sp.symbols("T S D U E NH", integer=True, positive=True)
EK, EV = sp.symbols("EK EV", integer=True, positive=True)  # key and value widths (MultiHeadAttention)


def softmax_stages(score: str, out: str, outer: tuple, s, causal_t=None, stable: bool = False) -> list:
    """out[..., s] = exp(score) / Σ_s exp(score) over the last index `s` (outer indices `outer`).

    With `causal_t`, the exponential of a position s > t is 0 (a Piecewise on the indices), so
    masked weights and their gradients are exactly 0. With `stable`, the row maximum is
    subtracted first (`symdl.Max`; its arg-max gradient is hoisted to one scan per row)."""
    sc, ex, den, w = (sp.IndexedBase(n) for n in (score, f"{out}_exp", f"{out}_sum", out))
    s2 = sp.Idx(f"{s.label}2", s.upper + 1)
    stages, arg = [], sc[(*outer, s)]
    if stable:
        mx, src = sp.IndexedBase(f"{out}_max"), sc
        if causal_t is not None:  # the max over s <= t: masked scores stand in as the diagonal one
            src = sp.IndexedBase(f"{out}_masked")
            stages.append(Formula(sp.Eq(src[(*outer, s)], sp.Piecewise((arg, s <= causal_t),
                                                                        (sc[(*outer, causal_t)], True))),
                                  name=f"{out}.masked"))
        stages.append(Formula(sp.Eq(mx[outer], Max(src[(*outer, s)], s)), name=f"{out}.max"))
        arg = arg - mx[outer]
    value = sp.exp(arg)
    if causal_t is not None:
        value = sp.Piecewise((value, s <= causal_t), (0, True))
    # the row sum runs over every s (masked terms are exactly 0): symdl cannot yet differentiate
    # a Sum whose bound is an output index (s2 <= t fails in delta elimination)
    return stages + [
        Formula(sp.Eq(ex[(*outer, s)], value), name=f"{out}.exp"),
        Formula(sp.Eq(den[outer], sp.Sum(ex[(*outer, s2)], s2)), name=f"{out}.sum"),
        Formula(sp.Eq(w[(*outer, s)], ex[(*outer, s)] / den[outer]), name=f"{out}.divide"),
    ]


def additive_attention(Q="Q", H="H", W="W", R="R", bias="bias", v="v", out="c", weights="A",
                       stable: bool = False, sizes: dict | None = None,
                       name: str = "additive_attention") -> Program:
    """Bahdanau attention: e[b, t, s] = Σ_u v[u] tanh(Σ_d Q[b, t, d] W[d, u] + Σ_d H[b, s, d] R[d, u]
    + bias[u]), A = softmax over s, out[b, t, d] = Σ_s A[b, t, s] H[b, s, d]. Intermediates are
    named after `out` (out_q, out_k, out_tanh, out_score) and `weights` (A_exp, A_sum)."""
    b, t, s, d, u = (sp.Idx(n, r) for n, r in (("b", B), ("t", T), ("s", S), ("d", D), ("u", U)))
    q, h, w, r, bb, vv = (sp.IndexedBase(n) for n in (Q, H, W, R, bias, v))
    qp, hp, act, e, a, c = (sp.IndexedBase(n) for n in (f"{out}_q", f"{out}_k", f"{out}_tanh",
                                                        f"{out}_score", weights, out))
    return Program([
        Formula(sp.Eq(qp[b, t, u], sp.Sum(q[b, t, d] * w[d, u], d)), name=f"{out}.query"),
        Formula(sp.Eq(hp[b, s, u], sp.Sum(h[b, s, d] * r[d, u], d)), name=f"{out}.key"),
        Formula(sp.Eq(act[b, t, s, u], sp.tanh(qp[b, t, u] + hp[b, s, u] + bb[u])), name=f"{out}.tanh"),
        Formula(sp.Eq(e[b, t, s], sp.Sum(vv[u] * act[b, t, s, u], u)), name=f"{out}.score"),
        *softmax_stages(e.name, weights, (b, t), s, stable=stable),
        Formula(sp.Eq(c[b, t, d], sp.Sum(a[b, t, s] * h[b, s, d], s)), name=f"{out}.context", sizes=sizes),
    ], name=name)


def dot_product_attention(heads: bool = False, causal: bool = False, stable: bool = False, x="x", Wq="Wq",
                          Wk="Wk", Wv="Wv", Wo="Wo", out="y", weights="A", sizes: dict | None = None,
                          name: str | None = None) -> Program:
    """Self-attention on x[b, s, e]: q, k, v = x Wq, x Wk, x Wv; A = softmax_s(q·k / sqrt(D)), over
    s <= t only when `causal`; o = Σ_s A v; out[b, t, e] = Σ o Wo. With `heads` the weights are
    Wq/Wk/Wv[e, h, d], Wo[h, d, e] and q[b, h, t, d], o[b, t, h, d]; without, Wq/Wk/Wv[e, d],
    Wo[d, e]. Intermediates are named after `out` (out_q, out_k, out_v, out_score, out_o) and
    `weights` (A_exp, A_sum, A_max)."""
    b, t, s, d, e, h = (sp.Idx(n, r) for n, r in (("b", B), ("t", S), ("s", S), ("d", D), ("e", E),
                                                   ("h", NH)))
    X, wq, wk, wv, wo = (sp.IndexedBase(n) for n in (x, Wq, Wk, Wv, Wo))
    q, k, v, sc, a, o, y = (sp.IndexedBase(n) for n in (f"{out}_q", f"{out}_k", f"{out}_v", f"{out}_score",
                                                         weights, f"{out}_o", out))
    hd = (h,) if heads else ()
    kind = "multi_head_attention" if heads else "dot_product_attention"
    return Program([
        Formula(sp.Eq(q[(b, *hd, t, d)], sp.Sum(X[b, t, e] * wq[(e, *hd, d)], e)), name=f"{out}.query"),
        Formula(sp.Eq(k[(b, *hd, s, d)], sp.Sum(X[b, s, e] * wk[(e, *hd, d)], e)), name=f"{out}.key"),
        Formula(sp.Eq(v[(b, *hd, s, d)], sp.Sum(X[b, s, e] * wv[(e, *hd, d)], e)), name=f"{out}.value"),
        Formula(sp.Eq(sc[(b, *hd, t, s)], sp.Sum(q[(b, *hd, t, d)] * k[(b, *hd, s, d)], d) / sp.sqrt(D)),
                name=f"{out}.score"),
        *softmax_stages(sc.name, weights, (b, *hd, t), s, causal_t=t if causal else None, stable=stable),
        Formula(sp.Eq(o[(b, t, *hd, d)], sp.Sum(a[(b, *hd, t, s)] * v[(b, *hd, s, d)], s)),
                name=f"{out}.mix"),
        Formula(sp.Eq(y[b, t, e], sp.Sum(o[(b, t, *hd, d)] * wo[(*hd, d, e)], *hd, d)), name=f"{out}.output",
                sizes=sizes),
    ], name=name or kind + ("_causal" if causal else ""))


# Verification sizes: the symbolic check expands the whole program to scalars and its cost grows
# fast with D·E (exp of sums of products), so each entry keeps one of D, E at 1 and the others tiny;
# tests/test_attention.py checks every size against NumPy.
_SINGLE = {B: 1, S: 2, D: 2, E: 1}
_MULTI = {B: 1, S: 2, D: 1, E: 2, NH: 2}
entry("additive_attention", "F7", "Bahdanau attention: softmax_s(v·tanh(Q W + H R + b)), context A H")(
    lambda: additive_attention(sizes={B: 1, T: 2, S: 3, D: 2, U: 1}))
entry("dot_product_attention", "F8", "scaled dot-product self-attention, one head, Q/K/V/O projections")(
    lambda: dot_product_attention(sizes=_SINGLE))
entry("dot_product_attention_causal", "F8", "scaled dot-product self-attention, one head, causal mask")(
    lambda: dot_product_attention(causal=True, sizes={**_SINGLE, S: 3}))
entry("multi_head_attention", "F8", "multi-head scaled dot-product self-attention")(
    lambda: dot_product_attention(heads=True, sizes=_MULTI))
entry("multi_head_attention_causal", "F8", "multi-head scaled dot-product self-attention, causal mask")(
    lambda: dot_product_attention(heads=True, causal=True, sizes=_MULTI))


# -- symdl.nn's layers: the builders above with Keras' inputs (query, value, key) ------------------

def _adapt(base: Program, replace: dict, name: str) -> Program:
    """`base` with the formulas named in `replace` swapped for lists of formulas (in place)."""
    out = []
    for f in base.formulas:
        out += replace.get(f.name, [f])
    return stabilize(Program(out, name=name))


def keras_dot_attention(causal: bool, use_scale: bool) -> Program:
    """Keras Attention (score_mode "dot"): y_score[b, t, s] = [scale ·] Σ_d q[b, t, d] k[b, s, d],
    A = softmax_s (over s <= t when causal), y[b, t, d] = Σ_s A[b, t, s] v[b, s, d]; queries T,
    values S. The softmax stages are `softmax_stages`, stabilized."""
    b, t, s, d = (sp.Idx(n, r) for n, r in (("b", B), ("t", T), ("s", S), ("d", D)))
    q, k, v, sc, a, y = (sp.IndexedBase(n) for n in ("query", "key", "value", "y_score", "A", "y"))
    score = sp.Sum(q[b, t, d] * k[b, s, d], d)
    return stabilize(Program([
        Formula(sp.Eq(sc[b, t, s], sp.Symbol("scale") * score if use_scale else score), name="y.score"),
        *softmax_stages(sc.name, "A", (b, t), s, causal_t=t if causal else None),
        Formula(sp.Eq(y[b, t, d], sp.Sum(a[b, t, s] * v[b, s, d], s)), name="y.mix"),
    ], name="attention" + ("_causal" if causal else "")))


def keras_multi_head_attention(causal: bool, use_bias: bool) -> Program:
    """The multi-head program (scores / sqrt(D), softmax, mix) with Keras' projections:
    query[b, t, e] Wq[e, h, d] (+ bq[h, d]), key and value likewise from their own inputs (widths
    EK, EV), output Σ_hd o[b, t, h, d] Wo[h, d, e] (+ bo[e]). Query and value sequences share the
    length S, as in `dot_product_attention`."""
    b, t, s, d, h = (sp.Idx(n, r) for n, r in (("b", B), ("t", S), ("s", S), ("d", D), ("h", NH)))
    e, ek, ev = sp.Idx("e", E), sp.Idx("e", EK), sp.Idx("e", EV)
    base = dot_product_attention(heads=True, causal=causal, out="y", weights="A")
    X = {n: sp.IndexedBase(n) for n in ("query", "key", "value")}
    W = {n: sp.IndexedBase(n) for n in ("Wq", "Wk", "Wv", "Wo", "bq", "bk", "bv", "bo")}
    q, k, v, o, y = (sp.IndexedBase(n) for n in ("y_q", "y_k", "y_v", "y_o", "y"))

    def bias(name, *ix):
        return W[name][ix] if use_bias else 0
    proj = {
        "y.query": Formula(sp.Eq(q[b, h, t, d], sp.Sum(X["query"][b, t, e] * W["Wq"][e, h, d], e)
                                 + bias("bq", h, d)), name="y.query"),
        "y.key": Formula(sp.Eq(k[b, h, s, d], sp.Sum(X["key"][b, s, ek] * W["Wk"][ek, h, d], ek)
                               + bias("bk", h, d)), name="y.key"),
        "y.value": Formula(sp.Eq(v[b, h, s, d], sp.Sum(X["value"][b, s, ev] * W["Wv"][ev, h, d], ev)
                                 + bias("bv", h, d)), name="y.value"),
        "y.output": Formula(sp.Eq(y[b, t, e], sp.Sum(o[b, t, h, d] * W["Wo"][h, d, e], h, d) + bias("bo", e)),
                            name="y.output"),
    }
    return _adapt(base, {n: [f] for n, f in proj.items()},
                  "multi_head_attention" + ("_causal" if causal else ""))


def keras_additive_attention(causal: bool) -> Program:
    """Additive (Bahdanau, F7) attention with Keras' three inputs: scores Σ_u v[u] tanh(query W +
    key R + bias), A = softmax_s (s <= t when causal), context y[b, t, d] = Σ_s A[b, t, s]
    value[b, s, d]."""
    b, s, d, u = (sp.Idx(n, r) for n, r in (("b", B), ("s", S), ("d", D), ("u", U)))
    t = sp.Idx("t", T)
    base = additive_attention(Q="query", H="value", W="W", R="R", bias="bias", v="v", out="y", weights="A")
    key, hp = sp.IndexedBase("key"), sp.IndexedBase("y_k")
    swap = {"y.key": [Formula(sp.Eq(hp[b, s, u], sp.Sum(key[b, s, d] * sp.IndexedBase("R")[d, u], d)),
                              name="y.key")]}
    if causal:
        swap["A.exp"] = softmax_stages("y_score", "A", (b, t), s, causal_t=t)
        swap["A.sum"] = swap["A.divide"] = []
    return _adapt(base, swap, "additive_attention" + ("_causal" if causal else ""))
