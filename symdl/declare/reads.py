"""What a formula's body reads, and what its reads say about lengths.

Pure functions of a canonical body (plain index symbols, `ranges` for the output indices, `Sum`
limits for the others): the reads in order, where each sits (its indices' ranges, whether an index
guard protects it), the candidate length of each axis of each tensor, which dimensions a call can
bind, and which reads must be range-checked at call time.
"""
from __future__ import annotations

import sympy as sp

from .indexing import affine, is_lone
from .reductions import REDUCTIONS, limits_of


def reads_of(expr) -> list:
    """Indexed reads in order of first appearance (integer reads inside index positions included)."""
    out = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Indexed) and node not in out:
            out.append(node)
    return out


def walk_reads(expr, scope: dict, guarded: bool = False, guards=None):
    """Yield (read, scope, guarded) for each Indexed read: `scope` maps every index in scope to its
    (lo, hi) range, `guarded` says the read sits under a Piecewise condition that `guards(cond,
    scope)` accepts (its own branch's or an earlier branch's); by default any condition on indices."""
    guards = guards or _on_indices
    if isinstance(expr, sp.Indexed):
        yield expr, scope, guarded
        for pos in expr.indices:
            yield from walk_reads(pos, scope, guarded, guards)
        return
    if isinstance(expr, REDUCTIONS):
        inner = dict(scope)
        for var, lo, hi in limits_of(expr):
            inner[var] = (sp.sympify(lo), sp.sympify(hi))
        yield from walk_reads(expr.function, inner, guarded, guards)
        return
    if isinstance(expr, sp.Piecewise):  # a branch runs only where the conditions before it failed
        tested = False
        for value, cond in expr.args:
            tested = tested or guards(cond, scope)
            yield from walk_reads(value, scope, guarded or tested, guards)
            yield from walk_reads(cond, scope, guarded, guards)
        return
    for arg in expr.args:
        if isinstance(arg, sp.Basic):
            yield from walk_reads(arg, scope, guarded, guards)


def _on_indices(cond, scope) -> bool:
    return cond is not sp.true and bool(cond.free_symbols & set(scope))


def shape_rules(body, ranges, declared, strict: bool = True, padded=()) -> dict:
    """(tensor, axis) -> candidate length expressions: the declared shape, then the ranges of lone
    indices that start at 0 and do not depend on other indices, widened to the end of the reads at
    an offset (`widen`). Formulas made by autodiff declare every shape and may sum over part of an
    axis (t in [0, 0]): only their declarations count."""
    rules: dict = {}
    for t, shape in declared.items():
        for a, d in enumerate(shape):
            rules.setdefault((t, a), []).append(sp.sympify(d))
    for read, scope, _ in walk_reads(body, ranges):
        if not strict and str(read.base.label) in declared:
            continue
        for a, pos in enumerate(read.indices):
            if is_lone(pos, set(scope)):
                lo, hi = scope[pos]
                if lo == 0 and not (hi.free_symbols & set(scope)):
                    cands = rules.setdefault((str(read.base.label), a), [])
                    if hi + 1 not in cands:
                        cands.append(hi + 1)
    if strict:
        widen(rules, shift_extents(body, ranges, set(padded)), declared)
    return rules


def shift_extents(body, ranges, skip: set) -> dict:
    """(tensor, axis) -> the ends (last position + 1) of its unguarded reads at `index + offset`
    (s[t + 1], w[B + b], x[t - 1]) whose index range depends on no other index; tensors in `skip`
    (zero-padded: read as 0 past their end) keep their lengths."""
    ends: dict = {}
    for read, scope, guarded in walk_reads(body, ranges):
        if guarded or str(read.base.label) in skip:
            continue
        for a, pos in enumerate(read.indices):
            aff = affine(pos, set(scope))
            if aff is None or aff.reads or len(aff.coeffs) != 1:
                continue
            (v, c), = aff.coeffs.items()
            hi = scope[v][1]
            if c == 1 and not (hi.free_symbols & set(scope)):
                ends.setdefault((str(read.base.label), a), set()).add(sp.expand(hi + aff.const + 1))
    return ends


