"""Loop-invariant scalar subexpressions computed once before a nest's loops (loops/hoist.py), and
parallel loops printed as parts of their range: a formula's results against NumPy with its scalars lifted,
in both flavours and dtypes; what may not be lifted stays in the loop."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.loops.hoist import hoist_invariants
from symdl.loops.ir import Let, Loop, Store

N = sp.Symbol("N", integer=True, positive=True)
i = sp.Idx("i", N)
x, y, inv0 = sp.IndexedBase("x"), sp.IndexedBase("y"), sp.IndexedBase("inv0")
a, t, c = sp.symbols("a t c", real=True)


@pytest.mark.parametrize("parallel", ["1", str(1 << 40)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lifted_scalars_give_numpys_values(dtype, parallel, monkeypatch):
    """Powers, quotients and dimension arithmetic of scalars inside an element expression; a tensor
    named like the lifted values (inv0) must not be shadowed."""
    monkeypatch.setenv("SYMDL_PARALLEL_WORK", parallel)
    body = x[i] * (1 - a ** t) / (c + N) + inv0[i] * sp.sqrt(x[i] ** 2 + 1 / (1 - a ** t)) - (N - 1) * c
    kern = symdl.Formula(sp.Eq(y[i], body), name=f"hoisted_{parallel}").compile()
    source = kern.source(dtype)
    loop_at = source.index("for i in")
    assert "**" not in source[loop_at:source.index("\n\n", loop_at)], source  # the powers went first
    if parallel == "1":  # the parallel flavour splits [0, N) into parts, its powers hoisted above them too
        part_at = source.index("for _part in nb.prange(_parts):")
        assert "_parts = min(64, N)" in source
        assert "**" not in source[part_at:source.index("\n\n", part_at)], source
    rng = np.random.default_rng(4)
    xv, iv = rng.normal(size=300).astype(dtype), rng.normal(size=300).astype(dtype)
    av, tv, cv = 0.9, 3.0, 0.25
    want = xv.astype(np.float64) * (1 - av ** tv) / (cv + 300) + iv * np.sqrt(xv.astype(np.float64) ** 2 +
                                                                              1 / (1 - av ** tv)) - 299 * cv
    tol = 2e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(kern(x=xv, inv0=iv, a=av, t=tv, c=cv), want, rtol=tol, atol=tol)


def test_what_loops_change_stays_in_the_loop():
    """A value reading a loop index, a tensor or a name a Let in the loop binds is left in place;
    a nest without a loop is returned as it is."""
    j, s = sp.Symbol("j", integer=True), sp.Symbol("s", real=True)
    body = (Loop(j, 0, N, (Let(s, x[j] * a), Store("y", (j,), s * (a + c) + j * c + s ** t)), True),)
    out = hoist_invariants(body)
    lets = [st for st in out if isinstance(st, Let)]
    assert [st.value for st in lets] == [a + c]  # j * c reads the loop index, s ** t a Let of the loop
    loop = next(st for st in out if isinstance(st, Loop))
    assert loop.body[0] == Let(s, x[j] * a)
    assert loop.body[1].value == s * lets[0].name + j * c + s ** t
    flat = (Let(s, a ** t), Store("y", (0,), s))
    assert hoist_invariants(flat) == flat
