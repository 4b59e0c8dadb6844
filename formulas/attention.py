"""F7 additive (Bahdanau) attention and F8 scaled dot-product attention, as staged Programs.

Each stage is one small formula (projections, scores, softmax as exp / row sum / divide, the
weighted sum of values), so every derived gradient is itself a small contraction with the cost of
its forward stage. The causal mask is a Piecewise on the indices around the exponential: masked
weights are exactly 0, their gradients exactly 0, and nothing infinite is ever formed (a -inf score
would give 0·inf = NaN in the backward pass).

The softmax has no max subtraction (the arg-max's gradient would cost a row scan per element); it
is finite while |scores| stay below ~700 in float64 and ~88 in float32.
"""
import sympy as sp

from symdl import Formula, Program

from . import entry
from .common import B

# F7: queries T, keys/values S (the "H" of the documents), features D, attention units U.
# F8: sequence S (queries T = S in self-attention), embedding E, heads NH, head size D.
T, S, D, U, E, NH = sp.symbols("T S D U E NH", integer=True, positive=True)


def _softmax_stages(score: str, out: str, outer: tuple, s, causal_t=None) -> list:
    """out[..., s] = exp(score) / Σ_s exp(score) over the last index `s`; with `causal_t`, the
    exponential of a position s > t is 0."""
    sc, ex, den, w = (sp.IndexedBase(n) for n in (score, f"{out}_exp", f"{out}_sum", out))
    s2 = sp.Idx(f"{s.label}2", s.upper + 1)
    value = sp.exp(sc[(*outer, s)])
    if causal_t is not None:
        value = sp.Piecewise((value, s <= causal_t), (0, True))
    # sums run over every s (masked terms are exactly 0): symdl cannot yet differentiate a Sum whose
    # bound is an output index (a bound of s2 <= t in the row sum fails in delta elimination)
    row = sp.Sum(ex[(*outer, s2)], s2)
    return [
        Formula(sp.Eq(ex[(*outer, s)], value), name=f"{out}.exp"),
        Formula(sp.Eq(den[outer], row), name=f"{out}.sum"),
        Formula(sp.Eq(w[(*outer, s)], ex[(*outer, s)] / den[outer]), name=f"{out}.divide"),
    ]


def additive_attention(Q="Q", H="H", W="W", R="R", bias="bias", v="v", out="c", weights="A",
                       name="additive_attention") -> Program:
    """Bahdanau attention: e[b, t, s] = Σ_u v[u] tanh(Σ_d Q[b, t, d] W[d, u] + Σ_d H[b, s, d] R[d, u]
    + bias[u]), A = softmax over s, out[b, t, d] = Σ_s A[b, t, s] H[b, s, d]."""
    b, t, s, d, u = (sp.Idx(n, r) for n, r in (("b", B), ("t", T), ("s", S), ("d", D), ("u", U)))
    q, h, w, r, bb, vv = (sp.IndexedBase(n) for n in (Q, H, W, R, bias, v))
    qp, hp, act, e, a, c = (sp.IndexedBase(n) for n in (f"{out}_q", f"{out}_k", f"{out}_tanh",
                                                        f"{out}_score", weights, out))
    stages = [
        Formula(sp.Eq(qp[b, t, u], sp.Sum(q[b, t, d] * w[d, u], d)), name=f"{out}.query"),
        Formula(sp.Eq(hp[b, s, u], sp.Sum(h[b, s, d] * r[d, u], d)), name=f"{out}.key"),
        Formula(sp.Eq(act[b, t, s, u], sp.tanh(qp[b, t, u] + hp[b, s, u] + bb[u])), name=f"{out}.tanh"),
        Formula(sp.Eq(e[b, t, s], sp.Sum(vv[u] * act[b, t, s, u], u)), name=f"{out}.score"),
        *_softmax_stages(e.name, weights, (b, t), s),
        Formula(sp.Eq(c[b, t, d], sp.Sum(a[b, t, s] * h[b, s, d], s)), name=f"{out}.context",
                sizes={B: 1, T: 2, S: 3, D: 2, U: 2}),
    ]
    return Program(stages, name=name)


def dot_product_attention(heads: bool = False, causal: bool = False, x="x", Wq="Wq", Wk="Wk", Wv="Wv",
                          Wo="Wo", out="y", weights="A", name=None) -> Program:
    """Self-attention on x[b, s, e]: q, k, v = x Wq, x Wk, x Wv; A = softmax_s(q·k / sqrt(D)) (s <= t
    only when `causal`); o[b, t, (h,) d] = Σ_s A v; out[b, t, e] = Σ_(h,) d o Wo. With `heads`, the
    weights are Wq/Wk/Wv[e, h, d] and Wo[h, d, e]; without, Wq/Wk/Wv[e, d] and Wo[d, e]."""
    b, t, s, d, e, h = (sp.Idx(n, r) for n, r in (("b", B), ("t", S), ("s", S), ("d", D), ("e", E),
                                                   ("h", NH)))
    X, wq, wk, wv, wo = (sp.IndexedBase(n) for n in (x, Wq, Wk, Wv, Wo))
    q, k, v, sc, a, o, y = (sp.IndexedBase(n) for n in (f"{out}_q", f"{out}_k", f"{out}_v", f"{out}_score",
                                                         weights, f"{out}_o", out))
    hd = (h,) if heads else ()
    stages = [
        Formula(sp.Eq(q[(b, *hd, t, d)], sp.Sum(X[b, t, e] * wq[(e, *hd, d)], e)), name=f"{out}.query"),
        Formula(sp.Eq(k[(b, *hd, s, d)], sp.Sum(X[b, s, e] * wk[(e, *hd, d)], e)), name=f"{out}.key"),
        Formula(sp.Eq(v[(b, *hd, s, d)], sp.Sum(X[b, s, e] * wv[(e, *hd, d)], e)), name=f"{out}.value"),
        Formula(sp.Eq(sc[(b, *hd, t, s)], sp.Sum(q[(b, *hd, t, d)] * k[(b, *hd, s, d)], d) / sp.sqrt(D)),
                name=f"{out}.score"),
        *_softmax_stages(sc.name, weights, (b, *hd, t), s, causal_t=t if causal else None),
        Formula(sp.Eq(o[(b, t, *hd, d)], sp.Sum(a[(b, *hd, t, s)] * v[(b, *hd, s, d)], s)), name=f"{out}.mix"),
        Formula(sp.Eq(y[b, t, e], sp.Sum(o[(b, t, *hd, d)] * wo[(*hd, d, e)], *hd, d)), name=f"{out}.output",
                sizes={B: 1, S: 3, D: 2, E: 2, NH: 2}),
    ]
    kind = "multi_head_attention" if heads else "dot_product_attention"
    return Program(stages, name=name or kind + ("_causal" if causal else ""))


entry("additive_attention", "F7", "Bahdanau attention: softmax_s(v·tanh(Q W + H R + b)), context A H")(
    additive_attention)
entry("dot_product_attention", "F8", "scaled dot-product self-attention, one head, Q/K/V/O projections")(
    lambda: dot_product_attention())
entry("dot_product_attention_causal", "F8", "scaled dot-product self-attention, one head, causal mask")(
    lambda: dot_product_attention(causal=True))
entry("multi_head_attention", "F8", "multi-head scaled dot-product self-attention")(
    lambda: dot_product_attention(heads=True))
entry("multi_head_attention_causal", "F8", "multi-head scaled dot-product self-attention, causal mask")(
    lambda: dot_product_attention(heads=True, causal=True))
