"""Lowering: a Formula becomes a LoopProgram (library calls, nests for loop-invariant nested
reductions (invariant.py), then the main loop nest).

Output indices become loops in the left side's order (the last index innermost, so stores are
contiguous); each Sum becomes a register accumulator with its loop; guards become `If`s so that a
guarded read is never executed outside its range; CSE runs on loop bodies, never across a Sum.
"""
from __future__ import annotations

import itertools

import sympy as sp

from ..declare.formula import Formula, Tensor
from ..declare.indexing import free_indices
from ..declare.reductions import REDUCTIONS, ArgMax, ReduceMax, Sum
from ..passes.contraction import extract_matmuls
from . import scatter
from .invariant import hoist_nested_reductions
from .ir import Accumulate, If, Let, Loop, LoopProgram, MatMul, Nest, ScatterAdd, Store, Temp


class _Names:
    def __init__(self, taken):
        self.taken = set(taken)
        self.counters: dict = {}

    def new(self, prefix: str, integer: bool = False) -> sp.Symbol:
        c = self.counters.setdefault(prefix, itertools.count())
        while True:
            name = f"{prefix}{next(c)}"
            if name not in self.taken:
                self.taken.add(name)
                return sp.Symbol(name, integer=True) if integer else sp.Symbol(name, real=True)


def _taken(f: Formula, body) -> set:
    """Every name the formula uses (bound Sum indices and dimensions too) and every symbol of the
    body being lowered (matrix-product temporaries): temporaries are named around them."""
    return set(f.used_names) | {s.name for s in body.atoms(sp.Symbol)} | {t.name for t in f.inputs} | {
        f.output.name}


def lower(f: Formula, row_reductions: bool = False) -> LoopProgram:
    """`row_reductions` (the cpu backend's choice): a sum down columns (grad_b[j] = Σ_i g[i, j])
    runs row by row into the zeroed output, reading memory in order, instead of one strided
    column at a time."""
    if row_reductions and _sums_down_columns(f):
        return _lower_row_reduction(f)
    if row_reductions and _sum_along_last_axis(f):
        return _lower_inner_accumulation(f)
    hit = scatter.match(f) if f.recurrence is None else None
    if hit is not None:  # a gather's gradient: the gather's loops, adding into the output
        names = _Names(_taken(f, f.body))
        used = {str(b.label) for b in f.body.atoms(sp.IndexedBase)}
        arrays = tuple(t.name for t in f.inputs if t.rank and t.name in used) + (f.output.name,)
        steps = scatter.lower_scatter(f, hit, lambda e: emit(e, names), arrays)
        return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, (), steps)
    body, contractions = extract_matmuls(f) if f.recurrence is None else (f.body, [])
    temps = [Temp(c.temp, c.shape) for c in contractions]
    steps = [MatMul(c.temp, c.a, c.b, c.trans_a, c.trans_b) for c in contractions]
    direct = (len(contractions) == 1 and f.indices
              and body == sp.IndexedBase(contractions[0].temp, real=True)[f.indices])
    if direct:  # the whole formula is one matrix product: BLAS writes the output itself
        c = contractions[0]
        return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, (),
                           (MatMul(f.output.name, c.a, c.b, c.trans_a, c.trans_b),))
    names = _Names(_taken(f, body))
    body, inv_temps, inv_nests = hoist_nested_reductions(f, body, names, emit, _with_cse)
    temps += inv_temps
    steps += inv_nests
    used = {str(b.label) for b in body.atoms(sp.IndexedBase)}
    order = _loop_order(f)
    body, hoisted = _hoist_reductions(body, order, names)
    stmts, value = emit(body, names)
    index = f.indices or (sp.Integer(0),)
    nest = tuple(stmts) + tuple(_with_cse(Store(f.output.name, index, value), names))
    first_parallel = 0 if f.recurrence is None else 1  # a recurrence's steps run one after another
    for depth, i in reversed(list(enumerate(order))):
        lo, hi = f.ranges[i]
        inner = tuple(hoisted.get(depth + 1, ())) + nest
        if f.recurrence is not None and depth == 0 and f.recurrence.direction < 0:
            back = names.new("r", integer=True)  # a reverse recurrence counts its steps down
            nest = (Loop(back, lo, hi + 1, (Let(i, hi + lo - back),) + inner),)
        else:
            nest = (Loop(i, lo, hi + 1, inner, parallel=depth == first_parallel),)
    nest = tuple(hoisted.get(0, ())) + nest if f.indices else nest
    work = sp.Mul(*[hi + 1 for _, hi in f.ranges.values()]) * (8 if body.has(*REDUCTIONS) else 1)
    arrays = [t.name for t in f.inputs if t.rank and t.name in used] + [
        t.name for t in temps if t.name in used] + [f.output.name]
    steps.append(Nest("loops", nest, tuple(arrays), work))
    return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, tuple(temps), tuple(steps))


