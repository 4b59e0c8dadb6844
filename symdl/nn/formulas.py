"""Formulas the layers and losses build for themselves from the catalog's builders.

The stable forms come from the catalog: softmax is `formulas.activations.softmax` run through
`symdl.passes.stabilize` (row max subtracted), the from-logits losses are the catalog entries
`*_crossentropy_logits`. Kept here: Keras' probability clipping, two 1-D elementwise helpers
(gradient accumulation, dropout masks), and the layer programs of SimpleRNN and the attention
layers, adapted from formulas/rnn.py and formulas/attention.py.
"""
from __future__ import annotations

import sympy as sp

from symdl import Formula, Program
from symdl.formulas.activations import softmax as _softmax
from symdl.formulas.attention import D, E, NH, S, T, U, additive_attention, dot_product_attention, \
    softmax_stages
from symdl.formulas.common import B as _B
from symdl.formulas.rnn import last_state, states
from symdl.passes import stabilize

B, N, C = sp.symbols("B N C", integer=True, positive=True)
EPSILON = 1e-7  # Keras' backend epsilon: probabilities are clipped to [eps, 1 - eps] under log
EK, EV = sp.symbols("EK EV", integer=True, positive=True)  # key and value widths (MultiHeadAttention)


def _idx(name: str, n) -> sp.Idx:
    return sp.Idx(name, n)


def stable_softmax(src: str = "z", dst: str = "p") -> Program:
    """The catalog softmax over the last axis of src[i, j], stabilized (row max subtracted)."""
    return stabilize(_softmax(src, dst))


def clip(src: str, dst: str, rank: int, eps: float = EPSILON) -> Formula:
    """dst = src clipped to [eps, 1 - eps], Keras' clipping of probabilities before a log. A
    Piecewise, not Min(Max(...)): NaN fails both tests and stays NaN (the printed max/min would
    turn it into eps, and a diverged model would report a finite loss)."""
    idx = [_idx("i", B), _idx("j", C)][:rank]
    a, b = sp.IndexedBase(src), sp.IndexedBase(dst)
    e, x = sp.Float(eps), a[tuple(idx)]
    return Formula(sp.Eq(b[tuple(idx)], sp.Piecewise((e, x < e), (1 - e, x > 1 - e), (x, True))),
                   name=f"clip{rank}")


def elementwise(op: str, a: str = "a", b: str = "b", out: str = "y") -> Formula:
    """out[i] = a[i] + b[i] or a[i] * b[i] on flat vectors (callers reshape)."""
    i = _idx("i", N)
    x, y = sp.IndexedBase(a), sp.IndexedBase(b)
    body = x[i] + y[i] if op == "add" else x[i] * y[i]
    return Formula(sp.Eq(sp.IndexedBase(out)[i], body), name=f"vec_{op}")


# -- recurrent ---------------------------------------------------------------------------------------

def rnn(activation: str, return_sequences: bool) -> Formula | Program:
    """formulas/rnn.py: states h[b, t, j] from x, W, R, bias, h0 (one kernel, time loop inside),
    then, unless `return_sequences`, the last state h_last[b, j]."""
    h = states(activation)
    return h if return_sequences else Program([h, last_state()], name=f"rnn_{activation}_last")


# -- attention: the catalog builders with Keras' inputs (query, value, key) -------------------------

def _adapt(base: Program, replace: dict, name: str) -> Program:
    """`base` with the formulas named in `replace` swapped for lists of formulas (in place)."""
    out = []
    for f in base.formulas:
        out += replace.get(f.name, [f])
    return stabilize(Program(out, name=name))


def dot_attention(causal: bool, use_scale: bool) -> Program:
    """Keras Attention (score_mode "dot"): y_score[b, t, s] = [scale ·] Σ_d q[b, t, d] k[b, s, d],
    A = softmax_s (over s <= t when causal), y[b, t, d] = Σ_s A[b, t, s] v[b, s, d]; queries T,
    values S. The softmax stages are formulas/attention.py's, stabilized."""
    b, t, s, d = (_idx(n, r) for n, r in (("b", _B), ("t", T), ("s", S), ("d", D)))
    q, k, v, sc, a, y = (sp.IndexedBase(n) for n in ("query", "key", "value", "y_score", "A", "y"))
    score = sp.Sum(q[b, t, d] * k[b, s, d], d)
    return stabilize(Program([
        Formula(sp.Eq(sc[b, t, s], sp.Symbol("scale") * score if use_scale else score), name="y.score"),
        *softmax_stages(sc.name, "A", (b, t), s, causal_t=t if causal else None),
        Formula(sp.Eq(y[b, t, d], sp.Sum(a[b, t, s] * v[b, s, d], s)), name="y.mix"),
    ], name="attention" + ("_causal" if causal else "")))


def multi_head_attention(causal: bool, use_bias: bool) -> Program:
    """formulas/attention.py's multi-head program (scores / sqrt(D), softmax, mix) with Keras'
    projections: query[b, t, e] Wq[e, h, d] (+ bq[h, d]), key and value likewise from their own
    inputs (widths EK, EV), output Σ_hd o[b, t, h, d] Wo[h, d, e] (+ bo[e]). Query and value
    sequences share the length S, as in the builder."""
    b, t, s, d, h = (_idx(n, r) for n, r in (("b", _B), ("t", S), ("s", S), ("d", D), ("h", NH)))
    e, ek, ev = _idx("e", E), _idx("e", EK), _idx("e", EV)
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


def additive(causal: bool) -> Program:
    """formulas/attention.py's additive (Bahdanau, F7) attention with Keras' three inputs:
    scores Σ_u v[u] tanh(query W + key R + bias), A = softmax_s (s <= t when causal), context
    y[b, t, d] = Σ_s A[b, t, s] value[b, s, d]."""
    b, s, d, u = (_idx(n, r) for n, r in (("b", _B), ("s", S), ("d", D), ("u", U)))
    t = _idx("t", T)
    base = additive_attention(Q="query", H="value", W="W", R="R", bias="bias", v="v", out="y", weights="A")
    key, hp = sp.IndexedBase("key"), sp.IndexedBase("y_k")
    swap = {"y.key": [Formula(sp.Eq(hp[b, s, u], sp.Sum(key[b, s, d] * sp.IndexedBase("R")[d, u], d)),
                              name="y.key")]}
    if causal:
        swap["A.exp"] = softmax_stages("y_score", "A", (b, t), s, causal_t=t)
        swap["A.sum"] = swap["A.divide"] = []
    return _adapt(base, swap, "additive_attention" + ("_causal" if causal else ""))
