"""Contraction detection: a Sum that is a product of two tensors becomes a GEMM.

BLAS beats every generated loop nest for every matrix-product shape measured, so
`Sum(A[u, k] * B[k, v], k)` (either operand transposed, times index-free factors) is replaced by
a read of a temporary `T[u, v]` that a library call fills before the loops run (`Contraction`,
a 2-D matrix product every backend serves).

`grouped=True` (the cpu's choice, loops.lower) also takes contractions of any rank
(`GroupedContraction`): a Sum over one or several indices (nested Sums over constant bounds are
one) of a product whose factors split into two operands, A using the row indices (output indices
only A uses), B the column indices, both the summed ones. An operand that is one read over whole
axes is used as it is (a reshaped view, or one copy); any other (an affine read such as a
convolution's x[b, i + m, j + n, c], a guarded read, a product of reads, a slice) is first
gathered into a contiguous temporary over its box of indices (im2col), guards giving zeros. A
sum whose bounds name output indices (a convolution's input gradient) is first rebased onto a
read's constant-length axis (`_rebase`), its bounds becoming a guard. A gather pays only where
the GEMM reuses it enough (`MIN_REUSE`); loops.lower branches on that per call, and on whether
col2im.py's GEMM without a gather (a transposed convolution's) needs a smaller temporary.

Output indices that both operands use (attention's batch and head in q·kᵀ and in A·v) make a
batched contraction: one GEMM per batch element, `batch` leading the temporary's axes. Its
operands must be plain reads over whole axes (no gather), and it runs where each product has at
least BATCHED_MIN_WORK multiply-adds (below that the loops win).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import REDUCTIONS


@dataclass(frozen=True)
class Contraction:
    temp: str
    a: str
    b: str
    trans_a: bool
    trans_b: bool
    shape: tuple  # (rows, cols)


@dataclass(frozen=True)
class Gather:
    """temp[axes - lows] = value over the box of `axes` (im2col): an operand made contiguous."""

    temp: str
    axes: tuple  # index symbols, one per axis of temp
    lows: tuple  # each axis's first index (temp's axis starts at 0)
    shape: tuple
    value: sp.Expr


@dataclass(frozen=True)
class GroupedContraction:
    """temp[rows..., cols...] = Σ_sums a · b, a's axes named by `a_axes`, b's by `b_axes` (each an
    index symbol), one GEMM of (Π rows, Π sums) by (Π sums, Π cols) after `gathers` have run."""

    temp: str
    a: str
    a_axes: tuple
    b: str
    b_axes: tuple
    rows: tuple
    cols: tuple
    sums: tuple
    shape: tuple  # temp's shape: the row then the column lengths
    sizes: tuple  # (Π rows, Π cols, Π sums): a GEMM's m, n, k, for trip counts
    gathers: tuple
    pays: sp.Basic  # a condition on dimensions: where it is false the loops are faster
    batch: tuple = ()  # output indices both operands read: one GEMM per batch element (leading axes)


# A gathered operand is written once and read by the GEMM once per column of the other operand
# (its reuse). E1's convolutions on one core (ms, loops -> gather + GEMM): forward with 32 output
# channels 27 -> 14 and its kernel gradient 24 -> 12, the input gradient into 32 channels 79 -> 50;
# the input gradient into 3 channels (reuse 3: a 151 MB gather) 20 -> 69. Gathers need this reuse:
MIN_REUSE = 16
# One batched product's multiply-adds below which its loops beat a BLAS call per batch element
# (the call costs about as much as a 16x16x16 product's arithmetic).
BATCHED_MIN_WORK = 4096


def extract_matmuls(f: Formula, grouped: bool = False, unless_reading: str | None = None,
                    first=None) -> tuple[sp.Expr, list]:
    """Return the body with contraction Sums replaced by temporaries, and the contractions; a Sum
    that reads the tensor `unless_reading` (a recurrence's own output) stays. `first(sum, order)`,
    a matcher tried before the others (col2im.py), returns what `_match` does, or None."""
    found: dict = {}
    order = list(f.indices)
    # temporaries T0, T1, ... skip every name the formula uses (a user tensor T0 stays itself)
    temps = (n for n in (f"T{k}" for k in itertools.count()) if n not in f.used_names)

    def visit(expr, guarded):
        if isinstance(expr, sp.Sum):
            if unless_reading and any(str(r.base.label) == unless_reading for r in expr.atoms(sp.Indexed)):
                return expr
            hit = first(expr, order) if first is not None else None
            hit = hit or _match(expr, f, order)
            if hit is None and grouped:
                # under a guard a gather could read where the formula does not: plain views only
                hit = _match_grouped(expr, f, order, gathers=not guarded)
            if hit is not None:
                key = expr
                if key not in found:
                    found[key] = hit(temps)
                return found[key][1]
            return expr
        if not expr.args or isinstance(expr, sp.Indexed):
            return expr
        if isinstance(expr, sp.Piecewise):  # the first branch always runs, the others are guarded
            return sp.Piecewise(*[(visit(e, guarded or n > 0), c) for n, (e, c) in enumerate(expr.args)])
        return expr.func(*[visit(a, guarded) for a in expr.args])

    body = visit(f.body, False)
    return body, [c[0] for c in found.values()]


def _match(s: sp.Sum, f: Formula, order):
    """A function of the temporaries' names giving (the contraction `s` is, the read of its
    temporary replacing `s`), or None. A GEMM sums over whole axes: the Sum must run from 0 to the
    length of both operands' k axes minus 1 (a Sum over (k, 0, N - 2) of an N-long axis is not a
    matrix product of the tensors as given)."""
    if len(s.limits) != 1:
        return None
    k, lo, hi = s.limits[0]
    if lo != 0 or hi.free_symbols & f.all_indices:
        return None
    reads = [a for a in sp.Mul.make_args(s.function) if isinstance(a, sp.Indexed)]
    rest = [a for a in sp.Mul.make_args(s.function) if not isinstance(a, sp.Indexed)]
    if len(reads) != 2 or any(r.free_symbols & f.all_indices for r in rest):
        return None
    ops = []
    for r in reads:
        if r.base.is_integer or len(r.indices) != 2 or list(r.indices).count(k) != 1:
            return None
        other = r.indices[1] if r.indices[0] == k else r.indices[0]
        if other not in f.ranges:
            return None
        ops.append((r, other, r.indices[0] == k))
    for r, other, k_first in ops:  # the Sum must run over the whole k axis of both operands, and
        # the other index over the whole other axis (w[k, j] of a packed (K, 4H) w is a slice)
        whole = {0 if k_first else 1: hi + 1, 1 if k_first else 0: f.ranges[other][1] + 1}
        for axis, want in whole.items():
            lengths = f.shape_rules.get((str(r.base.label), axis), [])
            if not lengths or any(sp.expand(n - want) != 0 for n in lengths):
                return None
    (ra, u, ta), (rb, v, tb_first) = sorted(ops, key=lambda o: order.index(o[1]))
    if u == v:
        return None
    # op(a) must be (u, k): a transposed when k comes first; op(b) must be (k, v): transposed when k is last
    trans_b = not tb_first
    shape = (f.ranges[u][1] + 1, f.ranges[v][1] + 1)
    coeff = sp.Mul(*rest)

    def build(temps):
        c = Contraction(next(temps), str(ra.base.label), str(rb.base.label), ta, trans_b, shape)
        return c, coeff * sp.IndexedBase(c.temp, real=True)[u, v]

    return build


def _flatten(s: sp.Sum, f: Formula):
    """(summand, limits) of nested Sums (Σ_b Σ_t e is one Sum over (t, b)), each with bounds that
    name no index (`_rebase` makes them so), or None."""
    limits = []
    while isinstance(s, sp.Sum):
        limits += list(s.limits)
        s = s.function
    for n, (var, lo, hi) in enumerate(limits):
        if (lo.free_symbols | hi.free_symbols) & f.all_indices:
            rebased = _rebase(s, limits[n:], f)
            if rebased is None:
                return None
            s, limits = rebased[0], limits[:n] + rebased[1]
            break
    return s, limits


def _rebase(summand, limits, f: Formula):
    """A convolution's input gradient sums over output positions i in [max(0, p - 2), min(p, H - 3)]
    of g[b, i, j, o]·kernel[p - i, q - j, c, o]: summed instead over the kernel's axis (m = p - i
    in [0, 3)) with the bounds as a guard, it is a convolution of g (a transposed convolution),
    whose patches gather. Each limit is rebased onto a read's axis of constant length where the
    index appears with coefficient ±1 (the shortest such axis): (summand, limits) or None."""
    guards, out, taken, subs = [], [], set(f.used_names), {}
    for var, lo, hi in limits:
        lo, hi = lo.xreplace(subs), hi.xreplace(subs)  # an inner bound may name a rebased index
        if not (lo.free_symbols | hi.free_symbols) & f.all_indices:
            out.append((var, lo, hi))
            continue
        axis = _constant_axis(summand, var, f)
        if axis is None:
            return None
        e, coeff, length = axis
        name = next(n for n in (f"{var}_{k}" for k in itertools.count()) if n not in taken)
        taken.add(name)
        m = sp.Symbol(name, integer=True)
        old = sp.expand((m - (e - coeff * var)) / coeff)  # var as a function of the new index
        summand, subs[var] = summand.xreplace({var: old}), old
        guards += [c for c in _bound(lo, old, hi) if not _always(c, m, length)]
        out.append((m, sp.Integer(0), sp.Integer(length - 1)))
    if any((lo.free_symbols | hi.free_symbols) & f.all_indices for _, lo, hi in out):
        return None
    if guards:
        summand = sp.Piecewise((summand, sp.And(*guards)), (0, True))
    return summand, out


def _constant_axis(summand, var, f: Formula):
    """(index expression, coefficient of var, axis length) for the shortest constant-length axis
    of an unguarded read whose index is var times ±1 plus terms free of var, var in no other axis;
    or None."""
    best = None
    for read in _unguarded_reads(summand):
        hits = [a for a, e in enumerate(read.indices) if var in e.free_symbols]
        if len(hits) != 1 or read.base.is_integer:
            continue
        e = read.indices[hits[0]]
        lengths = set(f.shape_rules.get((str(read.base.label), hits[0]), []))
        coeff = sp.expand(e).coeff(var)
        length = lengths.pop() if len(lengths) == 1 else None
        if coeff in (1, -1) and not sp.expand(e - coeff * var).has(var) and isinstance(length, sp.Integer) and (
                best is None or length < best[2]):
            best = (e, coeff, int(length))
    return best


def _unguarded_reads(e) -> set:
    """The reads of `e` outside any Piecewise: the binding checks them over the whole range (a
    guarded one may lie outside, its terms then taking the other branch, which a rebase would drop)."""
    if isinstance(e, sp.Indexed):
        return {e}
    if isinstance(e, sp.Piecewise):
        return set()
    return set().union(*(_unguarded_reads(a) for a in e.args)) if e.args else set()


def _bound(lo, value, hi) -> list:
    """lo <= value <= hi as conditions, a Max lower bound or a Min upper bound split into its terms."""
    lows = lo.args if isinstance(lo, sp.Max) else (lo,)
    highs = hi.args if isinstance(hi, sp.Min) else (hi,)
    return [sp.Le(a, value) for a in lows] + [sp.Le(value, b) for b in highs]


def _always(cond, m, length: int) -> bool:
    """Whether a condition linear in m alone holds over m's whole range [0, length)."""
    if cond is sp.true:
        return True
    if not isinstance(cond, sp.Le):
        return False
    d = sp.expand(cond.rhs - cond.lhs)
    if not d.free_symbols <= {m} or not d.is_polynomial(m) or sp.degree(d, m) > 1:
        return False
    return all(d.xreplace({m: v}) >= 0 for v in (0, length - 1))


