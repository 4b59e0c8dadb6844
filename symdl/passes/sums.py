"""Sibling sums over the same ranges become one sum: c1·Σ_I f1 + c2·Σ_I f2 = Σ_I (c1·f1 + c2·f2).

A derivative through a piecewise function (leaky relu: three regions) is one sum per region, each
a pass over the same indices; merged, the loops run once with every region's term in the body.
Applied bottom-up, so the sums nested inside merged ones merge in turn.
"""
from __future__ import annotations

import sympy as sp


def merge_sibling_sums(e: sp.Expr) -> sp.Expr:
    """`e` with the terms of each sum that are sums over identical limits (times factors free of
    their indices) merged into one sum."""
    if isinstance(e, sp.Indexed) or not e.args:
        return e
    args = [merge_sibling_sums(a) for a in e.args]
    if args != list(e.args):
        e = e.func(*args)
    if not isinstance(e, sp.Add):
        return e
    groups: dict = {}
    out = []
    for term in e.args:
        split = _scaled_sum(term)
        if split is None:
            out.append(term)
        else:
            groups.setdefault((type(split[1]), split[1].limits), []).append(split)
    for (cls, limits), items in groups.items():
        if len(items) == 1:
            out.append(items[0][0] * items[0][1])
        else:
            out.append(cls(merge_sibling_sums(sp.Add(*[c * s.function for c, s in items])), *limits))
    return sp.Add(*out)


def _scaled_sum(term):
    """(c, Σ) for a term c·Σ with c free of Σ's indices, else None."""
    factors = sp.Mul.make_args(term)
    sums = [f for f in factors if isinstance(f, sp.Sum)]
    if len(sums) != 1:
        return None
    s = sums[0]
    c = sp.Mul(*[f for f in factors if f is not s])
    if c.free_symbols & set(s.variables):
        return None  # moving c inside would capture one of its symbols
    return c, s
