"""Trip counts: how many times a LoopProgram's loop bodies run at given sizes (a guard on indices is
evaluated; one on tensor values counts both branches, an upper bound).

Used to prove gradients keep the forward pass's asymptotic cost without timing anything, and by
the cpu backend to decide per call whether a kernel's work pays for its threads (`nest_work`).
"""
from __future__ import annotations

import math

import sympy as sp

from ..printing import python_function
from .ir import Branch, Contract, If, Let, Loop, LoopProgram, MatMul, Nest


def trip_count(prog: LoopProgram, dims: dict) -> int:
    """Total loop iterations of every nest (gathers included), plus m·n·k for each matrix product."""
    values = {str(d): int(v) for d, v in dims.items()}
    total = 0
    shapes = {t.name: t.shape for t in prog.inputs}
    shapes[prog.output.name] = prog.output.shape
    for temps, step in _run_steps(prog.temps, prog.steps, values):
        shapes.update({t.name: t.shape for t in temps})
        if isinstance(step, MatMul):
            a = [_value(d, values) for d in shapes[step.a]]
            b = [_value(d, values) for d in shapes[step.b]]
            total += a[0] * a[1] * (b[0] if step.trans_b else b[1])
        elif isinstance(step, Contract):
            total += math.prod(_value(s, values) for s in step.sizes)
        elif isinstance(step, Nest):
            total += _count(step.body, values, memo={})
    return total


def nest_work(prog: LoopProgram, dims: dict, limit: int) -> int:
    """Iterations of the loop nests that have a parallel loop (what a parallel flavour changes:
    matrix products go to BLAS either way, and a nest without one, such as a full reduction, runs
    the same loops in both flavours), counted as trip_count does but stopping once past `limit`."""
    values = {str(d): int(v) for d, v in dims.items()}
    total = 0
    for _, step in _run_steps(prog.temps, prog.steps, values):
        if isinstance(step, Nest) and _has_parallel_loop(step.body) and total < limit:
            total += _count(step.body, values, limit - total, {})
    return total


def branch_path(prog: LoopProgram, dims: dict) -> tuple:
    """The way a call at these dimensions takes through the program's Branches: one bool per
    Branch it reaches, in order (() for a program without one). Two calls with equal paths run the
    same nests (the self-check runs the call's path: runtime/selfcheck.py)."""
    values = {str(d): int(v) for d, v in dims.items()}
    path: list = []
    for _ in _run_steps((), prog.steps, values, path):
        pass
    return tuple(path)


def branch_dims(prog: LoopProgram) -> set:
    """The names of the dimensions any Branch of the program decides on."""
    names: set = set()
    stack = list(prog.steps)
    while stack:
        step = stack.pop()
        if isinstance(step, Branch):
            names |= {s.name for s in sp.sympify(step.cond).free_symbols}
            stack += [*step.then_steps, *step.else_steps]
    return names


def _run_steps(temps, steps, values, path: list | None = None):
    """(temporaries in scope, step) for the steps a call at these dimensions runs: a Branch's
    condition is decided here as the driver decides it."""
    for step in steps:
        if isinstance(step, Branch):
            names, fn = _compiled(step.cond, condition=True)
            taken = bool(fn(*[values[n] for n in names]))
            if path is not None:
                path.append(taken)
            if taken:
                yield from _run_steps(temps + step.then_temps, step.then_steps, values, path)
            else:
                yield from _run_steps(temps + step.else_temps, step.else_steps, values, path)
        else:
            yield temps, step


def _has_parallel_loop(body) -> bool:
    """A loop a backend turns into threads: the IR marks it, at the top of the nest (or in an If)."""
    return any(isinstance(s, Loop) and s.parallel
               or isinstance(s, If) and (_has_parallel_loop(s.then) or _has_parallel_loop(s.orelse))
               for s in body)


_COMPILED: dict = {}


def _compiled(e, condition: bool = False):
    """(names, function) for an index expression or an index condition, printed once by the
    kernels' printer (exact integer division) and evaluated per iteration at Python speed."""
    key = (e, condition)
    if key not in _COMPILED:
        names = sorted({s.name for s in sp.sympify(e).free_symbols})
        _COMPILED[key] = (names, python_function(e, names, condition=condition))
    return _COMPILED[key]


