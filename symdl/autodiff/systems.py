"""Reverse mode through a system of recurrences (declare/systems.py): the adjoint system.

Each member formula is differentiated as its cell: the same body with the states of earlier steps
read from stand-ins (h[t-1] -> h__prev1[t]). With A_X the total gradient of every step of state X,

    A_X[t] = grad_X[t]                                   (from formulas after the system)
           + Σ_F  d cell_F / d X       reading A_F[t]      (F reads X at the same step: h reads c[t])
           + Σ_F,d d cell_F / d X__prev_d at t + d, A_F[t + d]   (F reads X d steps back)

a system of recurrences running the other way, compiled like the forward one into one kernel; each
input's gradient sums the cells' VJPs reading the A's. Stand-in reads are mapped back onto the
forward states (h__prev1[t] -> h[t - 1]), so the gradients read the saved forward states.
"""
from __future__ import annotations

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import REDUCTIONS, limits_of
from .vjp import grad_name, vjp


def adjoint_name(state: str) -> str:
    return f"{grad_name(state)}__bptt"


def _stand_in(state: str, d: int) -> str:
    return f"{state}__prev{d}" if d > 0 else f"{state}__next{-d}"


class SystemGradient:
    """The adjoint system and the input gradients of one system (`members`: its formulas in step
    order, `system`: the declare.System)."""

    def __init__(self, members, system, name: str):
        self.members, self.system, self.name = list(members), system, name
        self.states = {f.output.name: f for f in self.members}
        self.axis = {o: _step_axis(f, system.step) for o, f in self.states.items()}
        self.stand_ins: dict = {}  # stand-in name -> (state, steps back)
        self.cells = {o: self._cell(f) for o, f in self.states.items()}

    def _delay(self, read, f) -> int:
        """How many steps back (forward system) the read of a state sits; 0 at the same step."""
        t = f.indices[self.axis[f.output.name]]
        d = sp.expand((t - read.indices[self.axis[str(read.base.label)]]) * self.system.direction)
        return int(d) if d.is_Integer and d > 0 else 0

    def _cell(self, f: Formula) -> Formula:
        swap, shapes = {}, {t.name: t.shape for t in f.inputs if t.rank}
        for r in f.body.atoms(sp.Indexed):
            state = str(r.base.label)
            if state in self.states and (d := self._delay(r, f)):
                a, back = self.axis[state], d * self.system.direction
                name = _stand_in(state, d)
                self.stand_ins[name] = (state, d)
                swap[r] = sp.IndexedBase(name, real=True)[tuple(p + back if b == a else p
                                                                for b, p in enumerate(r.indices))]
                shapes[name] = self.states[state].output.shape
        return Formula.from_parts(f"{f.name}.cell", f.output.name, f.indices, f.ranges, f.body.xreplace(swap),
                                  shapes, {t.name for t in f.inputs if t.integer}, f.domains, f.sizes)

    def _restore(self, body):
        """Stand-ins back onto the forward states; every grad_<state> onto its adjoint."""
        seeds = {grad_name(state): adjoint_name(state) for state in self.states}
        swap = {}
        for r in body.atoms(sp.Indexed):
            name = str(r.base.label)
            if name in self.stand_ins:
                state, d = self.stand_ins[name]
                a, back = self.axis[state], d * self.system.direction
                swap[r] = sp.IndexedBase(state, real=True)[tuple(p - back if b == a else p
                                                                 for b, p in enumerate(r.indices))]
            elif name in seeds:
                swap[r] = sp.IndexedBase(seeds[name], real=True)[r.indices]
        return body.xreplace(swap)

    def adjoints(self, upstream: dict) -> list:
        """The adjoint system's formulas, A_X for each state X; `upstream` maps a state to the
        tensor holding its gradient from formulas after the system (absent: none)."""
        out = []
        for x, fx in self.states.items():
            indices, t = fx.indices, fx.indices[self.axis[x]]
            lo, hi = fx.ranges[t]
            total = sp.IndexedBase(upstream[x], real=True)[indices] if x in upstream else sp.Integer(0)
            for cell in self.cells.values():
                wanted = [n for n in cell.input_names if self.stand_ins.get(n, ("",))[0] == x]
                if x in cell.input_names:
                    wanted.append(x)
                for n, g in vjp(cell, wanted, reuse_output=True).items():
                    if g.body == 0:
                        continue
                    body = _onto(g, indices)
                    if n != x:  # the stand-in read d steps back: it is step t + d's contribution
                        later = t + self.stand_ins[n][1] * self.system.direction
                        body = sp.Piecewise((body.xreplace({t: later}), sp.And(sp.Ge(later, lo), sp.Le(later, hi))),
                                            (0, True))
                    total += self._restore(body)
            shapes = {s: self.states[s].output.shape for s in self.states}
            shapes.update({adjoint_name(s): self.states[s].output.shape for s in self.states})
            shapes.update({t.name: t.shape for f in self.members for t in f.inputs if t.rank})
            if x in upstream:
                shapes[upstream[x]] = fx.output.shape
            used = {str(b.label) for b in total.atoms(sp.IndexedBase)}
            domains = {n: (-1.0, 1.0) for n in used if n.startswith("grad_")}
            out.append(Formula.from_parts(f"{self.name}.bptt.{x}", adjoint_name(x), indices, fx.ranges, total,
                                          {n: s for n, s in shapes.items() if n in used}, self._integer(),
                                          dict(self._domains(), **domains), fx.sizes))
        return out[::-1]  # the reverse system writes its states in the reverse order

    def input_gradient(self, x: str) -> Formula | None:
        """grad_x: every member cell's VJP for input x, reading the adjoints; None when none reads x."""
        parts = [vjp(c, [x], reuse_output=True)[x] for c in self.cells.values() if x in c.input_names]
        parts = [g for g in parts if g.body != 0]
        if not parts:
            return None
        first = parts[0]
        body = sum((self._restore(_onto(g, first.indices)) for g in parts), sp.Integer(0))
        used = {str(b.label) for b in body.atoms(sp.IndexedBase)}
        shapes = {s: self.states[s].output.shape for s in self.states}
        shapes.update({adjoint_name(s): self.states[s].output.shape for s in self.states})
        shapes.update({t.name: t.shape for f in self.members for t in f.inputs if t.rank})
        domains = {n: (-1.0, 1.0) for n in used if n.startswith("grad_")}
        return Formula.from_parts(f"{self.name}.vjp.{x}", grad_name(x), first.indices, first.ranges, body,
                                  {n: s for n, s in shapes.items() if n in used}, self._integer(),
                                  dict(self._domains(), **domains), first.sizes)

    def _integer(self) -> set:
        return {t.name for f in self.members for t in f.inputs if t.integer}

    def _domains(self) -> dict:
        out: dict = {}
        for f in self.members:
            out.update(f.domains)
        return out


def _step_axis(f: Formula, step: str) -> int:
    return next(a for a, i in enumerate(f.indices) if i.name == step)


def _onto(g: Formula, indices: tuple):
    """g's body with its free indices renamed to `indices`, its summation indices renamed first
    where they would capture one."""
    targets = {i.name for i in indices}
    names = {s.name for s in g.body.atoms(sp.Symbol)} | targets
    clash = {}
    for r in g.body.atoms(*REDUCTIONS):
        for v, _, _ in limits_of(r):
            if v.name in targets and v not in g.indices and v not in clash:
                k = 2
                while f"{v.name}{k}" in names:
                    k += 1
                names.add(f"{v.name}{k}")
                clash[v] = sp.Symbol(f"{v.name}{k}", integer=True)
    body = g.body.xreplace(clash)
    # a sum of zero (d/dr of a sum that does not read r) would still run its loops, and the
    # full reduction it multiplies with them: drop it
    body = body.replace(lambda e: isinstance(e, REDUCTIONS) and e.function == 0, lambda e: sp.Integer(0))
    return body.xreplace(dict(zip(g.indices, indices, strict=True)))
