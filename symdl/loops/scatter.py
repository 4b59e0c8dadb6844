"""Scatter-add lowering: the gradient of a gather, run at the gather's cost.

The VJP of out[b, s, d] = E[tok[b, s], d] with respect to E is

    grad_E[p, d] = Σ_b Σ_s [p = tok[b, s]] grad_out[b, s, d]

whose loops, written as they read, visit every (p, b, s): V times the forward's work. No affine
solve can remove the condition (p equals a tensor's value), so it is lowered the other way round:
zero grad_E, then for every (b, s, d) add grad_out[b, s, d] into grad_E[tok[b, s], d] — the
forward's loops, each element of the source touched once.

Max pooling's gradient is the same shape with the arg-max as the "tensor read":

    grad_x[b, p, q, c] = Σ_i Σ_j [p = 2i + argmax_u] [q = 2j + argmax_v] grad_y[b, i, j, c]

over the windows i, j that can cover p, q (bounds that depend on p, q). Read as written, every
input position searches every window covering it; scattered, each window searches once and adds
into its arg-max. The sums' bounds then become their hull (the parts of each Max/Min free of p,
q) plus guards with p, q replaced by the scattered position: the same (window, position) pairs.
Arg-max coordinates of one search are emitted together (one search, not one per coordinate).
"""
from __future__ import annotations

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import ArgMax, Sum
from .ir import If, Let, Loop, Nest, ScatterAdd, Store


def match(f: Formula):
    """(sums, value, {output index: gathered expression}, other conditions) when `f` is a sum of a
    guarded value whose guard equates output indices with integer-tensor reads or arg-maxes; else
    None. Sum bounds that depend on those output indices come back as static hulls, the dropped
    parts as conditions."""
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
    # in the output's axis order, not the guard's (an And's order follows hashes, which vary
    # between processes: the generated source, so its cache entry, must not)
    targets = {p: targets[p] for p in f.indices if p in targets}
    if not targets or any(value.has(p) or any(c.has(p) for c in rest) or
                          any(e.has(*targets) for e in targets.values()) for p in targets):
        return None
    relaxed = _relax(sums, targets)
    if relaxed is None:
        return None
    sums, guards = relaxed
    inner = [i for i in f.indices if i not in targets and i not in _outer(f, targets)]
    if any(sp.sympify(b).has(*inner) for _, lo, hi in sums for b in (lo, hi)):
        return None  # the sums run outside these output loops: their bounds may not read them
    return sums, value, targets, rest + guards


def _relax(sums, targets: dict):
    """(sums with bounds free of the targets, guards) or None. A lower bound Max(a, r(p)) keeps
    a and adds the guard var >= r(p) (p becomes its scattered position), an upper bound Min
    likewise: the pairs the guards admit are the ones the original bounds ran over."""
    out, guards = [], []
    for var, lo, hi in sums:
        bounds = []
        for bound, side, compare in ((lo, sp.Max, sp.Ge), (hi, sp.Min, sp.Le)):
            parts = list(bound.args) if isinstance(bound, side) else [bound]
            static = [q for q in parts if not q.has(*targets)]
            if not static:
                return None
            for q in parts:
                if q.has(*targets):  # var >= ceiling(r) <=> var >= r, var <= floor(r) <=> var <= r
                    q = q.args[0] if isinstance(q, sp.ceiling if side is sp.Max else sp.floor) else q
                    guards.append(compare(var, q))
            bounds.append(side(*static))
        out.append((var, *bounds))
    return out, guards


def _outer(f: Formula, targets: dict) -> list:
    """Output indices before every scattered one (a batch index): their loops go outside the
    sums, and the outermost may run in parallel (each of its iterations adds into its own slice)."""
    first = min(f.indices.index(p) for p in targets)
    return list(f.indices[:first])


def _gathered(eq, outputs, summed):
    """(p, e) for Eq(p - e, 0) or Eq(p, e) with p an output index and e a read of an integer tensor
    that varies with a summed index."""
    d = sp.expand(eq.lhs - eq.rhs)
    for p in outputs:
        coeff = d.coeff(p)
        if coeff in (1, -1):
            e = -coeff * (d - coeff * p)
            if not e.has(p) and (e.atoms(sp.Indexed) or e.has(ArgMax)) and e.free_symbols & summed:
                return p, e
    return None


def lower_scatter(f: Formula, hit, emit_values, arrays: tuple, new_index) -> tuple:
    """Two nests: zero the output, then the scatter over the summed and remaining indices (serial
    but for the batch loops outside the sums: two iterations may add into one element).
    `emit_values(exprs)` gives (statements, values); `new_index()` a fresh integer symbol."""
    sums, value, targets, rest = hit
    zero: tuple = (Store(f.output.name, f.indices, sp.Integer(0)),)
    for depth, i in reversed(list(enumerate(f.indices))):
        lo, hi = f.ranges[i]
        zero = (Loop(i, lo, hi + 1, zero, parallel=depth == 0),)  # disjoint stores: threads may share it
    pre, positions = emit_values(list(targets.values()))
    at = {}  # a position searched for (an arg-max) is computed once, before the tests on it
    for (p, e), position in zip(targets.items(), positions, strict=True):
        at[p] = new_index() if e.has(ArgMax) else position
        pre += [Let(at[p], position)] if e.has(ArgMax) else []
    stmts, v = emit_values([value])
    index = tuple(at.get(i, i) for i in f.indices)
    inside = [sp.And(sp.Ge(at[p], f.ranges[p][0]), sp.Le(at[p], f.ranges[p][1])) for p in targets]
    cond = sp.And(*[c.xreplace(at) for c in rest], *inside)
    body: tuple = tuple(pre) + (If(cond, tuple(stmts) + (ScatterAdd(f.output.name, index, v[0]),)),)
    outer = _outer(f, targets)
    for i in reversed([i for i in f.indices if i not in targets and i not in outer]):
        lo, hi = f.ranges[i]
        body = (Loop(i, lo, hi + 1, body),)
    for var, lo, hi in reversed(sums):
        body = (Loop(var, lo, hi + 1, body),)
    for depth, i in reversed(list(enumerate(outer))):
        lo, hi = f.ranges[i]
        body = (Loop(i, lo, hi + 1, body, parallel=depth == 0),)
    return (Nest("zero", zero, (f.output.name,), sp.Integer(0)),
            Nest("scatter", body, arrays, sp.Integer(0)))


__all__ = ["match", "lower_scatter"]
