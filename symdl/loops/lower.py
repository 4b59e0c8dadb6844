"""Lowering: a Formula becomes a LoopProgram (library calls, nests for loop-invariant nested
reductions (invariant.py), then the main loop nest).

Output indices become loops in the left side's order (the last index innermost, so stores are
contiguous); each Sum becomes a register accumulator with its loop; guards become `If`s so that a
guarded read is never executed outside its range; CSE runs on loop bodies, never across a Sum.
"""
from __future__ import annotations

from dataclasses import replace

import sympy as sp

from ..declare.formula import Formula, Tensor
from ..declare.indexing import free_indices
from ..declare.reductions import REDUCTIONS
from ..passes.col2im import extract_col2im
from ..passes.contraction import Contraction, Gather, GroupedContraction, extract_matmuls
from ..passes.sums import merge_sibling_sums
from . import blocked, col2im, rows, scatter
from .emit import _Names, _taken, _with_cse, emit, emit_shared
from .invariant import hoist_nested_reductions
from .ir import Branch, Contract, Let, Loop, LoopProgram, MatMul, Nest, Store, Temp


def lower(f: Formula, row_reductions: bool = False) -> LoopProgram:
    """`row_reductions` (the cpu backend's choice): contractions of any rank go to BLAS
    (passes/contraction.py: grouped index sets, operands gathered into contiguous temporaries),
    where other backends keep loops for all but 2-D matrix products; and a sum down columns
    (grad_b[j] = Σ_i g[i, j]) runs row by row into the zeroed output, reading memory in order,
    instead of one strided column at a time."""
    if row_reductions and f.recurrence is None:
        program = _lower_grouped(f)
        if program is not None:
            return program
    if row_reductions and f.recurrence is not None:
        program = _hoist_projections(f)
        if program is not None:
            return program
    return _lower_plain(f, row_reductions)


def _hoist_projections(f: Formula) -> LoopProgram | None:
    """A recurrence's Sums that read no step of its own output (an RNN's input projection
    Σ_k W[k, j] x[b, t, k]) run for every step at once before the step loop, as GEMMs over all
    (b, t) rows; the step loop reads their temporaries. None when there is none (or one would
    gather: such a Branch would copy the whole recurrence)."""
    body, contractions = extract_matmuls(f, grouped=True, unless_reading=f.output.name)
    if not contractions or any(getattr(c, "pays", sp.true) is not sp.true for c in contractions):
        return None
    shapes = {c.temp: c.shape for c in contractions}
    steps = Formula.from_parts(f.name, f.output.name, f.indices, f.ranges, body, shapes, domains=f.domains)
    inner = _lower_plain(steps, True)
    temps, library = _library_steps(contractions, {c.temp: c.temp for c in contractions})
    return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, tuple(temps) + inner.temps,
                       tuple(library) + inner.steps)


def _lower_grouped(f: Formula) -> LoopProgram | None:
    """The program with grouped contractions as GEMMs, or None when there is none. Where a gather
    pays only at some sizes (contraction.MIN_REUSE), a Branch runs it there and the plain
    program's loops elsewhere; a transposed pattern's GEMM without a gather (col2im.py) runs
    first where it pays and its temporaries are no larger than the gathers'."""
    if scatter.match(f) is not None:
        return None
    ways = []  # (condition on dimensions, program): the first whose condition holds runs
    body, contractions = extract_matmuls(f, grouped=True)
    grouped = [c for c in contractions if isinstance(c, GroupedContraction)]
    pays = sp.And(*[c.pays for c in grouped])
    gathered = _lower_contractions(f, body, contractions) if grouped and pays is not sp.false else None
    transposed = extract_col2im(f)
    if transposed is not None:
        first = sp.And(*[c.pays for c in transposed[1] if isinstance(c, GroupedContraction)])
        if gathered is not None:  # no more memory and no more multiply-adds than the gathers' way
            first = sp.And(first, sp.Le(_library_size(transposed[1]), _temp_size(gathered)),
                           sp.Le(_gemm_work(transposed[1]), _gemm_work(contractions)))
        # where it loses at large sizes (a forward convolution: Z of the input's H·W positions, not
        # the output's), it never runs in practice: the module keeps the gathers' way alone
        if first.subs({d: LARGE for d in f.dims}) is not sp.false:
            ways.append((first, _renamed(_lower_col2im(f, *transposed), "col2im")))
    if gathered is not None:
        ways.append((pays, gathered))
    ways = [(cond, p) for cond, p in ways if cond is not sp.false]
    if not ways:
        return None
    if ways[0][0] is sp.true:
        return ways[0][1]
    program = _renamed(_lower_plain(f, True), "plain")
    for cond, fast in reversed(ways):
        program = fast if cond is sp.true else LoopProgram(
            f.name, str(f), f.inputs, f.output, f.dims, (),
            (Branch(cond, fast.temps, fast.steps, program.temps, program.steps),))
    return program