def _sums_down_columns(f: Formula) -> bool:
    """One Sum over r with bounds free of output indices, no nested reduction, no gather, no
    matrix product, and a read whose r axis comes before the axis of the last output index."""
    body = f.body
    if f.recurrence is not None or not f.indices or not isinstance(body, Sum) or len(body.limits) != 1:
        return False
    r, lo, hi = body.limits[0]
    if (lo.free_symbols | hi.free_symbols) & set(f.indices) or body.function.has(*REDUCTIONS):
        return False
    if any(t.integer for t in f.inputs) or extract_matmuls(f)[1]:
        return False
    last = f.indices[-1]
    for read in body.function.atoms(sp.Indexed):
        axes = list(read.indices)
        if r in axes and last in axes and axes.index(r) < axes.index(last):
            return True
    return False


def _lower_row_reduction(f: Formula) -> LoopProgram:
    """Zero the output, then for each r: for each output element: out += the summand."""
    (r, lo, hi), = f.body.limits
    names = _Names(_taken(f, f.body))
    stmts, value = emit(f.body.function, names)
    zero: tuple = (Store(f.output.name, f.indices, sp.Integer(0)),)
    add: tuple = tuple(stmts) + (ScatterAdd(f.output.name, f.indices, value),)
    for i in reversed(f.indices):
        lo_i, hi_i = f.ranges[i]
        zero, add = (Loop(i, lo_i, hi_i + 1, zero),), (Loop(i, lo_i, hi_i + 1, add),)
    used = {str(b.label) for b in f.body.atoms(sp.IndexedBase)}
    arrays = tuple(t.name for t in f.inputs if t.rank and t.name in used) + (f.output.name,)
    steps = (Nest("zero", zero, (f.output.name,), sp.Integer(0)),
             Nest("rows", (Loop(r, lo, hi + 1, add),), arrays, sp.Integer(0)))
    return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, (), steps)


def _sum_along_last_axis(f: Formula) -> bool:
    """`rest + Σ summand` (rest free of reductions; one Sum, box-shaped: bounds free of output
    indices; a summand without reductions or guards) whose innermost output index is the
    contiguous axis of a read: a convolution's y[b, i, j, o] = bias[o] + Σ K[kh, kw, c, o] x[...]
    and its kernel gradient. Scalar accumulators would run the reduction once per o, each reading K
    with stride Cout; accumulating into the output row instead runs o innermost, contiguous."""
    if f.recurrence is not None or len(f.indices) < 2 or any(t.integer for t in f.inputs):
        return False
    sums = [t for t in sp.Add.make_args(f.body) if isinstance(t, sp.Sum)]
    if len(sums) != 1 or any(t.has(*REDUCTIONS) for t in sp.Add.make_args(f.body) if t is not sums[0]):
        return False
    summand, limits = _flat_sum(sums[0])
    last = f.indices[-1]
    bounds = {s for _, lo, hi in limits for s in sp.sympify(lo).free_symbols | sp.sympify(hi).free_symbols}
    if bounds & set(f.indices) or summand.has(*REDUCTIONS, sp.Piecewise):
        return False
    if extract_matmuls(f)[1]:
        return False  # BLAS does it
    return any(r.indices[-1] == last for r in summand.atoms(sp.Indexed))


