"""Loop-invariant reductions into temporaries, before the main nest.

A reduction nested inside another one that does not use every enclosing index (output or
reduction) is computed once per value of the indices it does use, into a temporary array, by a
nest of its own; the main nest reads the array. Logistic regression's weight gradient recomputed
the pre-activation Σ_k w[k] x[i, k] inside Σ_i for every output k (O(B N²)); hoisted, O(B N).
Reductions directly under the output loops are hoisted to scalars by lower._hoist_reductions; this
pass takes the nested ones, those in a branch, and those only an inner output loop can hold.

Under a guard on indices only reductions that use no enclosing index move (such a guard may be
what keeps a read in range; a reduction that reads no enclosing index cannot depend on it); a test
on values (relu's x > 0, an arg-max) guards nothing. A reduction moves when every index it uses has
a range no other index changes (the temporary is a box), or a range that moves monotonically with
other indices whose ranges are boxes: a window's, i in [max(0, p - M + 1), min(N - M, p)] in the
gradient of exp(Σ_m x[i + m] w[m]). Then the temporary spans the window's hull, i from its lowest
bound (p at its minimising end) to its highest: computed once per i instead of once per (p, i).
Reductions nested in a moved one are moved out of its nest in turn.
"""
from __future__ import annotations

import sympy as sp

from ..declare.indexing import free_indices
from ..declare.reductions import ArgMax, ReduceMax, ReduceProduct, Sum, limits_of
from .ir import Loop, Nest, Store, Temp


def hoist_nested_reductions(f, body, names, emit, with_cse):
    """(body reading the temporaries, temporaries, their nests in order)."""
    if f.recurrence is not None:
        return body, [], []
    made: dict = {}  # reduction -> its read of the temporary
    temps, nests = [], []

    def hoist(e, loops: dict, scope: dict, guarded: bool):
        """`loops`: the nest's loop indices (outermost first) and ranges; `scope`: the reduction
        indices around `e` inside them."""
        enclosing = {**loops, **scope}
        used = free_indices(e, set(enclosing))
        if not set(enclosing) - used or guarded and used:
            return None  # it uses every enclosing index (computed once per iteration anyway), or a guarded one
        order = [i for i in enclosing if i in used]
        boxes = [_hull(enclosing[i], enclosing) for i in order]
        if any(box is None for box in boxes):
            return None  # a range another index changes in no monotone way: no box holds it
        if e not in made:
            inner = rebuild(e, visit(e.function, dict(zip(order, boxes, strict=True)),
                                     {var: (lo, hi) for var, lo, hi in limits_of(e)}, False))
            name = names.new("inv").name
            shape = tuple(sp.Max(0, hi - lo + 1) for lo, hi in boxes)
            position = tuple(i - lo for i, (lo, _) in zip(order, boxes, strict=True)) or (sp.Integer(0),)
            stmts, value = emit(inner, names)
            nest = tuple(stmts) + tuple(with_cse(Store(name, position, value), names))
            for depth, (i, (lo, hi)) in reversed(list(enumerate(zip(order, boxes, strict=True)))):
                nest = (Loop(i, lo, hi + 1, nest, parallel=depth == 0),)
            reads = {str(b.label) for b in inner.atoms(sp.IndexedBase)}
            tensors = tuple(t.name for t in f.inputs if t.rank and t.name in reads) + tuple(
                t.name for t in temps if t.name in reads) + (name,)
            temps.append(Temp(name, shape or (sp.Integer(1),)))
            nests.append(Nest(name, nest, tensors, sp.Mul(*shape) * 8))
            made[e] = sp.IndexedBase(name, real=True)[position]
        return made[e]

    def visit(e, loops: dict, scope: dict, guarded: bool, branch: bool = False):
        if isinstance(e, sp.Indexed) or not e.args:
            return e
        if isinstance(e, sp.Piecewise):  # a condition runs where the ones before it failed
            out, on_index = [], guarded
            for v, c in e.args:
                c_new = visit(c, loops, scope, on_index, True) if isinstance(c, sp.Basic) and c.args else c
                on_index = on_index or _on_indices(c, set(loops) | set(scope))
                out.append((visit(v, loops, scope, on_index, True), c_new))
            return sp.Piecewise(*out)
        if isinstance(e, (Sum, ReduceMax, ReduceProduct)):
            # lower._hoist_reductions moves the others to scalars, but out of no branch
            if scope or branch or _innermost_only(e, list(loops)):
                read = hoist(e, loops, scope, guarded)
                if read is not None:
                    return read
            inner = {**scope, **{var: (lo, hi) for var, lo, hi in limits_of(e)}}
            return e.func(visit(e.function, loops, inner, guarded, branch), *e.limits)
        if isinstance(e, ArgMax):  # a max of sums' gradient compares m with the arg-max of each row
            if scope or branch:  # an integer-valued temporary (positions in a float are exact)
                read = hoist(e, loops, scope, guarded)
                if read is not None:
                    return read
            inner = {**scope, **{var: (lo, hi) for var, lo, hi in limits_of(e)}}
            return rebuild(e, visit(e.function, loops, inner, guarded, branch))
        return e.func(*[visit(a, loops, scope, guarded, branch) for a in e.args])

    return visit(body, {i: f.ranges[i] for i in f.indices}, {}, False), temps, nests