def _match_grouped(s: sp.Sum, f: Formula, order, gathers: bool):
    """The grouped contraction `s` is, or None (see the module docstring)."""
    flat = _flatten(s, f)
    if flat is None:
        return None
    summand, limits = flat
    sums = tuple(var for var, _, _ in limits)
    ranges = {**{i: f.ranges[i] for i in order}, **{var: (lo, hi) for var, lo, hi in limits}}
    if len(set(sums)) != len(sums) or set(sums) & set(order):
        return None
    coeff, factors = [], []
    for a in _guard_inside(summand, set(ranges)):
        (factors if a.free_symbols & set(ranges) else coeff).append(a)
    if any(a.free_symbols & f.all_indices - set(ranges) for a in (*coeff, *factors)):
        return None  # an index bound elsewhere (an outer Sum's): not a contraction of this Sum
    if any(a.has(*REDUCTIONS) or not _real(a) for a in factors):
        return None
    outputs = set(order)
    groups = _operands([(a.free_symbols & outputs, a) for a in factors if a.free_symbols & outputs], order)
    if len(groups) != 2:  # a matrix-vector product (memory-bound: loops do as well), or a batch index on both sides
        return _match_batched(factors, coeff, sums, order, ranges, f)
    (row_set, a_factors), (col_set, b_factors) = groups
    loose = [x for x in factors if not x.free_symbols & outputs]  # only summed indices: either side
    rows = tuple(i for i in order if i in row_set)
    cols = tuple(i for i in order if i in col_set)
    a_value = sp.Mul(*a_factors)
    b_value = sp.Mul(*b_factors)
    if loose:
        if _plain(b_value) is not None and _plain(a_value) is None:
            a_value = a_value * sp.Mul(*loose)
        else:
            b_value = b_value * sp.Mul(*loose)
    used_a, used_b = a_value.free_symbols & set(sums), b_value.free_symbols & set(sums)
    if used_a != set(sums) or used_b != set(sums):
        return None  # a sum only one side uses is a row sum, not a contraction
    plain_a, plain_b = _whole(a_value, rows + sums, ranges, f), _whole(b_value, cols + sums, ranges, f)
    if not gathers and (plain_a is None or plain_b is None):
        return None
    # the summed axes in the order of a plain operand's memory (its view needs no copy)
    sums = tuple(i for i in (plain_a or plain_b or (None, sums))[1] if i in sums)

    def build(temps):
        name = next(temps)
        made = []

        def operand(value, plain, own):
            if plain is not None:
                return plain
            axes = _gather_order(value, own, sums)
            box = tuple(ranges[i] for i in axes)
            g = Gather(next(temps), axes, tuple(lo for lo, _ in box), tuple(hi - lo + 1 for lo, hi in box), value)
            made.append(g)
            return g.temp, axes

        a, a_axes = operand(a_value, plain_a, rows)
        b, b_axes = operand(b_value, plain_b, cols)
        size = {i: ranges[i][1] - ranges[i][0] + 1 for i in ranges}
        m, n, k = (sp.Mul(*[size[i] for i in g]) for g in (rows, cols, sums))
        reuse = [n] * (plain_a is None) + [m] * (plain_b is None)
        pays = sp.And(*[sp.Ge(r, MIN_REUSE) for r in reuse])
        c = GroupedContraction(name, a, a_axes, b, b_axes, rows, cols, sums,
                               tuple(size[i] for i in rows + cols), (m, n, k), tuple(made), pays)
        return c, sp.Mul(*coeff) * sp.IndexedBase(name, real=True)[rows + cols]

    return build


