"""The cpu's blocked schedule of a recurrence's step: its sums over the earlier state (an RNN's
Σ_l R[l, j] h[b, t-1, l], a (B x H)·(H x H) product per step) as a small GEMM micro-kernel.

Row by row (rows.py) each batch row reloads every weight row: ~15 GFLOP/s. Here a pass over the
weights serves BATCH_BLOCK batch rows, and SUM_BLOCK reduction steps are added per load and store
of a row: for each block, `row[b+u, j] += Σ_v c[u, v] · R[l+v, j]` with the factors free of j
(c[u, v] = h[b+u, t-1, l+v]) in scalars and j innermost and contiguous, so LLVM vectorises it.
Remainders (batches or sums not divisible by the blocks) run the same code one row / one step at
a time. Calling BLAS per step instead would split the step loop out of its njit function (a
Python call per step); measured slower at these sizes (docs/known_issues.md).

Two rewrites make more recurrences fit the schedule:
- conditions on the step alone (`t < 1`: read the initial state; the adjoint's last step) are
  decided once per step, each case its own code, instead of once per element;
- a sum that reads the innermost output index along a weight's first axis (the adjoint's
  Σ_j R[l, j] g[b, t+1, j]) reads a transposed copy made once before the step loop.
"""
from __future__ import annotations

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import REDUCTIONS
from .emit import _Names, _taken, _with_cse, emit
from .ir import If, Let, Loop, LoopProgram, Nest, Store, Temp
from .rows import _flat_sum, _row_sums

BATCH_BLOCK = 4  # batch rows served per pass over the weight rows
SUM_BLOCK = 4  # reduction steps added per load and store of a row
MAX_CASES = 4  # step conditions resolved into at most this many copies of the step's code


def lower_blocked(f: Formula, order: list) -> LoopProgram | None:
    """The blocked step schedule for a recurrence (loops in `order`: the step, the batch-like
    indices, the innermost output index), or None where it does not apply."""
    if f.recurrence is None or len(order) < 3 or any(t.integer for t in f.inputs):
        return None
    step, last = f.indices[f.recurrence.axis], f.indices[-1]
    if order[0] != step or order[-1] != last or order[-2] == step:
        return None
    names = _Names(_taken(f, f.body))
    transposed: dict = {}
    cases = [(cond, _transpose_reads(f, body, transposed, names)) for cond, body in _step_cases(f, f.body, step)]
    if len(cases) > MAX_CASES:
        return None  # each case is a copy of the step's code
    found = [_row_sums(f, order, body) if body.has(*REDUCTIONS) else [] for _, body in cases]
    if any(s is None for s in found) or not any(found):
        return None
    kept = [i for i in f.indices if i != step]
    shape = tuple(f.output.shape[n] for n, i in enumerate(f.indices) if i != step)
    temps = [Temp(t, (a.shape[1], a.shape[0])) for a, t in transposed.values()]
    code = []
    for (_, body), sums in zip(cases, found, strict=True):
        rows = {total: sp.IndexedBase(names.new("row").name, real=True)[tuple(kept)] for total in sums}
        temps += [Temp(str(r.base.label), shape) for r in rows.values()]
        code.append(_step_code(f, order, body, rows, names))
    nest = code[-1]
    for (cond, _), then in reversed(list(zip(cases[:-1], code[:-1], strict=True))):
        nest = (If(cond, then, nest),)
    lo, hi = f.ranges[step]
    if f.recurrence.direction < 0:  # a reverse recurrence counts its steps down
        back = names.new("r", integer=True)
        nest = (Loop(back, lo, hi + 1, (Let(step, hi + lo - back),) + nest),)
    else:
        nest = (Loop(step, lo, hi + 1, nest),)
    used = set().union(*({str(x.label) for x in body.atoms(sp.IndexedBase)} for _, body in cases))
    arrays = tuple(t.name for t in f.inputs if t.rank and t.name in used) + tuple(t.name for t in temps)
    work = sp.Mul(*[hi + 1 for _, hi in f.ranges.values()]) * 8
    steps = tuple(_transpose_nest(a, t) for a, t in transposed.values())
    steps += (Nest("loops", nest, arrays + (f.output.name,), work),)
    return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, tuple(temps), steps)