def _flat_sum(total) -> tuple:
    """(summand, limits outermost first) of a Sum of Sums."""
    limits, summand = list(total.limits), total.function
    while isinstance(summand, sp.Sum):
        limits += list(summand.limits)
        summand = summand.function
    return summand, limits


def _lower_inner_accumulation(f: Formula) -> LoopProgram:
    """for the outer output indices: the output row = rest; for the reduction indices: for the last
    output index: row += summand."""
    names = _Names(_taken(f, f.body))
    total = next(t for t in sp.Add.make_args(f.body) if isinstance(t, sp.Sum))
    rest, (summand, limits) = f.body - total, _flat_sum(total)
    out = sp.IndexedBase(f.output.name, real=True)[f.indices]
    last = f.indices[-1]
    lo_l, hi_l = f.ranges[last]
    init: tuple = (Loop(last, lo_l, hi_l + 1, tuple(_with_cse(Store(f.output.name, f.indices, rest), names))),)
    add: tuple = (Loop(last, lo_l, hi_l + 1, tuple(_with_cse(Store(f.output.name, f.indices, out + summand),
                                                             names))),)
    for var, lo, hi in reversed(limits):
        add = (Loop(var, lo, hi + 1, add),)
    nest = init + add
    for depth, i in reversed(list(enumerate(f.indices[:-1]))):
        lo, hi = f.ranges[i]
        nest = (Loop(i, lo, hi + 1, nest, parallel=depth == 0),)
    used = {str(b.label) for b in f.body.atoms(sp.IndexedBase)}
    arrays = tuple(t.name for t in f.inputs if t.rank and t.name in used) + (f.output.name,)
    work = sp.Mul(*[hi + 1 for _, hi in f.ranges.values()]) * 8
    return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, (), (Nest("loops", nest, arrays, work),))


def fusable(formulas) -> bool:
    """Whether formulas can run as one loop nest writing every output: elementwise (no reduction,
    no recurrence, no gather), over the same indices and ranges, none reading another's output
    (an optimizer step: the weight and each state tensor, from the same old values)."""
    formulas = list(formulas)
    if len(formulas) < 2:
        return False
    first, outs = formulas[0], {f.output.name for f in formulas}
    return all(f.indices == first.indices and f.ranges == first.ranges and f.indices
               and f.recurrence is None and not f.body.has(*REDUCTIONS)
               and not any(t.integer for t in f.inputs) and not outs & set(f.input_names)
               for f in formulas)


def lower_fused(formulas, name: str) -> LoopProgram:
    """One nest for formulas that `fusable` accepts: per element, every output, with common
    subexpressions (Adam's new moments, used by the new weight too) computed once."""
    formulas = list(formulas)
    first = formulas[0]
    inputs = list({t.name: t for f in formulas for t in f.inputs}.values())
    names = _Names(set().union(*(_taken(f, f.body) for f in formulas)))
    stmts, values = [], []
    for f in formulas:
        pre, value = emit(f.body, names)
        stmts += pre
        values.append(value)
    if not any(v.has(sp.Piecewise) for v in values):
        pairs, values = sp.cse(values, symbols=iter(lambda: names.new("c"), None), order="none")
        stmts += [Let(s, v) for s, v in pairs]
    nest = tuple(stmts) + tuple(Store(f.output.name, first.indices, v) for f, v in zip(formulas, values))
    for depth, i in reversed(list(enumerate(first.indices))):
        lo, hi = first.ranges[i]
        nest = (Loop(i, lo, hi + 1, nest, parallel=depth == 0),)
    arrays = tuple(t.name for t in inputs if t.rank) + tuple(f.output.name for f in formulas)
    work = sp.Mul(*[hi + 1 for _, hi in first.ranges.values()]) * len(formulas)
    dims = tuple(sorted({d for f in formulas for d in f.dims}, key=str))
    text = "\n".join(str(f) for f in formulas)
    return LoopProgram(name, text, tuple(inputs), first.output, dims, (),
                       (Nest("loops", nest, arrays, work),), tuple(f.output for f in formulas[1:]))


