"""Recurrences: a formula that reads its own output at an earlier step of one axis.

    h[t, b, j] = tanh(Σ_k x[t, b, k] W[k, j] + Σ_l h[t-1, b, l] R[l, j] + c[j])

declared with `initial={"h": h0}` reads h0[b, l] where t - 1 falls before the start. The axis
(t) runs in order, one step after another, inside one kernel; the other axes of a step run as
usual. Reads at t + 1 instead make a reverse recurrence (backpropagation through time is one).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import FormulaError
from .reads import walk_reads


@dataclass(frozen=True)
class Recurrence:
    """The output axis that runs step by step, and its direction: +1 when the formula reads
    earlier steps (t - 1, t - 2, ...: t ascends), -1 when it reads later ones (t descends)."""

    axis: int
    direction: int
    offsets: tuple  # the distinct read offsets along the axis, e.g. (-1,)


def _self_reads(out_name: str, body) -> list:
    return sorted({r for r in body.atoms(sp.Indexed) if str(r.base.label) == out_name}, key=sp.srepr)


def _differences(name, read, indices) -> list:
    """read position - output index, axis by axis (expanded)."""
    if len(read.indices) != len(indices):
        raise FormulaError(name, f"{read} reads the output with rank {len(read.indices)}, it has rank "
                                 f"{len(indices)}")
    return [sp.expand(pos - i) for pos, i in zip(read.indices, indices, strict=True)]


def _step_axes(name, reads, indices) -> list:
    """The axes along which every self-read is at a constant nonzero offset of one sign: the axes a
    step loop could run along (any other axis may be read at any affine position)."""
    axes = None
    for r in reads:
        found = {a for a, d in enumerate(_differences(name, r, indices)) if d != 0 and d.is_Integer}
        if not found:
            raise FormulaError(name, f"the output is also read at the same step ({r}): a formula may "
                                     f"read its own output only at an earlier step of one axis "
                                     f"(h[t - 1, ...]), a recurrence; otherwise use a Program")
        axes = found if axes is None else axes & found
    return [a for a in sorted(axes or ())
            if len({_differences(name, r, indices)[a] > 0 for r in reads}) == 1]


def step_axis(name: str, out_name: str, indices: tuple, body) -> int | None:
    """The axis the formula's self-reads step along (the first that fits, so h[t-1, i-1] steps
    along t), None when it does not read its output."""
    reads = _self_reads(out_name, body)
    if not reads:
        return None
    axes = _step_axes(name, reads, indices)
    if not axes:
        raise FormulaError(name, f"the output {out_name} is read along several axes or in both directions "
                                 f"({', '.join(map(str, reads))}); a recurrence steps along one axis, one way "
                                 f"(every read at a constant offset t - d of one axis, d > 0)")
    return axes[0]


def recurrence(name: str, out_name: str, indices: tuple, body) -> Recurrence | None:
    """The formula's Recurrence, None when it does not read its output; FormulaError when it reads
    its output in a way no step order can compute (the same step, or both ways). Reads of an
    earlier step may sit at any affine position on the other axes (Y[t - 1, i - 1])."""
    axis = step_axis(name, out_name, indices, body)
    if axis is None:
        return None
    offsets = {int(_differences(name, r, indices)[axis]) for r in _self_reads(out_name, body)}
    for r in _unguarded(body, out_name, indices[axis], False):
        raise FormulaError(name, f"{r} reads before the first step of {indices[axis]}: give the "
                                 f"initial state (initial={{{out_name!r}: h0}}) or guard the read "
                                 f"with a Piecewise on {indices[axis]}")
    return Recurrence(axis, -1 if min(offsets) > 0 else 1, tuple(sorted(offsets)))


def pad_neighbour_reads(name: str, out_name: str, indices: tuple, ranges: dict, body):
    """Y[t - 1, i - 1] reads zero where i - 1 falls outside Y (the output is zero-padded along
    the axes a step does not run along): guard each such position by a Piecewise, so the loops,
    the gradient and the reference all see the same padding."""
    axis = step_axis(name, out_name, indices, body)
    if axis is None:
        return body
    swap = {}
    for r, scope, _ in walk_reads(body, dict(ranges)):
        if str(r.base.label) != out_name or r in swap:
            continue
        conds = []
        for a, (pos, d) in enumerate(zip(r.indices, _differences(name, r, indices), strict=True)):
            lo, hi = ranges[indices[a]]
            if a == axis or d == 0 or _within(scope.get(pos), lo, hi):
                continue
            if not (d.is_Integer and d > 0):
                conds.append(sp.Ge(pos, lo))
            if not (d.is_Integer and d < 0):
                conds.append(sp.Le(pos, hi))
        if conds:
            swap[r] = sp.Piecewise((r, sp.And(*conds)), (0, True))
    return body.xreplace(swap)


def _within(span, lo, hi) -> bool:
    """Whether a Sum variable's range (span) lies inside [lo, hi]: Σ_l h[t-1, l] needs no guard."""
    return span is not None and bool(sp.expand(span[0] - lo).is_nonnegative) and bool(
        sp.expand(hi - span[1]).is_nonnegative)