def _step_cases(f: Formula, body, step) -> list:
    """[(condition, body)] in the order to test them (the last one: otherwise), each Piecewise
    whose conditions read no index but the step resolved; consecutive equal bodies merged."""
    bound = set(f.indices) - {step} | {v for s in body.atoms(sp.Sum) for v in s.variables}
    for pw in sp.preorder_traversal(body):
        if isinstance(pw, sp.Piecewise) and all(
                c.free_symbols and not c.free_symbols & bound for _, c in pw.args if c is not sp.true):
            cases = []
            for e, c in pw.args:
                for cond, sub in _step_cases(f, body.xreplace({pw: e}), step):
                    cases.append((sp.And(c, cond) if c is not sp.true else cond, sub))
            return _merged(_reachable(cases))
    return [(sp.true, body)]


def _reachable(cases: list) -> list:
    """The cases a step can reach: one whose condition an earlier case has already (two sums
    guarded alike split into 'both', 'the first', 'the second', 'neither'; only the first and
    the last can run) is dropped, and nothing after an unconditional case is kept."""
    seen, out = set(), []
    for cond, body in cases:
        if cond in seen:
            continue
        seen.add(cond)
        out.append((cond, body))
        if cond is sp.true:
            break
    return out


def _merged(cases: list) -> list:
    out: list = []
    for cond, body in cases:
        if out and out[-1][1] == body:
            out[-1] = (sp.Or(out[-1][0], cond), body)
        else:
            out.append((cond, body))
    return out


def _transpose_reads(f: Formula, body, transposed: dict, names: _Names):
    """`body` with each Sum that reads no tensor along the innermost output index (`last`) but a
    weight A[last, r] (r summed) reading a transposed copy At[r, last] instead."""
    last = f.indices[-1]
    inputs = {t.name: t for t in f.inputs if t.rank == 2}
    swap = {}
    for total in body.atoms(sp.Sum):
        summand, limits = _flat_sum(total)
        reads = summand.atoms(sp.Indexed)
        if any(r.indices[-1] == last for r in reads):
            continue
        summed = {v for v, _, _ in limits}
        for r in reads:
            name = str(r.base.label)
            if name in inputs and r.indices[0] == last and r.indices[1] in summed:
                if name not in transposed:
                    transposed[name] = (inputs[name], names.new(f"{name}_t").name)
                swap[r] = sp.IndexedBase(transposed[name][1], real=True)[r.indices[1], r.indices[0]]
    return body.xreplace(swap)


def _transpose_nest(a, name: str) -> Nest:
    i, j = sp.Symbol("i_row", integer=True), sp.Symbol("i_col", integer=True)
    copy = Store(name, (j, i), sp.IndexedBase(a.name, real=True)[i, j])
    nest = (Loop(i, 0, a.shape[0], (Loop(j, 0, a.shape[1], (copy,)),)),)
    return Nest(f"transpose_{a.name}", nest, (a.name, name), sp.Integer(0))


