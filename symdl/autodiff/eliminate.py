"""Delta elimination: solve each δ's affine equation for a summed index, turn the summed indices'
ranges into guards, then turn single-index guards into tightened loop bounds.

The result has the forward pass's asymptotic cost: a convolution's input gradient becomes a
transposed convolution whose inner loop runs only over the kernel taps that touch the input.
"""
from __future__ import annotations

import functools

import sympy as sp

from ..declare.indexing import affine
from ..declare.reductions import Sum
from .terms import Term


def eliminate_deltas(term: Term, free: set) -> Term | None:
    """Remove every δ from `term`; None when a δ can never hold (the term is zero)."""
    deltas, term = list(term.deltas), Term(term.coeff, list(term.sums), [], list(term.guards))
    while deltas:
        a, b = deltas.pop(0)
        e = sp.expand(a - b)
        if e == 0:
            continue
        if e.is_number:
            return None
        summed = [s for s, _, _ in term.sums]
        aff = affine(e, set(summed) | free)
        if aff is None:
            term.guards.append(sp.Eq(e, 0))
            continue
        den = functools.reduce(sp.ilcm, [sp.fraction(c)[1] for c in aff.coeffs.values()], 1)
        e = sp.expand(e * den)
        aff = affine(e, set(summed) | free)
        candidates = [s for s in reversed(summed) if s in aff.coeffs]  # innermost first
        unit = [s for s in candidates if abs(aff.coeffs[s]) == 1]
        if not candidates:
            term.guards.append(sp.Eq(e, 0))
            continue
        s = unit[0] if unit else candidates[0]
        c = aff.coeffs[s]
        rest = sp.expand(e - c * s)
        solution = sp.expand(-rest / c)
        extra = [] if abs(c) == 1 else [sp.Eq(sp.Mod(rest, abs(c)), 0)]
        (lo, hi), = [(lo, hi) for v, lo, hi in term.sums if v == s]
        term.sums = [t for t in term.sums if t[0] != s]
        term = _relax(term, s)
        term = term.substitute({s: solution})
        deltas = [(x.xreplace({s: solution}), y.xreplace({s: solution})) for x, y in deltas]
        term.guards += [sp.Ge(solution, lo), sp.Le(solution, hi)] + extra
    return term


def _relax(term: Term, s) -> Term:
    """Sums whose bounds depend on `s` (about to be substituted) get static bounds plus guards.

    A bound Max(0, ceiling(r)) becomes the static bound 0 and the guard t >= r (t is an integer),
    so that after substitution the guards can become bounds again (second-order gradients)."""
    sums, guards = [], list(term.guards)
    for t, lo, hi in term.sums:
        if s not in (lo.free_symbols | hi.free_symbols):
            sums.append((t, lo, hi))
            continue
        new = []
        for bound, side in ((lo, sp.Max), (hi, sp.Min)):
            parts = list(bound.args) if isinstance(bound, side) else [bound]
            static = [q for q in parts if s not in q.free_symbols]
            for q in parts:
                inner = q.args[0] if isinstance(q, (sp.floor, sp.ceiling)) else q
                guards.append(sp.Ge(t, inner) if side is sp.Max else sp.Le(t, inner))
            if not static:
                raise ValueError(f"cannot bound summation index {t} without {s}")
            new.append(side(*static) if len(static) > 1 else static[0])
        sums.append((t, new[0], new[1]))
    return Term(term.coeff, sums, list(term.deltas), guards)


