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

On the cpu (`new_temp` given), a scatter whose positions are arg-maxes over short static ranges adds
by position instead: per window, one loop over the remaining output indices (the channels)
searches and keeps what it found in a temporary indexed by the batch and channel; then for each
candidate position of the window, a channel loop adds where the search found that position.
Every add then goes to consecutive addresses, so the channel loop vectorises; scattered, each add
went to an address of its own and none did (E1's first max-pool gradient 5.1 -> 3.0 ms, E5's
0.64 -> 0.20 ms, serial). The work counted stays within the cost contract (a 2x2 window: a search
of 4, then 4 candidate tests, per window and channel); windows add in the same order either way.
"""
from __future__ import annotations

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import ArgMax, Sum
from .ir import If, Let, Loop, Nest, ScatterAdd, Store, Temp

CANDIDATES = 9  # the most candidate positions per window added by position (a 3x3 window's)


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


def lower_scatter(f: Formula, hit, emit_values, arrays: tuple, new_index, new_temp=None) -> tuple:
    """(steps, temps): two nests, zero the output, then the scatter over the summed and remaining
    indices (serial but for the batch loops outside the sums: two iterations may add into one
    element). `emit_values(exprs)` gives (statements, values); `new_index()` a fresh integer
    symbol; with `new_temp()` (a fresh temporary's name) the scatter adds by candidate position
    where the positions allow it (the module's docstring)."""
    sums, value, targets, rest = hit
    zero: tuple = (Store(f.output.name, f.indices, sp.Integer(0)),)
    for depth, i in reversed(list(enumerate(f.indices))):
        lo, hi = f.ranges[i]
        zero = (Loop(i, lo, hi + 1, zero, parallel=depth == 0),)  # disjoint stores: threads may share it
    outer = _outer(f, targets)
    inner = [i for i in f.indices if i not in targets and i not in outer]
    candidates = _candidates(targets, new_index) if new_temp is not None and inner else None
    temps: tuple = ()
    if candidates is not None and all(f.ranges[i][0] == 0 for i in outer + inner):
        body, temps = _by_position(f, candidates, value, rest, outer, inner, emit_values, new_temp)
        arrays = arrays[:-1] + tuple(t.name for t in temps) + arrays[-1:]
    else:
        body = _scattered(f, targets, value, rest, inner, emit_values, new_index)
    for var, lo, hi in reversed(sums):
        body = (Loop(var, lo, hi + 1, body),)
    for depth, i in reversed(list(enumerate(outer))):
        lo, hi = f.ranges[i]
        body = (Loop(i, lo, hi + 1, body, parallel=depth == 0),)
    return (Nest("zero", zero, (f.output.name,), sp.Integer(0)),
            Nest("scatter", body, arrays, sp.Integer(0))), temps


def _candidates(targets: dict, new_index):
    """{output index: (its arg-max, a new index w, w's range, the position with the arg-max
    replaced by w)} when every target reads one arg-max coordinate whose bounds have numeric hulls
    (_hull) and the windows have at most CANDIDATES positions; else None."""
    out, count = {}, 1
    for p, e in targets.items():
        maxes = e.atoms(ArgMax)
        if len(maxes) != 1:
            return None
        a = next(iter(maxes))
        _, lo, hi = a.limits[a.coordinate]
        lo, hi = _hull(lo, sp.Max), _hull(hi, sp.Min)
        if lo is None or hi is None or hi < lo:
            return None
        count *= int(hi - lo + 1)
        w = new_index()
        out[p] = (a, w, lo, hi, e.xreplace({a: w}))
    return out if count <= CANDIDATES else None


def _hull(bound, side):
    """A number the bound never passes: the bound itself, or the numeric part of Max(0, ...) for
    a lower bound (of Min(2, ...) for an upper one: a window clipped at the image's edge)."""
    if bound.is_Integer:
        return bound
    numbers = [b for b in bound.args if b.is_Integer] if isinstance(bound, side) else []
    return side(*numbers) if numbers else None


def _by_position(f: Formula, candidates: dict, value, rest: list, outer: list, inner: list, emit_values,
                 new_temp) -> tuple:
    """(the statements inside the sums' loops, the temporaries): a channel loop searching the
    window and keeping each found coordinate in a temporary over (outer..., inner...), then for
    each candidate position (the w loops) the guards that hold for the whole channel loop, and
    the channel loop adding where the search found this position."""
    at = {p: c[4] for p, c in candidates.items()}
    conds = sp.And.make_args(_guard(f, at, rest))
    per_channel = [c for c in conds if c.has(*inner)]
    guard = sp.And(*[c for c in conds if not c.has(*inner)])
    where = tuple(outer + inner)
    shape = tuple(f.ranges[i][1] + 1 for i in where)
    temps = tuple(Temp(new_temp(), shape) for _ in candidates)
    pre, found = emit_values([c[0] for c in candidates.values()])
    search: tuple = tuple(pre) + tuple(Store(t.name, where, x) for t, x in zip(temps, found, strict=True))
    stmts, v = emit_values([value])
    hit = sp.And(*[sp.Eq(sp.IndexedBase(t.name, real=True)[where], c[1])
                   for t, c in zip(temps, candidates.values(), strict=True)], *per_channel)
    index = tuple(at.get(i, i) for i in f.indices)
    add: tuple = (If(hit, tuple(stmts) + (ScatterAdd(f.output.name, index, v[0]),)),)
    for i in reversed(inner):
        lo, hi = f.ranges[i]
        search, add = (Loop(i, lo, hi + 1, search),), (Loop(i, lo, hi + 1, add),)
    add = add if guard is sp.true else (If(guard, add),)
    for _, w, lo, hi, _ in reversed(list(candidates.values())):
        add = (Loop(w, lo, hi + 1, add),)
    return search + add, temps


def _guard(f: Formula, at: dict, rest: list):
    """The conditions an add at the positions `at` ({output index: position}) needs: the guard's
    other conditions there, and every position inside its axis."""
    inside = [sp.And(sp.Ge(x, f.ranges[p][0]), sp.Le(x, f.ranges[p][1])) for p, x in at.items()]
    return sp.And(*[c.xreplace(at) for c in rest], *inside)


def _scattered(f: Formula, targets: dict, value, rest: list, inner: list, emit_values, new_index) -> tuple:
    """The search, then one add into the position it found, for every remaining output index."""
    pre, positions = emit_values(list(targets.values()))
    at = {}  # a position searched for (an arg-max) is computed once, before the tests on it
    for (p, e), position in zip(targets.items(), positions, strict=True):
        at[p] = new_index() if e.has(ArgMax) else position
        pre += [Let(at[p], position)] if e.has(ArgMax) else []
    stmts, v = emit_values([value])
    index = tuple(at.get(i, i) for i in f.indices)
    body: tuple = tuple(pre) + (If(_guard(f, at, rest), tuple(stmts) + (ScatterAdd(f.output.name, index, v[0]),)),)
    for i in reversed(inner):
        lo, hi = f.ranges[i]
        body = (Loop(i, lo, hi + 1, body),)
    return body


__all__ = ["match", "lower_scatter"]