def lower_system(formulas, name: str, step: str, direction: int) -> LoopProgram:
    """One kernel for a system of recurrences (declare/systems.py): the step loop outermost (run
    backwards for a reverse system), inside it each formula's nest over its other indices, in the
    order a step writes them, so each reads only states already written."""
    formulas = list(formulas)
    names = _Names(set().union(*(_taken(f, f.body) for f in formulas)))
    t = next(i for i in formulas[0].indices if i.name == step)
    lo, hi = formulas[0].ranges[t]
    inner: list = []
    for f in formulas:
        own = next(i for i in f.indices if i.name == step)
        body, order = f.body.xreplace({own: t}), [i for i in f.indices if i != own]
        body, hoisted = _hoist_reductions(body, order, names)
        stmts, value = emit(body, names)
        index = tuple(t if i == own else i for i in f.indices)
        nest = tuple(stmts) + tuple(_with_cse(Store(f.output.name, index, value), names))
        for depth, i in reversed(list(enumerate(order))):
            nest = (Loop(i, f.ranges[i][0], f.ranges[i][1] + 1, tuple(hoisted.get(depth + 1, ())) + nest,
                         parallel=depth == 0),)
        inner += [*hoisted.get(0, ()), *nest]
    if direction < 0:
        back = names.new("r", integer=True)  # a reverse system counts its steps down
        loop = Loop(back, lo, hi + 1, (Let(t, hi + lo - back), *inner))
    else:
        loop = Loop(t, lo, hi + 1, tuple(inner))
    outputs = {f.output.name for f in formulas}
    inputs = [x for x in {x.name: x for f in formulas for x in f.inputs}.values() if x.name not in outputs]
    arrays = tuple(x.name for x in inputs if x.rank) + tuple(f.output.name for f in formulas)
    work = sum((sp.Mul(*[r + 1 for _, r in f.ranges.values()]) * (8 if f.body.has(*REDUCTIONS) else 1)
                for f in formulas), sp.Integer(0))
    dims = tuple(sorted({d for f in formulas for d in f.dims}, key=str))
    return LoopProgram(name, "\n".join(str(f) for f in formulas), tuple(inputs), formulas[0].output, dims, (),
                       (Nest("loops", (loop,), arrays, work),), tuple(f.output for f in formulas[1:]))


def _loop_order(f: Formula) -> list:
    """Output indices outermost first: the left side's order (stores contiguous), except that a
    recurrence's step index comes first."""
    order = list(f.indices)
    if f.recurrence is not None:
        order.insert(0, order.pop(f.recurrence.axis))
    return order


def _hoist_reductions(body, indices, names):
    """Loop-invariant code motion for reductions: a Sum that does not use the inner output indices
    is computed once, just inside the loop of the last index it uses (softmax's row sum is
    computed once per row, not once per element). Sums under a guard stay where they are."""
    hoisted: dict = {}
    if not indices:
        return body, hoisted
    replaced: dict = {}

    def visit(e):
        if isinstance(e, sp.Piecewise):  # the first condition always runs; branches may be guarded
            (value, cond), *rest = e.args
            return sp.Piecewise((value, visit(cond)), *rest)
        if isinstance(e, sp.Indexed):
            return e
        if isinstance(e, REDUCTIONS):
            free = free_indices(e, set(indices))
            depth = max((indices.index(i) + 1 for i in free), default=0)
            if depth == len(indices):
                return e
            if e not in replaced:
                stmts, value = emit(e, names)
                replaced[e] = value
                hoisted.setdefault(depth, []).extend(stmts)
            return replaced[e]
        if not e.args:
            return e
        return e.func(*[visit(a) for a in e.args])

    return visit(body), hoisted