LARGE = 1024  # every dimension at once, where a way's condition is asked whether it can pay


def _lower_col2im(f: Formula, body, contractions) -> LoopProgram:
    """The GEMM into a whole-axes temporary, then its sum over Z in Z's memory order, adding into
    the zeroed output (col2im.py); the plain loops where that does not apply."""
    shapes = {c.temp: c.shape for c in contractions}
    sums = Formula.from_parts(f.name, f.output.name, f.indices, f.ranges, body, shapes, domains=f.domains)
    inner = None
    if len(contractions) == 1:
        inner = col2im.lower_scatter(sums, contractions[0].temp, _Names(_taken(sums, sums.body)))
    if inner is None:
        return _lower_contractions(f, body, contractions)
    temps, library = _library_steps(contractions, {c.temp: c.temp for c in contractions})
    return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, tuple(temps) + inner.temps,
                       tuple(library) + inner.steps)


def _renamed(program: LoopProgram, prefix: str) -> LoopProgram:
    """The program with its nests named `prefix_name`: each way of a Branch defines its own."""
    steps = tuple(replace(s, name=f"{prefix}_{s.name}") if isinstance(s, Nest) else s for s in program.steps)
    return replace(program, steps=steps)


def _temp_size(program: LoopProgram) -> sp.Expr:
    """Elements of the temporaries a program allocates."""
    return sp.Add(*[sp.Mul(*t.shape) for t in program.temps])


def _library_size(contractions) -> sp.Expr:
    """Elements of the contractions' temporaries and gathers."""
    shapes = [t for c in contractions for t in (c.shape, *(g.shape for g in getattr(c, "gathers", ())))]
    return sp.Add(*[sp.Mul(*shape) for shape in shapes])


def _gemm_work(contractions) -> sp.Expr:
    """Multiply-adds of the grouped contractions' GEMMs (m·n·k each)."""
    return sp.Add(*[sp.Mul(*c.sizes) for c in contractions if isinstance(c, GroupedContraction)])


def _lower_plain(f: Formula, row_reductions: bool) -> LoopProgram:
    """The loops, with a 2-D matrix product as a library call (every backend's program)."""
    if row_reductions:  # the cpu's schedules that read and write rows in memory order (rows.py)
        program = blocked.lower_blocked(f, loop_order(f)) or rows.lower_rows(f, loop_order(f))
        if program is not None:
            return program
    hit = scatter.match(f) if f.recurrence is None else None
    if hit is not None:  # a gather's gradient: the gather's loops, adding into the output
        names = _Names(_taken(f, f.body))
        used = {str(b.label) for b in f.body.atoms(sp.IndexedBase)}
        arrays = tuple(t.name for t in f.inputs if t.rank and t.name in used) + (f.output.name,)
        steps, temps = scatter.lower_scatter(f, hit, lambda es: emit_shared(es, names), arrays,
                                             lambda: names.new("at", integer=True),
                                             (lambda: names.new("found").name) if row_reductions else None)
        return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, temps, steps)
    body, contractions = extract_matmuls(f) if f.recurrence is None else (f.body, [])
    return _lower_contractions(f, body, contractions)


def _lower_contractions(f: Formula, body, contractions) -> LoopProgram:
    """Library calls for the contractions, then the loops of the body that reads their results."""
    direct = _direct(f, body, contractions)
    if direct is not None:  # the whole formula is one matrix product: BLAS writes the output itself
        return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, tuple(direct[0]), tuple(direct[1]))
    writes = {c.temp: c.temp for c in contractions}
    into = _epilogue_in_place(f, body, contractions)
    if into is not None:  # the GEMM writes the output; the loops update it element by element
        writes[into] = f.output.name
        out = sp.IndexedBase(f.output.name, real=True)[f.indices]
        body = body.xreplace({sp.IndexedBase(into, real=True)[f.indices]: out})
    temps, steps = _library_steps(contractions, writes)
    body = merge_sibling_sums(body)  # one pass for the regions of a piecewise derivative
    names = _Names(_taken(f, body))
    body, inv_temps, inv_nests = hoist_nested_reductions(f, body, names, emit, _with_cse)
    temps += inv_temps
    steps += inv_nests
    used = {str(b.label) for b in body.atoms(sp.IndexedBase)}
    order = loop_order(f)
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