def _step_code(f: Formula, order: list, body, rows: dict, names: _Names) -> tuple:
    """One step: each Sum into its rows, BATCH_BLOCK batch rows at a time, then the remainder row
    by row; then along each row, the body reading the Sums from their rows."""
    batch, last = order[-2], order[-1]
    lo, hi = f.ranges[batch]
    full = lo + BATCH_BLOCK * sp.floor((hi - lo + 1) / BATCH_BLOCK)
    block = names.new("ib", integer=True)
    firsts = [lo + BATCH_BLOCK * block + u for u in range(BATCH_BLOCK)]
    blocked = sum((_accumulate(f, total, row, batch, firsts, names) for total, row in rows.items()), ())
    single = sum((_accumulate(f, total, row, batch, [batch], names) for total, row in rows.items()), ())
    stmts, value = emit(body.xreplace(rows), names)
    lo_l, hi_l = f.ranges[last]
    store = (Loop(last, lo_l, hi_l + 1, tuple(stmts) + tuple(_with_cse(Store(f.output.name, f.indices, value),
                                                                        names))),)
    code = ((Loop(block, 0, sp.floor((hi - lo + 1) / BATCH_BLOCK), blocked, parallel=True),
             Loop(batch, full, hi + 1, single)) if rows else ())
    code += (Loop(batch, lo, hi + 1, store, parallel=True),)
    for i in reversed(order[1:-2]):  # indices outside the batch: loops around each part
        lo_i, hi_i = f.ranges[i]
        code = tuple(Loop(i, lo_i, hi_i + 1, (s,)) for s in code)
    return code


def _accumulate(f: Formula, total, row, batch, firsts: list, names: _Names) -> tuple:
    """The rows of `firsts` (batch index values) zeroed, then the Sum added SUM_BLOCK steps of its
    innermost reduction at a time (then the remaining steps one at a time)."""
    last = f.indices[-1]
    lo_l, hi_l = f.ranges[last]
    summand, limits = _flat_sum(total)
    (r, lo_r, hi_r) = limits[-1]
    full = lo_r + SUM_BLOCK * sp.floor((hi_r - lo_r + 1) / SUM_BLOCK)
    block = names.new("il", integer=True)
    at = [row.xreplace({batch: b}) for b in firsts]
    zero = (Loop(last, lo_l, hi_l + 1, tuple(Store(str(a.base.label), a.indices, sp.Integer(0)) for a in at)),)
    steps = [lo_r + SUM_BLOCK * block + v for v in range(SUM_BLOCK)]
    blocks = sp.floor((hi_r - lo_r + 1) / SUM_BLOCK)
    adds = (Loop(block, 0, blocks, _micro_kernel(f, summand, r, steps, batch, firsts, at, names)),
            Loop(r, full, hi_r + 1, _micro_kernel(f, summand, r, [r], batch, firsts, at, names)))
    for var, lo, hi in reversed(limits[:-1]):
        adds = (Loop(var, lo, hi + 1, adds),)
    return zero + adds


def _micro_kernel(f: Formula, summand, r, steps: list, batch, firsts: list, at: list, names: _Names) -> tuple:
    """Scalars c[u, v] for the factors free of the innermost output index, then along the row:
    the factors that read it loaded once (w[v]) and every row of the block updated."""
    last = f.indices[-1]
    lo_l, hi_l = f.ranges[last]
    lets, inner, rows = [], [], []
    shared = {}  # the factors the block's rows share (the weight row R[l+v, j]), loaded once
    for v, s in enumerate(steps):
        moving = _split(summand.xreplace({r: s}), last)[1]
        if batch not in moving.free_symbols and moving.has(sp.Indexed) and not moving.has(sp.Piecewise):
            shared[v] = names.new("w")
            inner.append(Let(shared[v], moving))
    for u, (b, a) in enumerate(zip(firsts, at, strict=True)):
        total = a
        for v, s in enumerate(steps):
            still, moving = _split(summand.xreplace({r: s, batch: b}), last)
            if still.has(sp.Indexed) and not still.has(sp.Piecewise):  # a guarded read stays guarded
                c = names.new("c")
                lets.append(Let(c, still))
                still = c
            total += still * shared.get(v, moving)
        rows.append(Store(str(a.base.label), a.indices, total))
    return tuple(lets) + (Loop(last, lo_l, hi_l + 1, tuple(inner) + tuple(rows)),)


def _split(term, last) -> tuple:
    """(the factors of `term` free of `last`, the factors that read it)."""
    factors = sp.Mul.make_args(term)
    return (sp.Mul(*[x for x in factors if last not in x.free_symbols]),
            sp.Mul(*[x for x in factors if last in x.free_symbols]))
