"""Reverse mode through a recurrence (backpropagation through time), from the per-formula VJP.

A recurrence h[t] = f(h[t-1], inputs) is differentiated as its cell: the same body with the
earlier steps read from a stand-in tensor `h__prev` (h__prev[t] holds h[t-1]), an ordinary
formula. Its VJPs give

* the adjoint recurrence, run backwards: gbar[t] = grad_h[t] + grad_h__prev[t+1] (with grad_h
  in the cell's VJP replaced by gbar): one formula that reads its own later step;
* every input's gradient: the cell's VJP for that input, reading gbar in place of grad_h.

The stand-in reads are mapped back onto h (h__prev[t] -> h[t-1]), so the gradient formulas read
the forward output and nothing is materialised twice.
"""
from __future__ import annotations

import sympy as sp

from ..declare.formula import Formula
from ..declare.program import Program
from ..errors import FormulaError


def prev_name(f: Formula, offset: int) -> str:
    return f"{f.output.name}__prev{-offset}" if offset < 0 else f"{f.output.name}__next{offset}"


def adjoint_name(f: Formula) -> str:
    from .vjp import grad_name
    return f"{grad_name(f.output.name)}__bptt"


def _shift(index: tuple, axis: int, by) -> tuple:
    return tuple(p + by if a == axis else p for a, p in enumerate(index))


_CELLS: dict = {}  # formula.key() -> its cell


def cell(f: Formula) -> Formula:
    """The recurrence with each earlier step read from a stand-in input (h[t-1] -> h__prev1[t]);
    built once per formula (by key), so the adjoint and every input's gradient share its VJPs."""
    from .vjp import remember
    c = _CELLS.get(f.key()) or _cell(f)
    remember(_CELLS, f.key(), c)
    return c


def _cell(f: Formula) -> Formula:
    rec, out = f.recurrence, f.output.name
    swap = {}
    for r in f.body.atoms(sp.Indexed):
        if str(r.base.label) == out:
            off = sp.expand(r.indices[rec.axis] - f.indices[rec.axis])
            base = sp.IndexedBase(prev_name(f, int(off)), real=True)
            swap[r] = base[_shift(r.indices, rec.axis, -off)]
    shapes = {t.name: t.shape for t in f.inputs if t.rank}
    shapes.update({prev_name(f, d): f.output.shape for d in rec.offsets})
    return Formula.from_parts(f"{f.name}.cell", out, f.indices, f.ranges, f.body.xreplace(swap), shapes,
                              {t.name for t in f.inputs if t.integer}, f.domains, f.sizes)


def _restore(body, f: Formula, reads_of_grad: str):
    """Stand-in reads back onto the output (h__prev1[t'] -> h[t' - 1]); grad_h -> the adjoint."""
    from .vjp import grad_name
    rec = f.recurrence
    prev = {prev_name(f, d): d for d in rec.offsets}
    out_base = sp.IndexedBase(f.output.name, real=True)
    target = sp.IndexedBase(reads_of_grad, real=True)
    swap = {}
    for r in body.atoms(sp.Indexed):
        name = str(r.base.label)
        if name in prev:
            swap[r] = out_base[_shift(r.indices, rec.axis, prev[name])]
        elif name == grad_name(f.output.name):
            swap[r] = target[r.indices]
    return body.xreplace(swap)


def adjoint(f: Formula) -> Formula:
    """gbar[t] = grad_h[t] + Σ_d grad_h__prev_d[t - d]: the total gradient of every step of h,
    a recurrence running the other way."""
    from .vjp import grad_name, vjp
    rec, c = f.recurrence, cell(f)
    gbar = adjoint_name(f)
    parts = vjp(c, [prev_name(f, d) for d in rec.offsets], reuse_output=True)
    first = parts[prev_name(f, rec.offsets[0])]
    indices, ranges = first.indices, first.ranges
    t, (lo, hi) = indices[rec.axis], ranges[indices[rec.axis]]
    total = sp.IndexedBase(grad_name(f.output.name), real=True)[indices]
    for d in rec.offsets:
        g = parts[prev_name(f, d)]
        if g.body == 0:
            continue
        body = g.body.xreplace(dict(zip(g.indices, indices, strict=True)))
        later = t - d  # the step whose stand-in read h[t]
        body = _restore(body.xreplace({t: later}), f, gbar)
        total += sp.Piecewise((body, sp.And(sp.Ge(later, lo), sp.Le(later, hi))), (0, True))
    shapes = {n.name: n.shape for n in c.inputs if n.rank and not n.name.startswith(f"{f.output.name}__")}
    shapes[f.output.name] = f.output.shape
    shapes[grad_name(f.output.name)] = f.output.shape
    return Formula.from_parts(f"{f.name}.bptt", gbar, indices, ranges, total, shapes,
                              {n.name for n in c.inputs if n.integer},
                              dict(f.domains, **{grad_name(f.output.name): (-1.0, 1.0)}), f.sizes)


def input_vjp(f: Formula, name: str) -> Formula:
    """grad_<name> from the cell's VJP, reading the adjoint (grad_h__bptt) in place of grad_h."""
    from .vjp import vjp
    if name.startswith(f"{f.output.name}__"):
        raise FormulaError(f.name, f"{name} is internal to the recurrence")
    c = cell(f)
    g = vjp(c, [name], reuse_output=True)[name]
    body = _restore(g.body, f, adjoint_name(f))
    shapes = {n.name: n.shape for n in c.inputs if n.rank and not n.name.startswith(f"{f.output.name}__")}
    shapes[f.output.name] = f.output.shape
    shapes[adjoint_name(f)] = f.output.shape
    return Formula.from_parts(f"{f.name}.vjp.{name}", g.output.name, g.indices, g.ranges, body, shapes,
                              {n.name for n in c.inputs if n.integer},
                              dict(g.domains, **{adjoint_name(f): (-1.0, 1.0)}), f.sizes)


def recurrence_vjp(f: Formula, names) -> dict:
    """{input: Program([adjoint, gradient])}: what Formula.vjp gives for a recurrence."""
    a = adjoint(f)
    return {n: Program([a, input_vjp(f, n)], name=f"{f.name}.vjp.{n}", outputs=[f"grad_{n}"])
            for n in names}
