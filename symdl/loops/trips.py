"""Trip counts: how many times a LoopProgram's loop bodies run at given sizes (guards ignored).

Used to prove gradients keep the forward pass's asymptotic cost without timing anything.
"""
from __future__ import annotations

import sympy as sp

from .ir import If, Loop, LoopProgram, MatMul, Nest


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


def _value(e, env) -> int:
    e = sp.sympify(e)
    return int(e.xreplace({s: sp.Integer(env[s.name]) for s in e.free_symbols}))


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
        elif isinstance(s, If):
            total += _count(s.then, env) + _count(s.orelse, env)
    return total