def _operands(pairs: list, order) -> list:
    """[index set, factors] per operand, from (output indices, factor) pairs: factors sharing an
    index are one operand; ordered by their first index in the output's order."""
    groups: list = []
    for used, a in pairs:
        joined = [g for g in groups if g[0] & used]
        groups = [g for g in groups if not g[0] & used]
        groups.append([used.union(*(g[0] for g in joined)), [a] + [x for g in joined for x in g[1]]])
    return sorted(groups, key=lambda g: min(order.index(i) for i in g[0]))


def _match_batched(factors: list, coeff: list, sums: tuple, order, ranges: dict, f: Formula):
    """A batched contraction (see the module docstring) of the summand's `factors`, or None: the
    output indices every factor reads are the batch; the rest must split the factors into two
    operands, each one plain read over whole axes using every summed index."""
    outputs = set(order)
    used = [a.free_symbols & outputs for a in factors]
    batch_set = set.intersection(*used) if used else set()
    if not batch_set or any(not u - batch_set for u in used):
        return None
    groups = _operands([(u - batch_set, a) for a, u in zip(factors, used, strict=True)], order)
    if len(groups) != 2 or any(len(g[1]) != 1 for g in groups):
        return None
    (row_set, (a_value,)), (col_set, (b_value,)) = groups
    batch = tuple(i for i in order if i in batch_set)
    rows = tuple(i for i in order if i in row_set)
    cols = tuple(i for i in order if i in col_set)
    plain_a, plain_b = _whole(a_value, batch + rows + sums, ranges, f), _whole(b_value, batch + cols + sums, ranges, f)
    if plain_a is None or plain_b is None:
        return None
    sums = tuple(i for i in plain_a[1] if i in sums)  # a's memory order: its view needs no copy

    def build(temps):
        name = next(temps)
        size = {i: ranges[i][1] - ranges[i][0] + 1 for i in ranges}
        count, m, n, k = (sp.Mul(*[size[i] for i in g]) for g in (batch, rows, cols, sums))
        c = GroupedContraction(name, plain_a[0], plain_a[1], plain_b[0], plain_b[1], rows, cols, sums,
                               tuple(size[i] for i in batch + rows + cols), (count * m, n, k), (),
                               sp.Ge(m * n * k, BATCHED_MIN_WORK), batch)
        return c, sp.Mul(*coeff) * sp.IndexedBase(name, real=True)[batch + rows + cols]

    return build