def emit(expr: sp.Expr, names: _Names) -> tuple[list, sp.Expr]:
    """Statements that compute the Sums and guarded branches of `expr`, and the value left."""
    if not expr.has(*REDUCTIONS):
        return [], expr
    if isinstance(expr, sp.Sum):
        (var, lo, hi), *rest = expr.limits
        inner = Sum(expr.function, *rest) if rest else expr.function
        guard, pre = None, []
        if isinstance(inner, sp.Piecewise) and len(inner.args) == 2 and inner.args[1] == (0, True):
            inner, guard = inner.args[0]
            pre, guard = emit(guard, names)
        acc = names.new("acc")
        stmts, value = emit(inner, names)
        body = stmts + _with_cse(Accumulate(acc, value), names)
        if guard is not None:
            body = pre + [If(guard, tuple(body))]
        return [Let(acc, sp.Integer(0)), Loop(var, lo, hi + 1, tuple(body))], acc
    if isinstance(expr, ReduceMax):
        (var, lo, hi), *rest = expr.limits
        inner = ReduceMax(expr.function, *rest) if rest else expr.function
        best = names.new("mx")
        stmts, value = emit(inner, names)
        loop = Loop(var, lo, hi + 1, tuple(stmts) + (Let(best, sp.Max(best, value)),))
        return [Let(best, -sp.oo), loop], best
    if isinstance(expr, ArgMax):  # first maximiser: a strict > keeps the earliest on ties
        best, args = names.new("best"), [names.new("arg", integer=True) for _ in expr.limits]
        stmts, value = emit(expr.function, names)
        body: tuple = tuple(stmts) + (If(value > best, (Let(best, value),) + tuple(
            Let(a, v) for a, v in zip(args, expr.variables, strict=True))),)
        for var, lo, hi in reversed(expr.limits):
            body = (Loop(var, lo, hi + 1, body),)
        init = [Let(best, -sp.oo)] + [Let(a, lo) for a, (_, lo, _) in zip(args, expr.limits, strict=True)]
        return init + list(body), args[expr.coordinate]
    if isinstance(expr, sp.Piecewise):
        t = names.new("t")
        pre, conds = [], []
        for _, cond in expr.args:
            s, c = emit(cond, names)
            pre += s
            conds.append(c)
        chain: tuple = (Let(t, sp.Integer(0)),)
        for (value, _), cond in reversed(list(zip(expr.args, conds, strict=True))):
            stmts, v = emit(value, names)
            branch = tuple(stmts) + (Let(t, v),)
            chain = branch if cond is sp.true else (If(cond, branch, chain),)
        return pre + [Let(t, sp.Integer(0))] + list(chain), t
    stmts, args = [], []
    for a in expr.args:
        s, v = emit(a, names)
        stmts += s
        args.append(v)
    return stmts, expr.func(*args)


def _with_cse(stmt, names: _Names) -> list:
    """CSE on one statement's value (never across guards: a guarded read must stay guarded)."""
    if stmt.value.has(sp.Piecewise) or stmt.value.is_Atom:
        return [stmt]
    sym = iter(lambda: names.new("c"), None)
    pairs, (reduced,) = sp.cse(stmt.value, symbols=sym, order="none")
    return [Let(s, v) for s, v in pairs] + [type(stmt)(*_fields(stmt)[:-1], reduced)]


def _fields(stmt):
    return [getattr(stmt, f) for f in stmt.__dataclass_fields__]


__all__ = ["lower", "lower_fused", "fusable", "emit", "Tensor"]
