"""Scatter-add lowering: the gradient of a gather, run at the gather's cost.

The VJP of out[b, s, d] = E[tok[b, s], d] with respect to E is

    grad_E[p, d] = Σ_b Σ_s [p = tok[b, s]] grad_out[b, s, d]

whose loops, written as they read, visit every (p, b, s): V times the forward's work. No affine
solve can remove the condition (p equals a tensor's value), so it is lowered the other way round:
zero grad_E, then for every (b, s, d) add grad_out[b, s, d] into grad_E[tok[b, s], d] — the
forward's loops, each element of the source touched once.
"""
from __future__ import annotations

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import Sum
from .ir import If, Loop, Nest, ScatterAdd, Store


def match(f: Formula):
    """(sums, value, {output index: gathered expression}, other conditions) when `f` is a sum of a
    guarded value whose guard equates output indices with integer-tensor reads; else None."""
    sums, body = [], f.body
    while isinstance(body, Sum):
        sums += list(body.limits)
        body = body.function
    if not sums or not isinstance(body, sp.Piecewise) or len(body.args) != 2 or body.args[1] != (0, True):
        return None
    value, cond = body.args[0]
    outputs, targets, rest = set(f.indices), {}, []
    summed = {v for v, _, _ in sums}
    for c in sp.And.make_args(cond):
        hit = _gathered(c, outputs, summed) if isinstance(c, sp.Eq) else None
        if hit is None or hit[0] in targets:
            rest.append(c)
        else:
            targets[hit[0]] = hit[1]
    if not targets or any(value.has(p) or any(c.has(p) for c in rest) or
                          any(e.has(*targets) for e in targets.values()) for p in targets):
        return None
    if any(lo.has(*targets) or hi.has(*targets) for _, lo, hi in sums):
        return None
    return sums, value, targets, rest


def _gathered(eq, outputs, summed):
    """(p, e) for Eq(p - e, 0) or Eq(p, e) with p an output index and e a read of an integer tensor
    that varies with a summed index."""
    d = sp.expand(eq.lhs - eq.rhs)
    for p in outputs:
        coeff = d.coeff(p)
        if coeff in (1, -1):
            e = -coeff * (d - coeff * p)
            if not e.has(p) and e.atoms(sp.Indexed) and e.free_symbols & summed:
                return p, e
    return None


def lower_scatter(f: Formula, hit, emit_value, arrays: tuple) -> tuple:
    """Two nests: zero the output, then the scatter over the summed and remaining indices (serial:
    two iterations may add into one element). `emit_value(expr)` gives (statements, value)."""
    sums, value, targets, rest = hit
    zero: tuple = (Store(f.output.name, f.indices, sp.Integer(0)),)
    for i in reversed(f.indices):
        lo, hi = f.ranges[i]
        zero = (Loop(i, lo, hi + 1, zero),)
    stmts, v = emit_value(value)
    index = tuple(targets.get(i, i) for i in f.indices)
    inside = [sp.And(sp.Ge(e, f.ranges[p][0]), sp.Le(e, f.ranges[p][1])) for p, e in targets.items()]
    body: tuple = (If(sp.And(*rest, *inside), tuple(stmts) + (ScatterAdd(f.output.name, index, v),)),)
    for i in reversed([i for i in f.indices if i not in targets]):
        lo, hi = f.ranges[i]
        body = (Loop(i, lo, hi + 1, body),)
    for var, lo, hi in reversed(sums):
        body = (Loop(var, lo, hi + 1, body),)
    return (Nest("zero", zero, (f.output.name,), sp.Integer(0)),
            Nest("scatter", body, arrays, sp.Integer(0)))


__all__ = ["match", "lower_scatter"]
