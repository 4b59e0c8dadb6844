"""Index notation helpers: canonical index symbols, affine index forms, free indices."""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .reductions import REDUCTIONS, limits_of


def index_symbol(name: str) -> sp.Symbol:
    """The canonical symbol for a loop index (SymPy's Idx carries its range; symdl keeps ranges aside)."""
    return sp.Symbol(name, integer=True)


def free_indices(expr: sp.Expr, indices: set[sp.Symbol]) -> set[sp.Symbol]:
    """Index symbols of `indices` used in `expr` and not bound by an enclosing Sum in it."""
    if isinstance(expr, sp.Symbol):
        return {expr} if expr in indices else set()
    if isinstance(expr, REDUCTIONS):
        inner = free_indices(expr.function, indices)
        for var, lo, hi in reversed(limits_of(expr)):
            inner.discard(var)
            inner |= free_indices(lo, indices) | free_indices(hi, indices)
        return inner
    out: set[sp.Symbol] = set()
    for arg in expr.args:
        if isinstance(arg, sp.Basic):
            out |= free_indices(arg, indices)
    return out


@dataclass(frozen=True)
class Affine:
    """An index expression as const + Σ coeff·index + Σ coeff·(integer tensor read)."""

    const: sp.Expr
    coeffs: dict  # index symbol -> rational coefficient
    reads: dict  # integer-valued Indexed -> rational coefficient

    def expr(self) -> sp.Expr:
        return self.const + sum(c * s for s, c in self.coeffs.items()) + sum(
            c * r for r, c in self.reads.items())


def affine(expr: sp.Expr, indices: set[sp.Symbol]) -> Affine | None:
    """Split an index expression into its affine form, or None when it is not affine."""
    expr = sp.expand(expr)
    const, coeffs, reads = sp.Integer(0), {}, {}
    for term in sp.Add.make_args(expr):
        c, rest = term.as_coeff_Mul()
        if rest == 1:
            const += c
        elif rest in indices:
            coeffs[rest] = coeffs.get(rest, 0) + c
        elif isinstance(rest, sp.Indexed) and rest.base.is_integer:
            reads[rest] = reads.get(rest, 0) + c
        elif not (rest.free_symbols & indices) and not rest.atoms(sp.Indexed):
            const += term  # a dimension expression such as K - 1
        else:
            return None
    return Affine(const, {s: c for s, c in coeffs.items() if c != 0}, reads)


def is_lone(expr: sp.Expr, indices: set[sp.Symbol]) -> bool:
    return isinstance(expr, sp.Symbol) and expr in indices
