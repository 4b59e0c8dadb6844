"""The cpu backend's row schedules: nests that read and write rows in memory order where the
plain nest (one register accumulator per output element, lower.py) would stride.

- a sum down columns (grad_b[j] = Σ_i g[i, j]): zero the output, add row by row;
- `rest + Σ summand` whose innermost output index is a read's contiguous axis (a convolution and
  its kernel gradient): the output row starts as `rest` and each reduction step adds a row;
- any body whose box-shaped Sums read the innermost output index contiguously (an RNN step
  tanh(Σ_k W[k, j] x[b, t, k] + Σ_l R[l, j] h[b, t-1, l] + bias[j]), a weight gradient with several
  regions): each Sum accumulates into a row temporary, then the body runs along the row.
"""
from __future__ import annotations

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import REDUCTIONS, Sum
from ..passes.contraction import extract_matmuls
from .emit import _Names, _taken, _with_cse, emit
from .ir import Let, Loop, LoopProgram, Nest, ScatterAdd, Store, Temp


def lower_rows(f: Formula, order: list) -> LoopProgram | None:
    """The row schedule for `f` (output loops in `order`, a recurrence's step first), or None."""
    if _sums_down_columns(f):
        return _lower_row_reduction(f)
    if _sums_down_columns(f, nested=True):
        return _lower_partial_rows(f)
    if _sum_along_last_axis(f):
        return _lower_inner_accumulation(f)
    sums = _row_sums(f, order)
    return None if sums is None else _lower_row_sums(f, order, sums)


def _sums_down_columns(f: Formula, nested: bool = False) -> bool:
    """One Sum over r with bounds free of output indices, no nested reduction, no gather, no
    matrix product, and a read whose r axis comes before the axis of the last output index.
    `nested`: a box of two or more Sums instead (a convolution's bias gradient Σ_b Σ_i Σ_j g[b, i,
    j, o]), r being the outermost."""
    body = f.body
    if f.recurrence is not None or not f.indices or not isinstance(body, Sum):
        return False
    summand, limits = _flat_sum(body) if nested else (body.function, list(body.limits))
    if len(limits) < 2 if nested else len(limits) != 1:
        return False
    bounds = {s for _, lo, hi in limits for s in sp.sympify(lo).free_symbols | sp.sympify(hi).free_symbols}
    if bounds & set(f.indices) or summand.has(*REDUCTIONS, sp.Piecewise):
        return False
    if any(t.integer for t in f.inputs) or extract_matmuls(f)[1]:
        return False
    r, last = limits[0][0], f.indices[-1]
    for read in summand.atoms(sp.Indexed):
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


def _lower_partial_rows(f: Formula) -> LoopProgram:
    """A box of Sums down columns in two passes, each reading memory in order: in parallel over
    the outermost summed index r, a row of partial sums per r (the other summed indices added row
    by row); then the output zeroed and the partial rows added. The partials are the output's size
    times r's length, far less than the input read (two or more summed indices)."""
    summand, limits = _flat_sum(f.body)
    (r, lo, hi), inner = limits[0], limits[1:]
    names = _Names(_taken(f, f.body))
    part = names.new("part").name
    shape = (hi - lo + 1, *f.output.shape)
    at = (r - lo, *f.indices)
    partial = sp.IndexedBase(part, real=True)[at]
    stmts, value = emit(summand, names)
    zero_part: tuple = (Store(part, at, sp.Integer(0)),)
    add: tuple = tuple(stmts) + tuple(_with_cse(Store(part, at, partial + value), names))
    zero: tuple = (Store(f.output.name, f.indices, sp.Integer(0)),)
    total: tuple = (ScatterAdd(f.output.name, f.indices, partial),)
    for i in reversed(f.indices):
        lo_i, hi_i = f.ranges[i]
        zero_part, add = (Loop(i, lo_i, hi_i + 1, zero_part),), (Loop(i, lo_i, hi_i + 1, add),)
        zero, total = (Loop(i, lo_i, hi_i + 1, zero),), (Loop(i, lo_i, hi_i + 1, total),)
    for var, lo_v, hi_v in reversed(inner):
        add = (Loop(var, lo_v, hi_v + 1, add),)
    used = {str(b.label) for b in f.body.atoms(sp.IndexedBase)}
    arrays = tuple(t.name for t in f.inputs if t.rank and t.name in used) + (part,)
    work = sp.Mul(*[hi_v - lo_v + 1 for _, lo_v, hi_v in limits], *[hi_i + 1 for _, hi_i in f.ranges.values()])
    steps = (Nest("partial_rows", (Loop(r, lo, hi + 1, zero_part + add, parallel=True),), arrays, work),
             Nest("zero", zero, (f.output.name,), sp.Integer(0)),
             Nest("rows", (Loop(r, lo, hi + 1, total),), (part, f.output.name), sp.Integer(0)))
    return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, (Temp(part, shape),), steps)


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
    """(summand, limits outermost first) of a Sum of Sums; a factor free of an inner Sum's
    indices moves inside it (Σ_b h0[b, l] Σ_t g[b, t, j] is Σ_b Σ_t h0[b, l] g[b, t, j])."""
    limits, summand = list(total.limits), total.function
    while True:
        if isinstance(summand, sp.Mul):
            inner = [a for a in summand.args if isinstance(a, sp.Sum)]
            if len(inner) == 1:
                rest = summand / inner[0]
                if not rest.has(*REDUCTIONS) and not rest.free_symbols & set(inner[0].variables):
                    summand = Sum(rest * inner[0].function, *inner[0].limits)
        if not isinstance(summand, sp.Sum):
            return summand, limits
        limits += list(summand.limits)
        summand = summand.function


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