def _guard_inside(summand, indices: set) -> tuple:
    """The summand's factors, a guard around the whole product (a rebased sum's bounds) moved onto
    the factor that uses every index the guard names: that factor's gather holds the zeros."""
    if not (isinstance(summand, sp.Piecewise) and len(summand.args) == 2 and summand.args[1] == (0, True)):
        return sp.Mul.make_args(summand)
    (value, cond), _ = summand.args
    factors = list(sp.Mul.make_args(value))
    needs = cond.free_symbols & indices
    for n, a in enumerate(factors):
        if needs <= a.free_symbols:
            factors[n] = sp.Piecewise((a, cond), (0, True))
            return tuple(factors)
    return (summand,)  # no factor holds the guard: one factor, not a contraction


def _gather_order(value, own: tuple, sums: tuple) -> tuple:
    """A gather's axes: its own (row or column) indices then the summed ones, or the summed ones
    first where the reads it copies put them first (a convolution's weight gradient sums over b, i,
    j, the leading axes of x[b, i + m, j + n, c]): the gather then reads memory in order, and
    either way each group is contiguous, so the GEMM takes it as a view."""
    position: dict = {}
    for read in value.atoms(sp.Indexed):
        for axis, e in enumerate(read.indices):
            for i in e.free_symbols:
                position[i] = min(position.get(i, axis), axis)

    def mean(group):
        return sum(position.get(i, 0) for i in group) / len(group)

    return sums + own if mean(sums) < mean(own) else own + sums


def _real(e) -> bool:
    """An integer tensor is not an operand (an index array is read by a gather's loops)."""
    return not (isinstance(e, sp.Indexed) and e.base.is_integer)


def _plain(value):
    """(tensor, axes) when `value` is one read with distinct plain indices, else None."""
    if not isinstance(value, sp.Indexed) or value.base.is_integer:
        return None
    axes = tuple(value.indices)
    if not all(isinstance(i, sp.Symbol) for i in axes) or len(set(axes)) != len(axes):
        return None
    return str(value.base.label), axes


def _whole(value, axes, ranges, f: Formula):
    """(tensor, axes) when `value` is a plain read of every index in `axes`, each over its
    tensor's whole axis (then no gather is needed), else None."""
    plain = _plain(value)
    if plain is None or set(plain[1]) != set(axes):
        return None
    name, order = plain
    for axis, i in enumerate(order):
        lo, hi = ranges[i]
        lengths = f.shape_rules.get((name, axis), [])
        if lo != 0 or not lengths or any(sp.expand(n - hi - 1) != 0 for n in lengths):
            return None
    return plain
