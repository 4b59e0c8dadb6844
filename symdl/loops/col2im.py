"""The sum a transposed contraction leaves (passes/col2im.py), run in Z's memory order.

grad_x[b, p, q, c] = Σ_i Σ_j Z[b, i, j, p - i, q - j, c] read per output element jumps between
nine rows of Z; run instead over Z's axes in order, each element adding into the output element
it belongs to (p = u + i for Z[b, i, j, u, v, c]), it streams Z once: at E1's shape (B 128, 15x15,
32 channels, one thread, a busy machine) 2.4-2.8 ms against 7.7-11.9 ms row by row. Each Z axis must be a summed
index or one output index (times ±1) plus summed indices and dimensions, every output index and
summed index recoverable from one axis; a guard keeps the formula's bounds where they are not
implied by Z's box.
"""
from __future__ import annotations

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import Sum
from .ir import If, Loop, LoopProgram, Nest, ScatterAdd, Store


def lower_scatter(f: Formula, temp: str, names) -> LoopProgram | None:
    """Zero the output, then for Z's axes in order: output[...] += coeff·Z[...]; None where `f`'s
    body is not coeff·Σ ... Σ temp[...] with axes of the forms above."""
    parsed = _parse(f, temp)
    if parsed is None:
        return None
    coeff, limits, read = parsed
    summed = [var for var, _, _ in limits]
    outputs = set(f.indices)
    loop_vars, solved = [], {}
    for e in read.indices:
        if e in summed and e not in loop_vars:
            loop_vars.append(e)
            continue
        own = e.free_symbols & outputs
        if len(own) != 1 or e.free_symbols & f.all_indices - outputs - set(summed):
            return None
        o = own.pop()
        k = sp.expand(e).coeff(o)
        if o in solved or k not in (1, -1) or sp.expand(e - k * o).has(o):
            return None
        z = o if e == o else names.new("u", integer=True)
        loop_vars.append(z)
        solved[o] = sp.expand((z - (e - k * o)) / k)
    if set(solved) != outputs or set(summed) - set(loop_vars):
        return None
    lengths = [f.shape_rules.get((temp, axis), [None])[0] for axis in range(len(read.indices))]
    if None in lengths:
        return None
    conds = []  # the formula's ranges and bounds, on the indices solved from Z's position
    for o in f.indices:
        lo, hi = f.ranges[o]
        conds += [sp.Le(lo, solved[o]), sp.Le(solved[o], hi)]
    for var, lo, hi in limits:
        conds += _bound(lo.xreplace(solved), var, hi.xreplace(solved))
    box = {z: (0, n - 1) for z, n in zip(loop_vars, lengths, strict=True)}
    conds = [c for c in conds if not _always(c, box)]
    if any(not c.free_symbols & set(loop_vars) for c in conds):
        return None  # a condition on dimensions alone: not a shape this schedule knows
    index = tuple(solved[o] for o in f.indices)
    body: tuple = (ScatterAdd(f.output.name, index, coeff * sp.IndexedBase(temp, real=True)[tuple(loop_vars)]),)
    for depth in reversed(range(len(loop_vars))):
        inner = set(loop_vars[depth:])
        here = [c for c in conds if c.free_symbols & inner and not c.free_symbols & set(loop_vars[depth + 1:])]
        if here:  # a guard just inside the loop of the last index it names
            body = (If(sp.And(*here), body),)
        body = (Loop(loop_vars[depth], 0, lengths[depth], body, parallel=depth == 0 and loop_vars[0] in outputs),)
    zero: tuple = (Store(f.output.name, f.indices, sp.Integer(0)),)
    for i in reversed(f.indices):
        lo, hi = f.ranges[i]
        zero = (Loop(i, lo, hi + 1, zero, parallel=i == f.indices[0]),)
    size = sp.Mul(*[hi - lo + 1 for lo, hi in f.ranges.values()])
    steps = (Nest("zero", zero, (f.output.name,), size), Nest("rows", body, (temp, f.output.name), sp.Mul(*lengths)))
    return LoopProgram(f.name, str(f), f.inputs, f.output, f.dims, (), steps)


def _parse(f: Formula, temp: str):
    """(coefficient, limits outermost first, the read of temp) of coeff·Σ ... Σ temp[...], or None."""
    sums = [a for a in sp.Mul.make_args(f.body) if isinstance(a, Sum)]
    if len(sums) != 1:
        return None
    coeff = f.body / sums[0]
    limits, summand = [], sums[0]
    while isinstance(summand, Sum):
        limits += summand.limits
        summand = summand.function
    reads = [a for a in sp.Mul.make_args(summand) if isinstance(a, sp.Indexed)]
    if len(reads) != 1 or str(reads[0].base.label) != temp:
        return None
    coeff = coeff * summand / reads[0]
    if coeff.free_symbols & f.all_indices or coeff.has(sp.Indexed, Sum):
        return None
    return coeff, limits, reads[0]


def _bound(lo, value, hi) -> list:
    """lo <= value <= hi as conditions, a Max lower bound or a Min upper bound split into its terms."""
    lows = lo.args if isinstance(lo, sp.Max) else (lo,)
    highs = hi.args if isinstance(hi, sp.Min) else (hi,)
    return [sp.Le(a, value) for a in lows] + [sp.Le(value, b) for b in highs]


def _always(cond, box: dict) -> bool:
    """Whether a condition linear in the loop variables holds over their whole box: its least
    value, each variable at the end its coefficient's sign picks, simplifies to a number >= 0."""
    if cond is sp.true:
        return True
    if not isinstance(cond, sp.Le):
        return False
    d = sp.expand(cond.rhs - cond.lhs)
    at = {}
    for z in d.free_symbols & set(box):
        k = d.coeff(z)
        if not k.is_number or sp.expand(d - k * z).has(z):
            return False
        at[z] = box[z][0] if k > 0 else box[z][1]
    least = sp.expand(d.xreplace(at))  # dimensions cancel where the box implies it (no simplify: slow)
    return bool(least.is_number and least >= 0)