def _direct(f: Formula, body, contractions):
    """(temps, steps) when the body is one contraction's temporary read as it is laid out, its
    axes the output's in any order: the library call writes the output itself (a grouped one
    through a transposed view of it; attention's projections y_q[b, h, t, d] from rows (b, t))."""
    if len(contractions) != 1 or not f.indices:
        return None
    c, axes = contractions[0], _axes(contractions[0], f)
    if sorted(axes, key=str) != sorted(f.indices, key=str) or body != sp.IndexedBase(c.temp, real=True)[axes]:
        return None
    if axes != tuple(f.indices) and not isinstance(c, GroupedContraction):
        return None
    temps, steps = _library_steps(contractions, {c.temp: f.output.name})
    if axes != tuple(f.indices):
        steps[-1] = replace(steps[-1], out_axes=tuple(f.indices))  # after its operands' gathers
    return temps, steps


def _epilogue_in_place(f: Formula, body, contractions) -> str | None:
    """A contraction's temporary that can be the output itself (no temporary, one pass less over
    memory): read only at the output's own element (f.indices, in order, outside any reduction,
    whose bound indices could shadow an output index), of the output's shape, in a formula that
    reads no other element of its output. Each element is then read before the one store that
    replaces it, in any loop order and across threads."""
    if not f.indices or f.recurrence is not None or any(lo != 0 for lo, _ in f.ranges.values()):
        return None
    if f.output.name in {str(b.label) for b in body.atoms(sp.IndexedBase)}:
        return None
    inside = {str(b.label) for r in body.atoms(*REDUCTIONS) for b in r.atoms(sp.IndexedBase)}
    for c in contractions:
        reads = {r for r in body.atoms(sp.Indexed) if str(r.base.label) == c.temp}
        own = {sp.IndexedBase(c.temp, real=True)[f.indices]}
        if c.temp not in inside and _axes(c, f) == tuple(f.indices) and reads == own and len(c.shape) == len(f.indices):
            return c.temp
    return None


def _axes(c, f: Formula) -> tuple:
    """The output indices a contraction's temporary is laid out by (a 2-D product's are the formula's)."""
    return (c.batch + c.rows + c.cols) if isinstance(c, GroupedContraction) else tuple(f.indices)


def _library_steps(contractions, writes: dict) -> tuple[list, list]:
    """Temporaries and steps for the contractions: a matrix product, or the nests gathering a
    grouped contraction's operands then its GEMM; `writes` maps each temporary to the array it fills."""
    temps, steps = [], []
    for c in contractions:
        out = writes[c.temp]
        if out == c.temp:
            temps.append(Temp(c.temp, c.shape))
        if isinstance(c, Contraction):
            steps.append(MatMul(out, c.a, c.b, c.trans_a, c.trans_b))
            continue
        for g in c.gathers:
            temps.append(Temp(g.temp, g.shape))
            steps.append(_gather_nest(g))
        steps.append(Contract(out, c.a, c.a_axes, c.b, c.b_axes, c.rows, c.cols, c.sums, c.sizes, c.batch))
    return temps, steps


def _gather_nest(g: Gather) -> Nest:
    """temp[axes - lows] = value over the box: the operand in contiguous memory (im2col), a guard's
    zeros included; the first axis runs in parallel."""
    names = _Names({s.name for s in g.value.atoms(sp.Symbol)} | {str(b.label) for b in g.value.atoms(sp.IndexedBase)})
    stmts, value = emit(g.value, names)
    index = tuple(i - lo for i, lo in zip(g.axes, g.lows, strict=True))
    nest = tuple(stmts) + tuple(_with_cse(Store(g.temp, index, value), names))
    for depth in reversed(range(len(g.axes))):
        i, lo, n = g.axes[depth], g.lows[depth], g.shape[depth]
        nest = (Loop(i, lo, lo + n, nest, parallel=depth == 0),)
    arrays = tuple(sorted({str(b.label) for b in g.value.atoms(sp.IndexedBase)})) + (g.temp,)
    return Nest(f"gather_{g.temp}", nest, arrays, sp.Mul(*g.shape))


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


def loop_order(f: Formula) -> list:
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


__all__ = ["lower", "lower_fused", "fusable", "emit", "Tensor"]
