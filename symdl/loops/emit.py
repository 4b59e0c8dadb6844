"""Expressions to loop IR statements: each Sum a register accumulator with its loop, each max a
running maximum, each arg-max a first-maximiser search, each guarded branch an `If` (a guarded read
is never executed outside its range); CSE on one statement's value, never across a guard.
Shared by every lowering (lower.py, rows.py, invariant.py's temporaries).
"""
from __future__ import annotations

import itertools

import sympy as sp

from ..declare.formula import Formula
from ..declare.reductions import REDUCTIONS, ArgMax, ReduceMax, ReduceProduct, Sum
from .ir import Accumulate, If, Let, Loop


class _Names:
    def __init__(self, taken):
        self.taken = set(taken)
        self.counters: dict = {}

    def new(self, prefix: str, integer: bool = False) -> sp.Symbol:
        c = self.counters.setdefault(prefix, itertools.count())
        while True:
            name = f"{prefix}{next(c)}"
            if name not in self.taken:
                self.taken.add(name)
                return sp.Symbol(name, integer=True) if integer else sp.Symbol(name, real=True)


def _taken(f: Formula, body) -> set:
    """Every name the formula uses (bound Sum indices and dimensions too) and every symbol of the
    body being lowered (matrix-product temporaries): temporaries are named around them."""
    return set(f.used_names) | {s.name for s in body.atoms(sp.Symbol)} | {t.name for t in f.inputs} | {
        f.output.name}


def emit(expr: sp.Expr, names: _Names) -> tuple[list, sp.Expr]:
    """Statements that compute the Sums and guarded branches of `expr`, and the value left."""
    if not expr.has(*REDUCTIONS):
        return [], expr
    if isinstance(expr, sp.Sum):
        (var, lo, hi), *rest = expr.limits
        inner = Sum(expr.function, *rest) if rest else expr.function
        guard, pre = None, []
        if isinstance(inner, sp.Piecewise) and len(inner.args) == 2 and inner.args[1] == (0, True):
            inner, guard = inner.args[0]
            pre, guard = emit(guard, names)
        acc = names.new("acc")
        stmts, value = emit(inner, names)
        body = stmts + _with_cse(Accumulate(acc, value), names)
        if guard is not None:
            body = pre + [If(guard, tuple(body))]
        return [Let(acc, sp.Integer(0)), Loop(var, lo, hi + 1, tuple(body))], acc
    if isinstance(expr, ReduceMax):
        (var, lo, hi), *rest = expr.limits
        inner = ReduceMax(expr.function, *rest) if rest else expr.function
        best = names.new("mx")
        stmts, value = emit(inner, names)
        loop = Loop(var, lo, hi + 1, tuple(stmts) + (Let(best, sp.Max(best, value)),))
        return [Let(best, -sp.oo), loop], best
    if isinstance(expr, ReduceProduct):
        (var, lo, hi), *rest = expr.limits
        inner = ReduceProduct(expr.function, *rest) if rest else expr.function
        prod = names.new("pr")
        stmts, value = emit(inner, names)
        loop = Loop(var, lo, hi + 1, tuple(stmts) + (Let(prod, prod * value),))
        return [Let(prod, sp.Integer(1)), loop], prod
    if isinstance(expr, ArgMax):  # first maximiser: a strict > keeps the earliest on ties
        best, args = names.new("best"), [names.new("arg", integer=True) for _ in expr.limits]
        stmts, value = emit(expr.function, names)
        body: tuple = tuple(stmts) + (If(value > best, (Let(best, value),) + tuple(
            Let(a, v) for a, v in zip(args, expr.variables, strict=True))),)
        for var, lo, hi in reversed(expr.limits):
            body = (Loop(var, lo, hi + 1, body),)
        init = [Let(best, -sp.oo)] + [Let(a, lo) for a, (_, lo, _) in zip(args, expr.limits, strict=True)]
        return init + list(body), args[expr.coordinate]
    if isinstance(expr, sp.Piecewise):
        t = names.new("t")
        pre, conds = [], []
        for _, cond in expr.args:
            s, c = emit(cond, names)
            pre += s
            conds.append(c)
        chain: tuple = (Let(t, sp.Integer(0)),)
        for (value, _), cond in reversed(list(zip(expr.args, conds, strict=True))):
            stmts, v = emit(value, names)
            branch = tuple(stmts) + (Let(t, v),)
            chain = branch if cond is sp.true else (If(cond, branch, chain),)
        return pre + [Let(t, sp.Integer(0))] + list(chain), t
    stmts, args = [], []
    for a in expr.args:
        s, v = emit(a, names)
        stmts += s
        args.append(v)
    return stmts, expr.func(*args)


def _with_cse(stmt, names: _Names) -> list:
    """CSE on one statement's value (never across guards: a guarded read must stay guarded)."""
    if stmt.value.has(sp.Piecewise) or stmt.value.is_Atom:
        return [stmt]
    sym = iter(lambda: names.new("c"), None)
    pairs, (reduced,) = sp.cse(stmt.value, symbols=sym, order="none")
    return [Let(s, v) for s, v in pairs] + [type(stmt)(*_fields(stmt)[:-1], reduced)]


def _fields(stmt):
    return [getattr(stmt, f) for f in stmt.__dataclass_fields__]