def widen(rules: dict, ends: dict, declared: dict) -> None:
    """A length a lone index gives (s[t], t < C - 1) is only where that read ends: when reads at an
    offset of the same axis provably end later (s[t + 1] at C - 1), the axis is as long as the
    latest end; an axis read only at offsets (x[t - 1], t from 1 to T - 1) is as long as its latest
    end. A declared length stays, and lone lengths provably shorter than it or than another read
    are reads of a part. Incomparable ends (N + K against 2·N) change nothing: the call's read
    checks decide."""
    for key in set(rules) | set(ends):
        cands, found = rules.get(key, []), ends.get(key, set())
        if key[0] in declared and cands:  # lone lengths that provably end before another read are parts
            rules[key] = cands[:1] + [c for c in cands[1:] if not any(
                sp.expand(e - c).is_positive for e in found | {cands[0]})]
            continue
        last = [e for e in found if all(sp.expand(e - o).is_nonnegative for o in found | set(cands))]
        if last:
            rules[key] = list(dict.fromkeys(last[0] if sp.expand(last[0] - c).is_positive else c
                                            for c in cands)) or [last[0]]


def read_checks(body, ranges, all_indices) -> list:
    """(tensor, axis, Affine, scope) for every read whose range must be checked against the
    tensor's length at call time: affine positions and gathers, outside index guards."""
    checks = []
    for read, scope, guarded in walk_reads(body, ranges):
        if guarded:
            continue
        for a, pos in enumerate(read.indices):
            aff = affine(pos, all_indices)
            if aff is None:
                continue
            if any(v not in scope or ({*scope[v][0].free_symbols, *scope[v][1].free_symbols} & all_indices)
                   for v in aff.coeffs):
                continue  # bounds that depend on other indices come from autodiff, correct by construction
            lone = is_lone(pos, all_indices) and scope[pos][0] == 0
            if not lone or aff.reads:
                check = (str(read.base.label), a, aff, {v: scope[v] for v in aff.coeffs})
                if check not in checks:
                    checks.append(check)
    return checks


def linear_in(expr, sym) -> bool:
    """Whether `expr` is a·sym + c with a non-zero integer a and c free of sym."""
    try:
        poly = sp.Poly(expr, sym)
    except sp.PolynomialError:
        return False
    return poly.degree() == 1 and poly.all_coeffs()[0].is_Integer


def bindable_dims(rules) -> set:
    """Dimensions a call can bind: bare lengths, then lengths linear in one unknown (2·n)."""
    found = {c for cands in rules.values() for c in cands if isinstance(c, sp.Symbol)}
    changed = True
    while changed:
        changed = False
        for cands in rules.values():
            for c in cands:
                unknown = c.free_symbols - found
                if len(unknown) == 1 and linear_in(c, next(iter(unknown))):
                    found |= unknown
                    changed = True
    return found


def guard_padded_reads(body, padded: set, shapes: dict, indices: set):
    """x[e] for a zero-padded x becomes Piecewise((x[e], 0 <= e <= len - 1), (0, True)), so the
    padding is ordinary notation: autodiff turns these guards into loop bounds like any other."""
    def visit(e):
        if isinstance(e, sp.Indexed):
            name = str(e.base.label)
            if name not in padded:
                return e
            conds = []
            for pos, n in zip(e.indices, shapes[name], strict=True):
                if not is_lone(pos, indices):
                    conds += [sp.Ge(pos, 0), sp.Le(pos, n - 1)]
            return sp.Piecewise((e, sp.And(*conds)), (0, True)) if conds else e
        if not e.args:
            return e
        return e.func(*[visit(a) for a in e.args])
    return visit(body)
