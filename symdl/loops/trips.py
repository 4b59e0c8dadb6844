"""Trip counts: how many times a LoopProgram's loop bodies run at given sizes (a guard on indices is
evaluated; one on tensor values counts both branches, an upper bound).

Used to prove gradients keep the forward pass's asymptotic cost without timing anything.
"""
from __future__ import annotations

import sympy as sp

from .ir import If, Let, Loop, LoopProgram, MatMul, Nest


def trip_count(prog: LoopProgram, dims: dict) -> int:
    """Total loop iterations of every nest, plus m·n·k for each matrix product."""
    values = {str(d): int(v) for d, v in dims.items()}
    total = 0
    shapes = {t.name: t.shape for t in prog.inputs}
    shapes.update({t.name: t.shape for t in prog.temps})
    shapes[prog.output.name] = prog.output.shape
    for step in prog.steps:
        if isinstance(step, MatMul):
            a = [_value(d, values) for d in shapes[step.a]]
            b = [_value(d, values) for d in shapes[step.b]]
            total += a[0] * a[1] * (b[0] if step.trans_b else b[1])
        elif isinstance(step, Nest):
            total += _count(step.body, values)
    return total


_COMPILED: dict = {}


def _compiled(e, condition: bool = False):
    """(names, function) for an index expression or an index condition, printed once by the cpu
    printer (exact integer division) and evaluated per iteration at Python speed."""
    key = (e, condition)
    if key not in _COMPILED:
        from ..backends.cpu.printer import python_function  # late: backends import this package
        names = sorted({s.name for s in sp.sympify(e).free_symbols})
        _COMPILED[key] = (names, python_function(e, names, condition=condition))
    return _COMPILED[key]


def _value(e, env) -> int:
    names, fn = _compiled(e)
    return int(fn(*[env[n] for n in names]))


def _count(body, env) -> int:
    total = 0
    for s in body:
        if isinstance(s, Loop):
            lo, stop = _value(s.lo, env), _value(s.stop, env)
            if stop <= lo:
                continue
            inner = [t for t in s.body if isinstance(t, (Loop, If))]
            if not inner:
                total += stop - lo
            else:
                for v in range(lo, stop):
                    total += 1 + _count(s.body, {**env, s.var.name: v})
        elif isinstance(s, Let) and s.name.is_integer:  # a computed index (a reversed step)
            try:
                env = {**env, s.name.name: _value(s.value, env)}
            except (KeyError, TypeError, NotImplementedError):
                pass
        elif isinstance(s, If):
            taken = _decide(s.cond, env)  # a guard on indices is decided; one on values is not
            total += (_count(s.then, env) if taken is not False else 0) + (
                _count(s.orelse, env) if taken is not True else 0)
    return total


def _decide(cond, env):
    """True or False when the condition depends only on indices and dimensions, else None."""
    if cond is sp.true or cond is sp.false:
        return bool(cond)
    if cond not in _ON_VALUES:  # a test on tensor values (or one the printer refuses) stays open
        _ON_VALUES[cond] = any(isinstance(a, sp.Indexed) for a in sp.preorder_traversal(cond))
        if not _ON_VALUES[cond]:
            try:
                _compiled(cond, condition=True)
            except NotImplementedError:
                _ON_VALUES[cond] = True
    if _ON_VALUES[cond]:
        return None
    names, fn = _compiled(cond, condition=True)
    if any(n not in env for n in names):
        return None
    return bool(fn(*[env[n] for n in names]))


_ON_VALUES: dict = {}
