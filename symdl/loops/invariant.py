"""Loop-invariant reductions into temporaries, before the main nest.

A reduction nested inside another one that does not use every enclosing index (output or
reduction) is computed once per value of the indices it does use, into a temporary array, by a
nest of its own; the main nest reads the array. Logistic regression's weight gradient recomputed
the pre-activation Σ_k w[k] x[i, k] inside Σ_i for every output k (O(B N²)); hoisted, O(B N).
Reductions directly under the output loops are hoisted to scalars by lower._hoist_reductions; this
pass takes the nested ones, those in a branch, and those only an inner output loop can hold.

Under a guard on indices only reductions that use no enclosing index move (such a guard may be
what keeps a read in range; a reduction that reads no enclosing index cannot depend on it); a test
on values (relu's x > 0, an arg-max) guards nothing. A reduction moves only when every index it uses
has a range no other index changes (the temporary is a box). Reductions nested in a moved one are
moved out of its nest in turn.
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
        boxes = [enclosing[i] for i in order]
        if any((sp.sympify(lo).free_symbols | sp.sympify(hi).free_symbols) & set(enclosing) for lo, hi in boxes):
            return None  # a range another index changes: not a box
        if e not in made:
            inner = rebuild(e, visit(e.function, dict(zip(order, boxes, strict=True)),
                                     {var: (lo, hi) for var, lo, hi in limits_of(e)}, False))
            name = names.new("inv").name
            shape = tuple(hi - lo + 1 for lo, hi in boxes)
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