def _value(e, env) -> int:
    names, fn = _compiled(e)
    return int(fn(*[env[n] for n in names]))


def _count(body, env, limit: float = math.inf, memo: dict | None = None) -> int:
    """Iterations of `body`; once past `limit` the count stops (a lower bound, enough to decide).
    A loop whose body's bounds and guards do not read its index counts one iteration times the
    trip count (a 10^4 x 10^3 guarded reduction is not walked index by index). `memo` keeps each
    complete count of a body by the values of the names its bounds and guards read: a convolution
    gradient's clipped windows depend on one or two indices, not on every enclosing one."""
    key = None
    if memo is not None:
        key = (id(body), tuple(env.get(n) for n in _read_by(body)))
        hit = memo.get(key)
        if hit is not None:
            return hit
    total = _walk(body, env, limit, memo)
    if key is not None and total < limit:
        memo[key] = total
    return total


def _walk(body, env, limit, memo) -> int:
    total = 0
    for s in body:
        if isinstance(s, Loop):
            lo, stop = _value(s.lo, env), _value(s.stop, env)
            if stop <= lo:
                continue
            if not any(isinstance(t, (Loop, If)) for t in s.body):
                total += stop - lo
            elif s.var.name not in _read_by(s.body):
                total += (stop - lo) * (1 + _count(s.body, {**env, s.var.name: lo}, limit, memo))
            else:
                for v in range(lo, stop):
                    total += 1 + _count(s.body, {**env, s.var.name: v}, limit - total, memo)
                    if total >= limit:
                        break
        elif isinstance(s, Let) and s.name.is_integer:  # a computed index (a reversed step)
            try:
                env = {**env, s.name.name: _value(s.value, env)}
            except (KeyError, TypeError, NotImplementedError):
                pass
        elif isinstance(s, If):
            taken = _decide(s.cond, env)  # a guard on indices is decided; one on values is not
            total += (_count(s.then, env, limit - total, memo) if taken is not False else 0) + (
                _count(s.orelse, env, limit - total, memo) if taken is not True else 0)
        if total >= limit:
            break
    return total


def _read_by(body) -> tuple:
    """The names the loop bounds, guards and index lets inside `body` read (cached per body)."""
    key = id(body)
    hit = _READS.get(key)
    if hit is None or hit[0] is not body:
        names = set()
        for s in body:
            if isinstance(s, Loop):
                names |= {x.name for e in (s.lo, s.stop) for x in sp.sympify(e).free_symbols}
                names |= set(_read_by(s.body))
            elif isinstance(s, If):
                if not _on_values(s.cond):  # a test on tensor values counts both branches whatever the indices
                    names |= {x.name for x in sp.sympify(s.cond).free_symbols}
                names |= {*_read_by(s.then), *_read_by(s.orelse)}
            elif isinstance(s, Let) and s.name.is_integer:
                names |= {x.name for x in sp.sympify(s.value).free_symbols}
        hit = _READS[key] = (body, tuple(sorted(names)))
    return hit[1]


_READS: dict = {}


def _decide(cond, env):
    """True or False when the condition depends only on indices and dimensions, else None."""
    if cond is sp.true or cond is sp.false:
        return bool(cond)
    if _on_values(cond):
        return None
    names, fn = _compiled(cond, condition=True)
    if any(n not in env for n in names):
        return None
    return bool(fn(*[env[n] for n in names]))


def _on_values(cond) -> bool:
    """A test on tensor values (or one the printer refuses): it stays open, both branches count."""
    if cond is sp.true or cond is sp.false:
        return False
    if cond not in _ON_VALUES:
        _ON_VALUES[cond] = any(isinstance(a, sp.Indexed) for a in sp.preorder_traversal(cond))
        if not _ON_VALUES[cond]:
            try:
                _compiled(cond, condition=True)
            except NotImplementedError:
                _ON_VALUES[cond] = True
    return _ON_VALUES[cond]


_ON_VALUES: dict = {}
