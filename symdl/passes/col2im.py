"""Transposed contractions (col2im order): a GEMM over only the indices both operands read plainly.

A convolution's input gradient grad_x[b, p, q, c] = Σ_i Σ_j Σ_o g[b, i, j, o]·k[p - i, q - j, c, o]
(i, j over bounds that name p and q) reads o plainly in both operands but i, j plainly in g only,
through p - i, q - j in k. The grouped contraction (contraction.py) rebases i, j onto k's axes and
gathers g into patches: B·H·W·kh·kw·Cout floats written with branchy guards before its GEMM. Here
instead one GEMM on the operands as they lie sums over o alone,

    Z[b, i, j, u, v, c] = Σ_o g[b, i, j, o]·k[u, v, c, o]    (B·Ho·Wo, Cout) @ (Cout, kh·kw·Cin)

its temporary keeping every other axis of both tensors whole, and the loops sum the rest over the
formula's own bounds: grad_x[b, p, q, c] = Σ_i Σ_j Z[b, i, j, p - i, q - j, c]. Every read of Z is
one the formula made of g and k, so strides, padding and dilation need no case of their own; which
of the two (or the plain loops) runs is decided per call on sizes (loops/lower.py).
"""
from __future__ import annotations

import itertools

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import Sum
from .contraction import MIN_REUSE, GroupedContraction, extract_matmuls


def extract_col2im(f: Formula) -> tuple[sp.Expr, list] | None:
    """(body, contractions) as `extract_matmuls(f, grouped=True)` finds them, except that each Sum
    of the transposed pattern is a GEMM into a whole-axes temporary and the Sums it leaves; None
    when no Sum has the pattern."""
    if not _may_match(f.body):
        return None
    hits: list = []
    taken = set(f.used_names)

    def first(s: sp.Sum, order: list):
        hit = _match(s, f, order, taken)
        if hit is not None:
            hits.append(s)
        return hit

    body, contractions = extract_matmuls(f, grouped=True, first=first)
    return (body, contractions) if hits else None


def _may_match(body: sp.Expr) -> bool:
    """The pattern's necessary condition, cheap to test before the contraction search runs again:
    a read whose index is an expression (p - i, not i) of a variable some Sum binds."""
    summed = {lim[0] for s in body.atoms(sp.Sum) for lim in s.limits}
    return bool(summed) and any(not isinstance(e, sp.Symbol) and e.free_symbols & summed
                                for r in body.atoms(sp.Indexed) for e in r.indices)


def _match(s: sp.Sum, f: Formula, order: list, taken: set):
    """A function of the temporaries' names giving (GroupedContraction, the expression replacing
    `s`), when `s` is Σ coeff·A[...]·B[...] with summed indices both read plainly over whole axes
    (the GEMM's) and others that one operand reads plainly and the other through an expression;
    else None."""
    limits, summand = _nest(s)
    sums = [var for var, _, _ in limits]
    if len(set(sums)) != len(sums) or set(sums) & set(order) or s.free_symbols & f.all_indices - set(order):
        return None  # an index an outer Sum binds: not this Sum's contraction
    known = set(sums) | set(f.ranges)
    coeff, reads = [], []
    for a in sp.Mul.make_args(summand):
        (reads if a.free_symbols & known else coeff).append(a)
    if len(reads) != 2 or not all(isinstance(r, sp.Indexed) and not r.base.is_integer for r in reads):
        return None
    if any(a.free_symbols & f.all_indices for a in coeff):
        return None
    bounds = set().union(*(lo.free_symbols | hi.free_symbols for _, lo, hi in limits))
    gemm = [var for var, lo, hi in limits
            if var not in bounds and all(_whole_axis(r, var, lo, hi, f) is not None for r in reads)]
    rest = [lim for lim in limits if lim[0] not in gemm]
    if not gemm or not any(_transposed(reads, var) for var, _, _ in rest):
        return None
    lengths = [_lengths(r, gemm, f) for r in reads]
    if any(n is None for n in lengths):
        return None
    # the operand of the earliest output index gives Z's leading axes (the loops' memory order)
    first_use = [min((order.index(i) for i in r.free_symbols & set(order)), default=len(order)) for r in reads]
    (a, a_len, _), (b, b_len, _) = sorted(zip(reads, lengths, first_use, strict=True), key=lambda p: p[2])
    gemm_axes = tuple(i for i in a.indices if i in gemm)  # a's memory order: its view needs no copy

    def build(temps):
        name = next(temps)
        a_axes, rows, a_at = _axes(a, gemm, taken)
        b_axes, cols, b_at = _axes(b, gemm, taken)
        shape = tuple(a_len) + tuple(b_len)
        k = sp.Mul(*[hi - lo + 1 for var, lo, hi in limits if var in gemm])
        c = GroupedContraction(name, str(a.base.label), a_axes, str(b.base.label), b_axes, rows, cols, gemm_axes,
                               shape, (sp.Mul(*a_len), sp.Mul(*b_len), k), (), sp.Ge(k, MIN_REUSE))
        value = sp.Mul(*coeff) * sp.IndexedBase(name, real=True)[a_at + b_at]
        for var, lo, hi in reversed(rest):  # one Sum per limit: an inner bound may name an outer index
            value = Sum(value, (var, lo, hi))
        return c, value

    return build


def _nest(s: sp.Sum) -> tuple[list, sp.Expr]:
    """The limits of nested Sums, outermost first (within one Sum the first limit is the outer
    loop, as loops.emit runs it), and the innermost summand."""
    limits: list = []
    while isinstance(s, sp.Sum):
        limits += s.limits
        s = s.function
    return limits, s


def _whole_axis(read: sp.Indexed, var, lo, hi, f: Formula):
    """The axis of `read` that is `var` itself when var runs over all of it and appears nowhere else
    in the read, else None."""
    hits = [n for n, e in enumerate(read.indices) if var in e.free_symbols]
    if len(hits) != 1 or read.indices[hits[0]] != var or lo != 0:
        return None
    lengths = f.shape_rules.get((str(read.base.label), hits[0]), [])
    if not lengths or any(sp.expand(n - hi - 1) != 0 for n in lengths):
        return None
    return hits[0]


def _transposed(reads, var) -> bool:
    """Whether one read has `var` as a whole index and the other only inside an expression."""
    plain = [var in r.indices for r in reads]
    inside = [any(var in e.free_symbols and e != var for e in r.indices) for r in reads]
    return any(p and o for p, o in zip(plain, reversed(inside), strict=True))


def _lengths(read: sp.Indexed, gemm: list, f: Formula):
    """The lengths of the read's axes that are not GEMM-summed (Z keeps them whole), or None
    where the tensor's length is not known from its shape rules."""
    out = []
    for n, e in enumerate(read.indices):
        if e in gemm:
            continue
        lengths = f.shape_rules.get((str(read.base.label), n), [])
        if not lengths:
            return None
        out.append(lengths[0])
    return out


def _axes(read: sp.Indexed, gemm: list, taken: set) -> tuple[tuple, tuple, tuple]:
    """(the read's axes as index symbols: a GEMM index, or a fresh one per kept axis; the kept
    axes' symbols; the read's index expressions on the kept axes, where the loops read Z)."""
    axes, kept, at = [], [], []
    for e in read.indices:
        if e in gemm:
            axes.append(e)
            continue
        name = next(n for n in (f"z{k}" for k in itertools.count()) if n not in taken)
        taken.add(name)
        axis = sp.Symbol(name, integer=True)
        axes.append(axis)
        kept.append(axis)
        at.append(e)
    return tuple(axes), tuple(kept), tuple(at)
