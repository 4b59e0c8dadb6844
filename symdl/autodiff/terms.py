"""A derivative as a sum of terms: coefficient × Kronecker deltas × guards, under nested sums.

`sympy.diff` gives the right delta structure; everything after it is symdl's own (SymPy's
`Sum.doit` and `deltasummation` drop range guards or divide indices wrongly).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

import sympy as sp

_fresh = itertools.count()


def fresh_index(base: str) -> sp.Symbol:
    """A new integer index symbol, so that no two sums or gradient indices share a name."""
    return sp.Symbol(f"{base.split('__')[0]}__{next(_fresh)}", integer=True)


def base_name(sym: sp.Symbol) -> str:
    return sym.name.split("__")[0]


@dataclass
class Term:
    """coeff · Π δ(a, b) · [guards], summed over `sums` (outermost first, bounds inclusive)."""

    coeff: sp.Expr
    sums: list = field(default_factory=list)    # [(symbol, lo, hi)]
    deltas: list = field(default_factory=list)  # [(a, b)]
    guards: list = field(default_factory=list)  # [sympy Boolean]

    def times(self, other: "Term") -> "Term":
        return Term(self.coeff * other.coeff, self.sums + other.sums, self.deltas + other.deltas,
                    self.guards + other.guards)

    def substitute(self, mapping: dict) -> "Term":
        x = lambda e: e.xreplace(mapping)  # noqa: E731  (subs is silently wrong inside Sum)
        return replace(self, coeff=x(self.coeff),
                       sums=[(s, x(lo), x(hi)) for s, lo, hi in self.sums],
                       deltas=[(x(a), x(b)) for a, b in self.deltas],
                       guards=[x(g) for g in self.guards])


class NotDifferentiable(Exception):
    pass


def flatten(expr: sp.Expr) -> list[Term]:
    """Split a derivative into terms; factors without deltas stay whole inside the coefficient."""
    if not expr.has(sp.KroneckerDelta):
        return [Term(expr)] if expr != 0 else []
    if isinstance(expr, sp.Add):
        return [t for a in expr.args for t in flatten(a)]
    if isinstance(expr, sp.Mul):
        terms = [Term(sp.Integer(1))]
        for factor in expr.args:
            terms = [a.times(b) for a in terms for b in flatten(factor)]
        return terms
    if isinstance(expr, sp.KroneckerDelta):
        return [Term(sp.Integer(1), deltas=[expr.args])]
    if isinstance(expr, sp.Sum):
        renamed, sums = {}, []
        for var, lo, hi in expr.limits:  # a later limit may depend on an earlier variable
            new = fresh_index(var.name)
            sums.append((new, lo.xreplace(renamed), hi.xreplace(renamed)))
            renamed[var] = new
        return [replace(t, sums=sums + t.sums) for t in flatten(expr.function.xreplace(renamed))]
    if isinstance(expr, sp.Piecewise):
        out, previous = [], sp.false
        for value, cond in expr.args:
            here = sp.And(cond, sp.Not(previous)) if previous is not sp.false else cond
            previous = sp.Or(previous, cond)
            for t in flatten(value):
                out.append(replace(t, guards=t.guards + ([] if here is sp.true else [here])))
        return out
    raise NotDifferentiable(f"cannot take the derivative through {type(expr).__name__}: {expr}")
