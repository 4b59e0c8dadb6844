"""Systems of recurrences: formulas of a Program that read each other's earlier steps.

    c[b, t, j] = f[b, t, j] c[b, t-1, j] + i[b, t, j] g[b, t, j]      (i, f, g read h[b, t-1, :])
    h[b, t, j] = o[b, t, j] tanh(c[b, t, j])

c reads h one step back and h reads c at the same step: a cycle, but one that every step can
break, since step t needs only steps before it. A Program accepts a cycle when every cycle passes
through a *delayed* read (at t - d, d > 0, of one shared step index; t + d for a reverse system)
and orders the formulas so that each reads the same step of another only after it is written.
Each strongly connected group is a `System`, compiled into one kernel running the step loop for
all its states (loops.lower_system); its gradient is the adjoint system (autodiff/systems.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import FormulaError


@dataclass(frozen=True)
class System:
    """Outputs computed together, step by step: `outputs` in the order a step writes them,
    `step` the shared step index (by name), `direction` +1 (reads t - d) or -1 (reads t + d)."""

    outputs: tuple
    step: str
    direction: int


def _reads_of(f, tensor: str) -> list:
    return [r for r in f.body.atoms(sp.Indexed) if str(r.base.label) == tensor]


def delay(f, tensor: str):
    """(step index, direction) when every read of `tensor` in `f` is at a constant offset t - d
    (direction +1) or t + d (-1), d > 0, of one output index t (the formula's own recurrence index
    first, then the first that fits); None when some read is at the same step."""
    reads = _reads_of(f, tensor)
    order = list(f.indices)
    if f.recurrence is not None:
        order.insert(0, order.pop(f.recurrence.axis))
    for t in order:
        signs = set()
        for r in reads:
            found = {sp.expand(pos - t) for pos in r.indices if sp.expand(pos - t).is_Integer}
            found.discard(sp.S.Zero)
            if len(found) != 1:
                break
            signs.add(next(iter(found)) > 0)
        else:
            if reads and len(signs) == 1:
                return t, -1 if signs.pop() else 1
    return None


def schedule(name: str, formulas: list):
    """(formulas in run order, Systems): every tensor is written before a formula reads its same
    step; FormulaError for a cycle that no delayed read breaks, or a system without one step axis."""
    by_output: dict = {}
    for f in formulas:
        if f.output.name in by_output:
            raise FormulaError(name, f"tensor {f.output.name!r} is produced by two formulas")
        by_output[f.output.name] = f
    reads = {f.output.name: [t for t in f.input_names if t in by_output] for f in formulas}
    delayed = {(f.output.name, t): delay(f, t) for f in formulas for t in reads[f.output.name]}
    same_step = {o: [t for t in ins if delayed[(o, t)] is None] for o, ins in reads.items()}
    order = _topological(name, [f.output.name for f in formulas], same_step)
    given = {f.output.name: n for n, f in enumerate(formulas)}
    position = {o: n for n, o in enumerate(order)}
    # each group named by its first member as given; groups visited in the order given, as before
    groups = sorted(_components(list(given), reads), key=lambda g: min(map(given.get, g)))
    head = {o: min(g, key=given.get) for g in groups for o in g}
    members_of = {head[g[0]]: sorted(g, key=position.get) for g in groups}
    group_reads = {h: sorted({head[t] for m in ms for t in reads[m]} - {h}, key=given.get)
                   for h, ms in members_of.items()}
    systems, run = [], []
    for h in _topological(name, list(members_of), group_reads, condensed=True):
        if len(members_of[h]) > 1:
            systems.append(_system(name, members_of[h], by_output, delayed, reads))
        run += [by_output[m] for m in members_of[h]]
    return run, tuple(systems)


def _system(name, members, by_output, delayed, reads) -> System:
    """The members' shared step index and direction, or a FormulaError that says what differs."""
    steps = {(str(s), d) for (o, t), v in delayed.items() if v is not None and o in members and t in members
             for s, d in [v]}
    for o in members:
        if by_output[o].recurrence is not None:
            rec = by_output[o].recurrence
            steps.add((str(by_output[o].indices[rec.axis]), rec.direction))
    if len(steps) != 1:
        raise FormulaError(name, f"formulas writing {', '.join(members)} read each other's earlier steps "
                                 f"along different axes or directions ({sorted(steps)}): a system of "
                                 f"recurrences steps along one shared index, one way")
    (step, direction), = steps
    ranges = set()
    for o in members:
        f = by_output[o]
        idx = [i for i in f.indices if str(i) == step]
        if not idx:
            raise FormulaError(name, f"formula {f.name!r} is part of a system of recurrences over {step} "
                                     f"but has no output index {step}; name the step index alike in "
                                     f"every formula of the system")
        ranges.add(f.ranges[idx[0]])
    if len(ranges) != 1:
        raise FormulaError(name, f"the formulas writing {', '.join(members)} run {step} over different "
                                 f"ranges {sorted(map(str, ranges))}")
    return System(tuple(members), step, direction)


def _topological(name, nodes, edges, condensed=False) -> list:
    """Nodes after the nodes they read (`edges[n]`: what n reads), in the given order otherwise."""
    order, state = [], {}

    def visit(n, path):
        if state.get(n) == "done":
            return
        if state.get(n) == "active":
            if condensed:  # unreachable: components are acyclic
                raise AssertionError(path)
            raise FormulaError(name, f"cycle through {' -> '.join(path + [n])} (a formula may read "
                                     f"another's output in a cycle only at an earlier step, t - 1, of "
                                     f"one shared index)")
        state[n] = "active"
        for t in edges.get(n, ()):
            visit(t, path + [n])
        state[n] = "done"
        order.append(n)

    for n in nodes:
        visit(n, [])
    return order


def _components(nodes, edges) -> list:
    """Strongly connected components (Tarjan), each a list of nodes."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            out.append(group)

    for v in nodes:
        if v not in index:
            visit(v)
    return out