def rebuild(e, function):
    """The reduction `e` over `function` (an ArgMax keeps its coordinate)."""
    return ArgMax(function, e.limits, e.coordinate) if isinstance(e, ArgMax) else e.func(function, *e.limits)


def _hull(bounds: tuple, enclosing: dict):
    """(lo, hi) free of the enclosing indices: `bounds` themselves when they are, else the lowest lo
    and highest hi over the other indices' ranges (each a box), found at their ends when both bounds
    move monotonically with each index (a window's). The hull is an interval from the lowest value
    the index takes to the highest, so affine reads inside stay within the reads the nest makes.
    None when a bound is not monotone or depends on an index whose range is not a box."""
    lo, hi = (sp.sympify(b) for b in bounds)
    for k in sorted((lo.free_symbols | hi.free_symbols) & set(enclosing), key=str):
        k_lo, k_hi = (sp.sympify(b) for b in enclosing[k])
        if (k_lo.free_symbols | k_hi.free_symbols) & set(enclosing):
            return None
        down, up = _direction(lo, k), _direction(hi, k)
        if down is None or up is None:
            return None
        lo = lo.xreplace({k: k_lo if down >= 0 else k_hi})
        hi = hi.xreplace({k: k_hi if up >= 0 else k_lo})
    return lo, hi


def _direction(e, k):
    """+1 when `e` never decreases as the integer `k` grows, -1 when it never increases, 0 when it
    does not depend on k, None when unknown (sums, products and floors of affine parts, Max, Min)."""
    if k not in e.free_symbols:
        return 0
    if e == k:
        return 1
    if isinstance(e, sp.Mul):
        coeff, rest = e.as_coeff_Mul()
        d = _direction(rest, k) if coeff.is_Number and rest != e else None
        return None if d is None else d * (1 if coeff > 0 else -1)
    if isinstance(e, (sp.floor, sp.ceiling)):
        return _direction(e.args[0], k)
    if isinstance(e, (sp.Add, sp.Max, sp.Min)):
        parts = {_direction(a, k) for a in e.args}
        if None in parts or len(parts - {0}) > 1:
            return None
        return max(parts, key=abs)
    return None


def _innermost_only(e, outputs: list) -> bool:
    """A reduction directly under the output loops that uses the innermost output index but not an
    outer one: a scalar cannot hold it (y[k, i] = Σ_m x[m, i] needs one sum per i, for every k)."""
    used = free_indices(e, set(outputs))
    return bool(outputs) and outputs[-1] in used and bool(set(outputs) - used)


def _on_indices(cond, indices: set) -> bool:
    """A condition on indices (a range guard, which may be what keeps reads in range), not only on
    values (relu's x > 0, an arg-max test): one of its comparisons reads indices and no float
    tensor or max."""
    if cond is sp.true or cond is sp.false:
        return False
    comparisons = [cond] if isinstance(cond, sp.core.relational.Relational) else \
        cond.atoms(sp.core.relational.Relational)
    return any(c.free_symbols & indices and not any(
        isinstance(n, (ReduceMax, ArgMax)) or isinstance(n, sp.Indexed) and not n.base.is_integer
        for n in sp.preorder_traversal(c)) for c in comparisons)
