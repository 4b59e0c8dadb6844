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
    output read by a later member (the driver passes scalars by value), or two members writing
    the same tensor. Temporaries two members name alike (each GEMM's T0) are renamed apart."""
    programs = list(programs)
    outputs = [p.output for p in programs]
    if len({t.name for t in outputs}) != len(outputs) or any(p.extra_outputs for p in programs):
        return None
    made = {t.name: t for t in outputs}
    if any(t.name in made and made[t.name].rank == 0 for p in programs for t in p.inputs):
        return None
    taken = set().union(*(_names(p) for p in programs))
    programs = [_own_temps(p, f"m{n}", taken, programs) for n, p in enumerate(programs)]
    members = [_apart(p, f"m{n}", taken) for n, p in enumerate(programs)]
    inputs = {t.name: t for p in programs for t in p.inputs if t.name not in made}
    dims = {str(d): d for p in programs for d in p.dims}
    return LoopProgram(name, "\n".join(p.formula for p in programs), tuple(inputs.values()), outputs[0],
                       tuple(dims[d] for d in sorted(dims)), tuple(t for p in members for t in p.temps),
                       tuple(s for p in members for s in p.steps), tuple(outputs[1:]))


def _own_temps(p: LoopProgram, prefix: str, taken: set, programs: list) -> LoopProgram:
    """The member with each temporary that another member's tensors or temporaries name too
    renamed to a name no member uses: in its allocation, its nests' statements and library calls."""
    others = set().union(*({t.name for t in (*q.inputs, q.output)} | set(_temps(q.temps, q.steps))
                           for q in programs if q is not p))
    renames = {}
    for name in _temps(p.temps, p.steps):
        if name in others and name not in renames:
            renames[name] = _fresh(name, prefix, taken)
    if not renames:
        return p
    return replace(p, temps=_temp_specs(p.temps, renames), steps=tuple(_tensors(s, renames) for s in p.steps))


def _fresh(name: str, prefix: str, taken: set) -> str:
    for k in itertools.count():
        new = f"{name}_{prefix}" if k == 0 else f"{name}_{prefix}_{k}"
        if new not in taken:
            taken.add(new)
            return new
    raise AssertionError("unreachable")


def _temp_specs(temps, renames: dict) -> tuple:
    return tuple(replace(t, name=renames.get(t.name, t.name)) for t in temps)


def _tensors(step, renames: dict):
    """A step with the tensors `renames` names renamed (allocations, reads, writes, library calls)."""
    if isinstance(step, Branch):
        return replace(step, then_temps=_temp_specs(step.then_temps, renames),
                       then_steps=tuple(_tensors(s, renames) for s in step.then_steps),
                       else_temps=_temp_specs(step.else_temps, renames),
                       else_steps=tuple(_tensors(s, renames) for s in step.else_steps))
    if isinstance(step, Nest):
        return replace(step, body=_body(step.body, {}, renames),
                       tensors=tuple(renames.get(t, t) for t in step.tensors))
    fields = {f: renames[getattr(step, f)] for f in ("out", "a", "b") if getattr(step, f) in renames}
    return replace(step, **fields)  # a library call (MatMul, Contract)


def _apart(p: LoopProgram, prefix: str, taken: set) -> LoopProgram:
    """The member with its nests named `prefix_name` and its locals given names no member uses."""
    fresh = {s: sp.Symbol(_fresh(s.name, prefix, taken), **s.assumptions0) for s in sorted(_lets(p.steps), key=str)}
    return replace(p, steps=tuple(_step(s, prefix, fresh) for s in p.steps))


def _step(step, prefix: str, fresh: dict):
    if isinstance(step, Nest):
        return replace(step, name=f"{prefix}_{step.name}", body=_body(step.body, fresh))
    if isinstance(step, Branch):
        return replace(step, then_steps=tuple(_step(s, prefix, fresh) for s in step.then_steps),
                       else_steps=tuple(_step(s, prefix, fresh) for s in step.else_steps))
    return step  # a library call: names only tensors


def _body(body, fresh: dict, renames: dict | None = None) -> tuple:
    """Statements with the symbols `fresh` maps replaced, and the tensors `renames` names renamed."""
    renames = renames or {}

    def x(expr):
        return _x(expr, fresh, renames)
    out = []
    for s in body:
        if isinstance(s, Loop):
            out.append(replace(s, lo=x(s.lo), stop=x(s.stop), body=_body(s.body, fresh, renames)))
        elif isinstance(s, (Let, Accumulate)):
            out.append(replace(s, name=fresh.get(s.name, s.name), value=x(s.value)))
        elif isinstance(s, (Store, ScatterAdd)):
            out.append(replace(s, tensor=renames.get(s.tensor, s.tensor), index=tuple(x(i) for i in s.index),
                               value=x(s.value)))
        elif isinstance(s, If):
            out.append(replace(s, cond=x(s.cond), then=_body(s.then, fresh, renames),
                               orelse=_body(s.orelse, fresh, renames)))
        else:
            raise TypeError(f"unknown loop IR statement {s!r}")
    return tuple(out)


def _x(expr, fresh: dict, renames: dict):
    if not fresh and not renames:
        return expr
    expr = sp.sympify(expr).xreplace(fresh) if fresh else expr
    if renames:  # reads of a renamed temporary: the same read of its new name
        expr = sp.sympify(expr).replace(
            lambda e: isinstance(e, sp.Indexed) and str(e.base.label) in renames,
            lambda e: sp.IndexedBase(sp.Symbol(renames[str(e.base.label)], **e.base.label.assumptions0))[e.indices])
    return expr


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