def _unguarded(e, out_name, step, guarded):
    """Self-reads not under a Piecewise that tests the step index (before or at their branch)."""
    if isinstance(e, sp.Indexed):
        if str(e.base.label) == out_name and not guarded:
            yield e
        return
    if isinstance(e, sp.Piecewise):
        for value, cond in e.args:
            guarded = guarded or step in cond.free_symbols
            yield from _unguarded(value, out_name, step, guarded)
        return
    for a in e.args:
        yield from _unguarded(a, out_name, step, guarded)


def with_initial_state(name: str, out_name: str, indices: tuple, body, initial: dict):
    """h[t - d, rest] becomes Piecewise((h0[rest], t < d), (h[t - d, rest], True)): the initial
    state stands for every step before the first. Besides the output, `initial` may name another
    tensor the formula reads at an earlier step (a system of recurrences: c reads h[t - 1]), read
    along the formula's own step index, or else the first output index it is read behind."""
    own = step_axis(name, out_name, indices, body)
    for key, h0 in initial.items():
        key = str(key.label) if isinstance(key, sp.IndexedBase) else str(key)
        h0 = _initial_tensor(name, key, h0)
        swap = {}
        for r in (r for r in body.atoms(sp.Indexed) if str(r.base.label) == key):
            found = _behind(r, indices, [indices[own]] if own is not None else list(indices))
            if found is None:
                continue  # recurrence() words the error for the output; another tensor is read as is
            a, step, d = found
            rest = tuple(p for b, p in enumerate(r.indices) if b != a)
            start = h0[rest] if rest else sp.Symbol(str(h0.label), real=True)
            swap[r] = sp.Piecewise((start, sp.Lt(step, d)), (r, True))
        if not swap:
            raise FormulaError(name, f"initial= names {key!r} but the formula reads no earlier step of "
                                     f"{key} (a read at t - 1 of an output index t)")
        body = body.xreplace(swap)
    return body


def _initial_tensor(name, key, h0):
    if isinstance(h0, sp.Indexed):  # h0[b]: the reads' own indices say where it is read
        raise FormulaError(name, f"initial={{{key!r}: {h0}}} gives an indexed read; pass the tensor "
                                 f"itself, initial={{{key!r}: {h0.base}}} (the sympy.IndexedBase)")
    if not isinstance(h0, (sp.IndexedBase, sp.Symbol, str)):
        raise FormulaError(name, f"initial={{{key!r}: ...}} must be a sympy.IndexedBase (or its "
                                 f"name), got {h0!r} ({type(h0).__name__})")
    return h0 if isinstance(h0, sp.IndexedBase) else sp.IndexedBase(str(h0))


def _behind(read, indices, steps):
    """(axis, step index, d) for the first step index t among `steps` that the read sits d > 0
    steps behind (position t - d on one axis), else None."""
    for t in steps:
        for a, pos in enumerate(read.indices):
            d = sp.expand(t - pos)
            if d.is_Integer and d > 0:
                return a, t, d
    return None
