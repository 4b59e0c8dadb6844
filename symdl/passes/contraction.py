"""Contraction detection: a Sum that is a matrix product of two 2-D tensors becomes a GEMM.

BLAS beats every generated loop nest for every matrix-product shape measured, so
`Sum(A[u, k] * B[k, v], k)` (either operand transposed, times index-free factors) is replaced by
a read of a temporary `T[u, v]` that a library call fills before the loops run.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy as sp

from ..declare.formula import Formula


@dataclass(frozen=True)
class Contraction:
    temp: str
    a: str
    b: str
    trans_a: bool
    trans_b: bool
    shape: tuple  # (rows, cols)


def extract_matmuls(f: Formula) -> tuple[sp.Expr, list]:
    """Return the body with matrix-product Sums replaced by temporaries, and the contractions."""
    found: dict = {}
    order = list(f.indices)
    # temporaries T0, T1, ... skip every name the formula uses (a user tensor T0 stays itself)
    temps = (n for n in (f"T{k}" for k in itertools.count()) if n not in f.used_names)

    def visit(expr):
        if isinstance(expr, sp.Sum):
            hit = _match(expr, f, order)
            if hit is not None:
                key = expr
                if key not in found:
                    found[key] = hit(next(temps))
                c = found[key]
                u, v = c[1]
                return c[2] * sp.IndexedBase(c[0].temp, real=True)[u, v]
            return expr
        if not expr.args or isinstance(expr, sp.Indexed):
            return expr
        return expr.func(*[visit(a) for a in expr.args])

    body = visit(f.body)
    return body, [c[0] for c in found.values()]


def _match(s: sp.Sum, f: Formula, order):
    """The contraction `s` is, or None. A GEMM sums over whole axes: the Sum must run from 0 to the
    length of both operands' k axes minus 1 (a Sum over (k, 0, N - 2) of an N-long axis is not a
    matrix product of the tensors as given)."""
    if len(s.limits) != 1:
        return None
    k, lo, hi = s.limits[0]
    if lo != 0 or hi.free_symbols & f.all_indices:
        return None
    reads = [a for a in sp.Mul.make_args(s.function) if isinstance(a, sp.Indexed)]
    rest = [a for a in sp.Mul.make_args(s.function) if not isinstance(a, sp.Indexed)]
    if len(reads) != 2 or any(r.free_symbols & f.all_indices for r in rest):
        return None
    ops = []
    for r in reads:
        if r.base.is_integer or len(r.indices) != 2 or list(r.indices).count(k) != 1:
            return None
        other = r.indices[1] if r.indices[0] == k else r.indices[0]
        if other not in f.ranges:
            return None
        ops.append((r, other, r.indices[0] == k))
    for r, other, k_first in ops:  # the Sum must run over the whole k axis of both operands, and
        # the other index over the whole other axis (w[k, j] of a packed (K, 4H) w is a slice)
        whole = {0 if k_first else 1: hi + 1, 1 if k_first else 0: f.ranges[other][1] + 1}
        for axis, want in whole.items():
            lengths = f.shape_rules.get((str(r.base.label), axis), [])
            if not lengths or any(sp.expand(n - want) != 0 for n in lengths):
                return None
    (ra, u, ta), (rb, v, tb_first) = sorted(ops, key=lambda o: order.index(o[1]))
    if u == v:
        return None
    # op(a) must be (u, k): a transposed when k comes first; op(b) must be (k, v): transposed when k is last
    trans_b = not tb_first
    shape = (f.ranges[u][1] + 1, f.ranges[v][1] + 1)
    coeff = sp.Mul(*rest)
    return lambda name: (Contraction(name, str(ra.base.label), str(rb.base.label), ta, trans_b, shape),
                         (u, v), coeff)
