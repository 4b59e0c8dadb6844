"""Formulas the layers and losses build for themselves (the catalog holds the documents' forms).

Kept here until the catalog's stability rewrites land (another stage's work): the row-max softmax,
probability clipping, the log-softmax cross-entropies on logits, and two 1-D elementwise helpers
(gradient accumulation and the dropout mask product).
"""
from __future__ import annotations

import sympy as sp

import symdl
from symdl import Formula, Program

B, N, C = sp.symbols("B N C", integer=True, positive=True)
EPSILON = 1e-7  # Keras' backend epsilon: probabilities are clipped to [eps, 1 - eps] under log


def _idx(name: str, n) -> sp.Idx:
    return sp.Idx(name, n)


def stable_softmax(src: str = "z", dst: str = "p") -> Program:
    """p[i, j] = exp(z[i, j] - m[i]) / Σ_k exp(z[i, k] - m[i]), m[i] = max_k z[i, k]: the
    catalog softmax with the row maximum subtracted, so float32 never overflows."""
    i, j, k = _idx("i", B), _idx("j", C), _idx("k", C)
    z, m, e, s, p = (sp.IndexedBase(n) for n in (src, f"{src}_max", f"{src}_exp", f"{src}_sum", dst))
    u = sp.Symbol("u", integer=True)
    return Program([
        Formula(sp.Eq(m[i], symdl.Max(z[i, u], (u, 0, C - 1))), name=f"{dst}.max"),
        Formula(sp.Eq(e[i, j], sp.exp(z[i, j] - m[i])), name=f"{dst}.exp"),
        Formula(sp.Eq(s[i], sp.Sum(e[i, k], k)), name=f"{dst}.sum"),
        Formula(sp.Eq(p[i, j], e[i, j] / s[i]), name=f"{dst}.divide"),
    ], name="stable_softmax")


def clip(src: str, dst: str, rank: int, eps: float = EPSILON) -> Formula:
    """dst = min(max(src, eps), 1 - eps), Keras' clipping of probabilities before a log."""
    idx = [_idx("i", B), _idx("j", C)][:rank]
    a, b = sp.IndexedBase(src), sp.IndexedBase(dst)
    e = sp.Float(eps)
    return Formula(sp.Eq(b[tuple(idx)], sp.Min(sp.Max(a[tuple(idx)], e), 1 - e)), name=f"clip{rank}")


def _logsumexp(z: sp.IndexedBase, tag: str) -> list[Formula]:
    """lse[b] = m[b] + log Σ_c exp(z[b, c] - m[b]) with the row max m."""
    b, c = _idx("b", B), _idx("c", C)
    u = sp.Symbol("u", integer=True)
    m, lse = sp.IndexedBase(f"{tag}_max"), sp.IndexedBase(f"{tag}_lse")
    return [Formula(sp.Eq(m[b], symdl.Max(z[b, u], (u, 0, C - 1))), name=f"{tag}.max"),
            Formula(sp.Eq(lse[b], m[b] + sp.log(sp.Sum(sp.exp(z[b, c] - m[b]), c))), name=f"{tag}.lse")]


def sparse_ce_logits() -> Program:
    """L = 1/B Σ_b (logsumexp_c z[b, c] - z[b, t[b]]), integer labels t."""
    b = _idx("b", B)
    z, t = sp.IndexedBase("z", shape=(B, C)), sp.IndexedBase("t", integer=True)
    lse = sp.IndexedBase("z_lse")
    loss = Formula(sp.Eq(sp.Symbol("L"), sp.Sum(lse[b] - z[b, t[b]], b) / B), name="sparse_ce_logits.L")
    return Program([*_logsumexp(z, "z"), loss], name="sparse_ce_logits")


def categorical_ce_logits() -> Program:
    """L = 1/B Σ_b Σ_c t[b, c] (logsumexp z[b, :] - z[b, c])."""
    b, c = _idx("b", B), _idx("c", C)
    z, t, lse = sp.IndexedBase("z"), sp.IndexedBase("t"), sp.IndexedBase("z_lse")
    loss = Formula(sp.Eq(sp.Symbol("L"), sp.Sum(t[b, c] * (lse[b] - z[b, c]), b, c) / B),
                   name="categorical_ce_logits.L")
    return Program([*_logsumexp(z, "z"), loss], name="categorical_ce_logits")


def binary_ce_logits() -> Formula:
    """L = 1/B Σ_b (max(z, 0) - z t + log(1 + exp(-|z|))), the overflow-free form of
    -t log σ(z) - (1 - t) log(1 - σ(z))."""
    b = _idx("b", B)
    z, t = sp.IndexedBase("z"), sp.IndexedBase("t")
    body = sp.Max(z[b], 0) - z[b] * t[b] + sp.log(1 + sp.exp(-sp.Abs(z[b])))
    return Formula(sp.Eq(sp.Symbol("L"), sp.Sum(body, b) / B), name="binary_ce_logits")


def elementwise(op: str, a: str = "a", b: str = "b", out: str = "y") -> Formula:
    """out[i] = a[i] + b[i] or a[i] * b[i] on flat vectors (callers reshape)."""
    i = _idx("i", N)
    x, y = sp.IndexedBase(a), sp.IndexedBase(b)
    body = x[i] + y[i] if op == "add" else x[i] * y[i]
    return Formula(sp.Eq(sp.IndexedBase(out)[i], body), name=f"vec_{op}")
