"""Expansion to scalars: a formula at concrete sizes as one SymPy expression per output element."""
from __future__ import annotations

import sympy as sp

from ..declare.functions import heaviside_to_step, max_min_to_piecewise
from ..declare.reductions import ArgMax, ReduceMax, ReduceProduct, Sum


def element(name: str, index: tuple) -> sp.Symbol:
    return sp.Symbol(f"{name}[{','.join(map(str, index))}]", real=True)


class Tensors:
    """Scalar expressions of tensors by name: inputs are symbols, outputs are expansions."""

    def __init__(self, shapes: dict, integers: dict):
        self.shapes, self.integers, self.values = dict(shapes), dict(integers), {}

    def read(self, name, index):
        shape = self.shapes[name]
        if any(i < 0 or i >= n for i, n in zip(index, shape, strict=True)):
            return sp.Integer(0)  # reads outside a tensor are zero
        if name in self.integers:
            return sp.Integer(int(self.integers[name][tuple(index)]))
        if name in self.values:
            return self.values[name][tuple(index)]
        return element(name, index)

    def scalar(self, name):
        if name in self.values:
            return self.values[name][()]
        return sp.Symbol(name, real=True)


def expand(f, dims: dict, tensors: Tensors) -> dict:
    """{output index tuple: scalar expression} for formula `f` at the dimension values `dims`."""
    env0, body, out, order = _prepare(f, dims, tensors)
    if f.recurrence is not None:
        rec = f.recurrence
        order.sort(key=lambda index: rec.direction * index[rec.axis])
    for index in order:
        out[index] = _ex(body, {**env0, **dict(zip(f.indices, map(sp.Integer, index), strict=True))}, tensors)
    return out


def expand_program(target, dims: dict, tensors: Tensors) -> None:
    """Every formula of `target` (a Formula or Program) into `tensors`, in order; a system of
    recurrences step by step, all its states at one step before the next."""
    systems = {s.outputs[0]: s for s in getattr(target, "systems", ())}
    done: set = set()
    for f in getattr(target, "formulas", [target]):
        if f.output.name in systems:
            s = systems[f.output.name]
            _expand_system([target.producer(o) for o in s.outputs], s, dims, tensors)
            done |= set(s.outputs)
        elif f.output.name not in done:
            expand(f, dims, tensors)


def _expand_system(members, system, dims, tensors) -> None:
    work = []
    for n, f in enumerate(members):
        env0, body, out, order = _prepare(f, dims, tensors)
        axis = next(a for a, i in enumerate(f.indices) if i.name == system.step)
        work += [(system.direction * index[axis], n, index, f, env0, body, out) for index in order]
    work.sort(key=lambda w: w[:2])
    for _, _, index, f, env0, body, out in work:
        out[index] = _ex(body, {**env0, **dict(zip(f.indices, map(sp.Integer, index), strict=True))}, tensors)


def _prepare(f, dims, tensors):
    """(dimension values, body, the output's (empty) expansion, its indices in order)."""
    env0 = {sp.Symbol(k, integer=True, positive=True): sp.Integer(v) for k, v in dims.items()}
    ranges = [range(int(_ex(lo, env0, tensors)), int(_ex(hi, env0, tensors)) + 1)
              for lo, hi in f.ranges.values()]
    out: dict = {}
    tensors.shapes[f.output.name] = tuple(len(r) for r in ranges)
    tensors.values[f.output.name] = out  # a recurrence reads the steps already expanded
    # the tie rule autodiff uses, in the formula's argument order
    return env0, max_min_to_piecewise(f.body), out, list(_product(ranges))


def _product(ranges):
    if not ranges:
        yield ()
        return
    for i in ranges[0]:
        for rest in _product(ranges[1:]):
            yield (i, *rest)


