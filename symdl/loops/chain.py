"""A chain: the LoopPrograms of a Program's formulas, each reading the outputs of those before it,
as one LoopProgram (one generated module) that writes every output in order.

A softmax is four formulas and its gradient eight; as kernels each is a numba function, and numba
spends ~0.05-0.15 s compiling any function, however small. Chained, the nests follow one another
in one driver, and the cpu codegen compiles consecutive nests with no local in common as one
function: the locals of each member (Lets, accumulators) are renamed apart here so that they do.
Every member keeps its own lowering (library calls, temporaries, Branches) unchanged.
"""
from __future__ import annotations

import itertools
from dataclasses import replace

import sympy as sp

from .ir import Accumulate, Branch, If, Let, Loop, LoopProgram, Nest, ScatterAdd, Store


def lower_chain(programs, name: str) -> LoopProgram | None:
    """One LoopProgram running `programs` (each a formula's, in the order given) one after the
    other, its outputs every member's output; None where they cannot share one module: a rank-0
    output read by a later member (the driver passes scalars by value), a temporary of one
    member named like any tensor of another, or two members writing the same tensor."""
    programs = list(programs)
    outputs = [p.output for p in programs]
    if len({t.name for t in outputs}) != len(outputs) or any(p.extra_outputs for p in programs):
        return None
    made = {t.name: t for t in outputs}
    if any(t.name in made and made[t.name].rank == 0 for p in programs for t in p.inputs):
        return None
    tensors = [{t.name for t in (*p.inputs, p.output)} | set(_temps(p.temps, p.steps)) for p in programs]
    for n, p in enumerate(programs):
        others = set().union(*(ts for m, ts in enumerate(tensors) if m != n))
        if set(_temps(p.temps, p.steps)) & others:
            return None
    taken = set().union(*(_names(p) for p in programs))
    members = [_apart(p, f"m{n}", taken) for n, p in enumerate(programs)]
    inputs = {t.name: t for p in programs for t in p.inputs if t.name not in made}
    dims = {str(d): d for p in programs for d in p.dims}
    return LoopProgram(name, "\n".join(p.formula for p in programs), tuple(inputs.values()), outputs[0],
                       tuple(dims[d] for d in sorted(dims)), tuple(t for p in members for t in p.temps),
                       tuple(s for p in members for s in p.steps), tuple(outputs[1:]))


def _apart(p: LoopProgram, prefix: str, taken: set) -> LoopProgram:
    """The member with its nests named `prefix_name` and its locals given names no member uses."""
    fresh = {}
    for s in sorted(_lets(p.steps), key=str):
        for k in itertools.count():
            new = f"{s.name}_{prefix}" if k == 0 else f"{s.name}_{prefix}_{k}"
            if new not in taken:
                taken.add(new)
                fresh[s] = sp.Symbol(new, **s.assumptions0)
                break
    return replace(p, steps=tuple(_step(s, prefix, fresh) for s in p.steps))


def _step(step, prefix: str, fresh: dict):
    if isinstance(step, Nest):
        return replace(step, name=f"{prefix}_{step.name}", body=_body(step.body, fresh))
    if isinstance(step, Branch):
        return replace(step, then_steps=tuple(_step(s, prefix, fresh) for s in step.then_steps),
                       else_steps=tuple(_step(s, prefix, fresh) for s in step.else_steps))
    return step  # a library call: names only tensors


def _body(body, fresh: dict) -> tuple:
    out = []
    for s in body:
        if isinstance(s, Loop):
            out.append(replace(s, lo=_x(s.lo, fresh), stop=_x(s.stop, fresh), body=_body(s.body, fresh)))
        elif isinstance(s, (Let, Accumulate)):
            out.append(replace(s, name=fresh.get(s.name, s.name), value=_x(s.value, fresh)))
        elif isinstance(s, (Store, ScatterAdd)):
            out.append(replace(s, index=tuple(_x(i, fresh) for i in s.index), value=_x(s.value, fresh)))
        elif isinstance(s, If):
            out.append(replace(s, cond=_x(s.cond, fresh), then=_body(s.then, fresh),
                               orelse=_body(s.orelse, fresh)))
        else:
            raise TypeError(f"unknown loop IR statement {s!r}")
    return tuple(out)


def _x(expr, fresh: dict):
    return sp.sympify(expr).xreplace(fresh) if fresh else expr


def _lets(steps) -> set:
    """The symbols Lets and accumulators define, in every nest of `steps`."""
    found: set = set()

    def visit(body):
        for s in body:
            if isinstance(s, (Let, Accumulate)):
                found.add(s.name)
            elif isinstance(s, Loop):
                visit(s.body)
            elif isinstance(s, If):
                visit(s.then)
                visit(s.orelse)
    for step in steps:
        if isinstance(step, Nest):
            visit(step.body)
        elif isinstance(step, Branch):
            found |= _lets(step.then_steps) | _lets(step.else_steps)
    return found


def _temps(temps, steps) -> list:
    """Names of the temporaries a program allocates, those of each way of its Branches too."""
    names = [t.name for t in temps]
    for s in steps:
        if isinstance(s, Branch):
            names += _temps(s.then_temps, s.then_steps) + _temps(s.else_temps, s.else_steps)
    return names


def _names(p: LoopProgram) -> set:
    """Every name a program uses: tensors, dimensions and the symbols of its statements."""
    names = {t.name for t in (*p.inputs, p.output)} | {str(d) for d in p.dims} | set(_temps(p.temps, p.steps))

    def visit(body):
        for s in body:
            for field in ("lo", "stop", "value", "cond"):
                if hasattr(s, field):
                    names.update(a.name for a in sp.sympify(getattr(s, field)).atoms(sp.Symbol))
            for field in ("var", "name"):
                if isinstance(getattr(s, field, None), sp.Symbol):
                    names.add(getattr(s, field).name)
            for i in getattr(s, "index", ()):
                names.update(a.name for a in sp.sympify(i).atoms(sp.Symbol))
            for inner in ("body", "then", "orelse"):
                visit(getattr(s, inner, ()))

    def steps(ss):
        for s in ss:
            if isinstance(s, Nest):
                visit(s.body)
            elif isinstance(s, Branch):
                steps(s.then_steps)
                steps(s.else_steps)
    steps(p.steps)
    return names
