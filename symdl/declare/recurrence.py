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


@dataclass(frozen=True)
class Recurrence:
    """The output axis that runs step by step, and its direction: +1 when the formula reads
    earlier steps (t - 1, t - 2, ...: t ascends), -1 when it reads later ones (t descends)."""

    axis: int
    direction: int
    offsets: tuple  # the distinct read offsets along the axis, e.g. (-1,)


def _self_reads(out_name: str, body) -> list:
    return sorted({r for r in body.atoms(sp.Indexed) if str(r.base.label) == out_name}, key=sp.srepr)


def _offsets(name, read, indices) -> dict:
    """{axis: constant offset} where the read's index differs from the output's by a constant."""
    if len(read.indices) != len(indices):
        raise FormulaError(name, f"{read} reads the output with rank {len(read.indices)}, it has rank "
                                 f"{len(indices)}")
    out = {}
    for a, (pos, i) in enumerate(zip(read.indices, indices, strict=True)):
        d = sp.expand(pos - i)
        if d != 0 and d.is_Integer:
            out[a] = int(d)
    return out


def recurrence(name: str, out_name: str, indices: tuple, body) -> Recurrence | None:
    """The formula's Recurrence, None when it does not read its output; FormulaError when it reads
    its output in a way no step order can compute (the same step, or two axes, or both ways)."""
    reads = _self_reads(out_name, body)
    if not reads:
        return None
    axes, offsets = set(), set()
    for r in reads:
        off = _offsets(name, r, indices)
        if len(off) != 1:
            raise FormulaError(name, f"the output {out_name} is also read ({r}): a formula may read its "
                                     f"own output only at an earlier step of one axis (h[t - 1, ...]), "
                                     f"a recurrence; otherwise use a Program")
        (a, d), = off.items()
        axes.add(a)
        offsets.add(d)
    if len(axes) != 1 or len({d > 0 for d in offsets}) != 1:
        raise FormulaError(name, f"the output {out_name} is read along several axes or in both directions "
                                 f"({', '.join(map(str, reads))}); a recurrence steps along one axis, one way")
    axis = axes.pop()
    for r in _unguarded(body, out_name, indices[axis], False):
        raise FormulaError(name, f"{r} reads before the first step of {indices[axis]}: give the "
                                     f"initial state (initial={{{out_name!r}: h0}}) or guard the read "
                                     f"with a Piecewise on {indices[axis]}")
    return Recurrence(axis, -1 if min(offsets) > 0 else 1, tuple(sorted(offsets)))


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
    state stands for every step before the first."""
    if set(initial) != {out_name}:
        raise FormulaError(name, f"initial= must map the output {out_name!r} to its initial state, got "
                                 f"keys {sorted(map(str, initial))}")
    h0 = initial[out_name]
    if isinstance(h0, sp.Indexed):  # h0[b]: the reads' own indices say where it is read
        raise FormulaError(name, f"initial={{{out_name!r}: {h0}}} gives an indexed read; pass the tensor "
                                 f"itself, initial={{{out_name!r}: {h0.base}}} (the sympy.IndexedBase)")
    if not isinstance(h0, (sp.IndexedBase, sp.Symbol, str)):
        raise FormulaError(name, f"initial={{{out_name!r}: ...}} must be a sympy.IndexedBase (or its "
                                 f"name), got {h0!r} ({type(h0).__name__})")
    h0 = h0 if isinstance(h0, sp.IndexedBase) else sp.IndexedBase(str(h0))
    swap = {}
    for r in _self_reads(out_name, body):
        off = _offsets(name, r, indices)
        if len(off) != 1 or next(iter(off.values())) >= 0:
            continue  # recurrence() words the error
        (a, d), = off.items()
        rest = tuple(p for b, p in enumerate(r.indices) if b != a)
        start = h0[rest] if rest else sp.Symbol(str(h0.label), real=True)
        swap[r] = sp.Piecewise((start, sp.Lt(indices[a], -d)), (r, True))
    if not swap:
        raise FormulaError(name, f"initial= is given but the formula reads no earlier step of {out_name}")
    return body.xreplace(swap)