def _ex(e, env, tensors):
    if e.is_Number or e is sp.true or e is sp.false:
        return e
    if isinstance(e, sp.Symbol):
        if e in env:
            return env[e]
        for k, v in env.items():
            if k.name == e.name:
                return v
        return tensors.scalar(e.name)
    if isinstance(e, sp.Indexed):
        index = [_ex(i, env, tensors) for i in e.indices]
        if not all(i.is_Integer for i in index):
            raise ValueError(f"index of {e} did not evaluate to integers: {index}")
        return tensors.read(str(e.base.label), tuple(int(i) for i in index))
    if isinstance(e, sp.Sum):
        (var, lo, hi), *rest = e.limits
        inner = Sum(e.function, *rest) if rest else e.function
        lo, hi = int(_ex(lo, env, tensors)), int(_ex(hi, env, tensors))
        return sp.Add(*[_ex(inner, {**env, var: sp.Integer(n)}, tensors) for n in range(lo, hi + 1)])
    if isinstance(e, (ReduceMax, ArgMax)):
        return _first_maximiser(e, env, tensors)
    if isinstance(e, ReduceProduct):
        (var, lo, hi), *rest = e.limits
        inner = ReduceProduct(e.function, *rest) if rest else e.function
        lo, hi = int(_ex(lo, env, tensors)), int(_ex(hi, env, tensors))
        return sp.Mul(*[_ex(inner, {**env, var: sp.Integer(n)}, tensors) for n in range(lo, hi + 1)])
    if isinstance(e, sp.core.relational.Relational):
        lhs, rhs = _ex(e.lhs, env, tensors), _ex(e.rhs, env, tensors)
        if isinstance(lhs, sp.Piecewise) or isinstance(rhs, sp.Piecewise):  # an arg-max compared
            return _compare_pieces(e.func, lhs, rhs)
        return e.func(lhs, rhs)
    if isinstance(e, sp.Piecewise):
        pieces = []
        for value, cond in e.args:
            c = _ex(cond, env, tensors)
            if c is sp.false:
                continue
            pieces.append((_ex(value, env, tensors), c))
            if c is sp.true:
                break
        if not pieces:
            return sp.Integer(0)
        if pieces[0][1] is sp.true:
            return pieces[0][0]
        if pieces[-1][1] is not sp.true:
            pieces.append((sp.Integer(0), sp.true))
        return sp.Piecewise(*pieces)
    return e.func(*[_ex(a, env, tensors) for a in e.args])


def normalise(e: sp.Expr) -> sp.Expr:
    """One convention for the comparison: Heaviside as symdl's step, then expanded."""
    return sp.expand(heaviside_to_step(e))


def _first_maximiser(e, env, tensors):
    """max (or the arg-max coordinate) over the limits, ties to the first in lexicographic order."""
    points = [env]
    for var, lo, hi in e.limits:
        points = [{**p, var: sp.Integer(n)} for p in points
                  for n in range(int(_ex(lo, p, tensors)), int(_ex(hi, p, tensors)) + 1)]
    values = [_ex(e.function, p, tensors) for p in points]
    if isinstance(e, ArgMax):
        picks = [p[e.variables[e.coordinate]] for p in points]
    else:
        picks = values
    pieces = [(pick, sp.And(*[sp.Ge(v, w) for w in values[n + 1:]]))
              for n, (pick, v) in enumerate(zip(picks, values, strict=True))]
    pieces[-1] = (pieces[-1][0], sp.true)
    return sp.Piecewise(*pieces)


def _compare_pieces(rel, lhs, rhs):
    """rel(lhs, rhs) where a side is a Piecewise: a disjunction over its branches."""
    side = lhs if isinstance(lhs, sp.Piecewise) else rhs
    out, before = [], sp.false
    for value, cond in side.args:
        test = rel(value, rhs) if side is lhs else rel(lhs, value)
        out.append(sp.And(cond, sp.Not(before), test))
        before = sp.Or(before, cond)
    return sp.Or(*out)