def _row_sums(f: Formula, order: list, body=None) -> list | None:
    """The Sums to accumulate into rows, or None: every reduction of `body` (f's by default) is a box-shaped Sum
    (bounds free of output indices, no reduction inside) outside any guard, and each reads the
    innermost output index as a contiguous axis. Matrix products go to
    BLAS instead; a recurrence's step must not be the row."""
    last = f.indices[-1] if f.indices else None
    if len(f.indices) < 2 or order[-1] != last or any(t.integer for t in f.inputs):
        return None
    if f.recurrence is None and extract_matmuls(f)[1]:
        return None
    sums: list = []

    def visit(e) -> bool:
        if isinstance(e, Sum):
            sums.append(e)
            return True
        if isinstance(e, REDUCTIONS) or (isinstance(e, sp.Piecewise) and e.has(*REDUCTIONS)):
            return False  # a max, or a Sum under a guard: its reads must stay guarded
        return all(visit(a) for a in e.args)

    if not visit(f.body if body is None else body) or not sums:
        return None
    outputs = set(f.indices)
    for total in sums:
        summand, limits = _flat_sum(total)
        bounds = {s for _, lo, hi in limits for s in sp.sympify(lo).free_symbols | sp.sympify(hi).free_symbols}
        if bounds & outputs or summand.has(*REDUCTIONS):
            return None
    if not all(any(r.indices[-1] == last for r in _flat_sum(total)[0].atoms(sp.Indexed)) for total in sums):
        return None  # a Sum that does not move along the row runs once per outer index (lower.py)
    if any(_strided_along_row(*_flat_sum(total), last) for total in sums):
        return None
    return list(dict.fromkeys(sums))


def _strided_along_row(summand, limits, last) -> bool:
    """Whether a read of the summand moves along the row (uses `last`) with a summed index as its
    contiguous axis (a softmax gradient's Σ_s exp(x[b, t, s] - m[b, t]) g[b, t, s] along t): the
    row would read it S elements apart, where the plain nest's accumulator reads it in order."""
    summed = {var for var, _, _ in limits}
    return any(last in r.free_symbols and r.indices[-1] in summed for r in summand.atoms(sp.Indexed))


def _lower_row_sums(f: Formula, order: list, sums: list) -> LoopProgram:
    """Per outer index: each Sum's row temporary zeroed, then for its reduction indices, for the
    last output index: row += summand; then along the row, the body with each Sum read from its row.
    A recurrence's rows leave out its step (they are complete before the next step reads them)."""
    names = _Names(_taken(f, f.body))
    last = f.indices[-1]
    step = f.indices[f.recurrence.axis] if f.recurrence is not None else None
    kept = [n for n, i in enumerate(f.indices) if i != step]
    index = tuple(f.indices[n] for n in kept)
    shape = tuple(f.output.shape[n] for n in kept)
    lo_l, hi_l = f.ranges[last]
    temps, inner, rows = [], [], {}
    for total in sums:
        row = names.new("row").name
        temps.append(Temp(row, shape))
        rows[total] = sp.IndexedBase(row, real=True)[index]
        summand, limits = _flat_sum(total)
        add: tuple = (Loop(last, lo_l, hi_l + 1, tuple(_with_cse(Store(row, index, rows[total] + summand), names))),)
        for var, lo, hi in reversed(limits):
            add = (Loop(var, lo, hi + 1, add),)
        inner += [Loop(last, lo_l, hi_l + 1, (Store(row, index, sp.Integer(0)),)), *add]
    stmts, value = emit(f.body.xreplace(rows), names)
    inner.append(Loop(last, lo_l, hi_l + 1, tuple(stmts) + tuple(_with_cse(Store(f.output.name, f.indices, value),
                                                                            names))))
    nest: tuple = tuple(inner)
    first_parallel = 0 if step is None else 1  # a recurrence's steps run one after another
    for depth, i in reversed(list(enumerate(order[:-1]))):
        lo, hi = f.ranges[i]
        if i == step and f.recurrence.direction < 0:
            back = names.new("r", integer=True)  # a reverse recurrence counts its steps down
            nest = (Loop(back, lo, hi + 1, (Let(i, hi + lo - back),) + nest),)
        else:
            nest = (Loop(i, lo, hi + 1, nest, parallel=depth == first_parallel),)
    used = {str(b.label) for b in f.body.atoms(sp.IndexedBase)}
    arrays = tuple(t.name for t in f.inputs if t.rank and t.name in used) + tuple(t.name for t in temps) + (
        f.output.name,)
    work = sp.Mul(*[hi + 1 for _, hi in f.ranges.values()]) * 8
    return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, tuple(temps), (Nest("loops", nest, arrays, work),))