def _split(g) -> list:
    """Conjunctions and bounds by Max/Min/floor/ceiling as lists of plain (affine) guards."""
    if isinstance(g, sp.And):
        return [q for a in g.args for q in _split(a)]
    if isinstance(g, (sp.Ge, sp.Gt, sp.Le, sp.Lt)):
        lhs, rhs = (g.lhs, g.rhs) if isinstance(g, (sp.Ge, sp.Gt)) else (g.rhs, g.lhs)  # lhs >= rhs
        strict = isinstance(g, (sp.Gt, sp.Lt))
        if not strict and lhs.is_integer is not False:
            if isinstance(rhs, sp.Max):  # t >= Max(a, b)  <=>  t >= a and t >= b
                return [q for a in rhs.args for q in _split(sp.Ge(lhs, a))]
            if isinstance(lhs, sp.Min):  # Min(a, b) >= r  <=>  a >= r and b >= r
                return [q for a in lhs.args for q in _split(sp.Ge(a, rhs))]
            if isinstance(rhs, sp.ceiling) and lhs.is_integer:  # t >= ceiling(r)  <=>  t >= r
                return [sp.Ge(lhs, rhs.args[0])]
            if isinstance(lhs, sp.floor) and rhs.is_integer:  # floor(r) >= t  <=>  r >= t
                return [sp.Ge(lhs.args[0], rhs)]
    return [g]


def _as_nonneg(guard):
    """A linear inequality guard as `expr >= 0` over the integers, or None."""
    if isinstance(guard, (sp.Ge, sp.Gt)):
        e = guard.lhs - guard.rhs
    elif isinstance(guard, (sp.Le, sp.Lt)):
        e = guard.rhs - guard.lhs
    else:
        return None
    e = sp.expand(e)
    den = functools.reduce(sp.ilcm, [sp.fraction(c)[1] for c in e.as_coefficients_dict().values()], 1)
    e = sp.expand(e * den)  # integer coefficients: the bounds derived from it are exact
    if isinstance(guard, (sp.Gt, sp.Lt)):
        e = e - 1  # integer arithmetic: e > 0  <=>  e - 1 >= 0
    return e


def _implied(e, free_ranges: dict) -> bool:
    """Whether `e >= 0` holds for every value of the free indices in their ranges."""
    aff = affine(e, set(free_ranges))
    if aff is None or aff.reads:
        return False
    low = aff.const + sum(c * (free_ranges[v][0] if c > 0 else free_ranges[v][1])
                          for v, c in aff.coeffs.items())
    return bool(sp.expand(low).is_nonnegative)


def build(term: Term, free_ranges: dict) -> sp.Expr:
    """Turn guards into loop bounds where they constrain one summed index; assemble the term as
    nested Sums with hoisted factors and Piecewise guards."""
    summed = [s for s, _, _ in term.sums]
    lows = {s: [lo] for s, lo, _ in term.sums}
    highs = {s: [hi] for s, _, hi in term.sums}
    outer_guards, inner_guards = [], []
    for g in [part for g in term.guards for part in _split(g)]:
        if g is sp.true:
            continue
        if g is sp.false:
            return sp.Integer(0)
        e = _as_nonneg(g)
        aff = affine(e, set(summed) | set(free_ranges)) if e is not None else None
        if aff is None or aff.reads:
            (inner_guards if g.free_symbols & set(summed) else outer_guards).append(g)
            continue
        inner = [s for s in reversed(summed) if s in aff.coeffs]
        if not inner:
            if not _implied(e, free_ranges):
                outer_guards.append(g)
            continue
        s = inner[0]
        c = aff.coeffs[s]
        r = sp.expand(e - c * s)
        if c > 0:
            lows[s].append(-r if c == 1 else sp.ceiling(-r / c))
        else:
            highs[s].append(r if c == -1 else sp.floor(r / -c))
    factors = sp.Mul.make_args(term.coeff)
    outside = [f for f in factors if not (f.free_symbols & set(summed))]
    body = sp.Mul(*[f for f in factors if f.free_symbols & set(summed)])
    if inner_guards:
        body = sp.Piecewise((body, sp.And(*inner_guards)), (0, True))
    for s in reversed(summed):
        lo = sp.Max(*lows[s]) if len(lows[s]) > 1 else lows[s][0]
        hi = sp.Min(*highs[s]) if len(highs[s]) > 1 else highs[s][0]
        parts = sp.Mul.make_args(body)
        hoisted = [f for f in parts if s not in f.free_symbols]
        kept = sp.Mul(*[f for f in parts if s in f.free_symbols])
        body = sp.Mul(*hoisted) * Sum(kept, (s, lo, hi))
    result = sp.Mul(*outside) * body
    if outer_guards:
        result = sp.Piecewise((result, sp.And(*outer_guards)), (0, True))
    return result
