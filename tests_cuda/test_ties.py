"""Exact ties on the cuda backend (issue 15): the conventions the README promises — relu'(0) = 0,
|x|'(0) = 0, Max ties to the first argument, max reductions and max pooling to the first
maximiser — in the reference evaluator and the cuda kernels, against values worked out by hand.
(tests/test_verify_blind_spots.py checks the same table on the cpu.)"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.formulas.pooling import pool2d
from symdl.reference import evaluate

B, N = sp.symbols("B N", integer=True, positive=True)


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def tie_cases():
    i, b = sp.Idx("i", N), sp.Idx("b", B)
    m = sp.Symbol("m", integer=True)
    x, a, c, y = (sp.IndexedBase(s) for s in ("x", "a", "c", "y"))
    xs = np.array([-1.0, 0.0, 2.0, 0.0])
    g = np.array([1.0, 2.0, 3.0, 4.0])
    yield (symdl.Formula(sp.Eq(y[i], symdl.relu(x[i])), name="cuda_tie_relu"), {"x": xs}, g,
           {"x": [0.0, 0.0, 3.0, 0.0]})
    yield (symdl.Formula(sp.Eq(y[i], sp.Abs(x[i])), name="cuda_tie_abs"), {"x": xs}, g,
           {"x": [-1.0, 0.0, 3.0, 0.0]})
    yield (symdl.Formula(sp.Eq(y[i], sp.Max(a[i], c[i])), name="cuda_tie_max2"),
           {"a": np.array([1.0, 0.0, -2.0, 5.0]), "c": np.array([1.0, 0.0, -3.0, 6.0])}, g,
           {"a": [1.0, 2.0, 3.0, 0.0], "c": [0.0, 0.0, 0.0, 4.0]})
    yield (symdl.Formula(sp.Eq(y[b], symdl.Max(x[b, m], (m, 0, N - 1))), name="cuda_tie_row_max"),
           {"x": np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])}, np.array([5.0, 7.0]),
           {"x": [[0.0, 5.0, 0.0, 0.0], [7.0, 0.0, 0.0, 0.0]]})
    yield (pool2d("max", name="cuda_tie_max_pool"), {"x": np.full((1, 2, 2, 1), 0.5)}, np.full((1, 1, 1, 1), 3.0),
           {"x": [[[[3.0], [0.0]], [[0.0], [0.0]]]]})


@pytest.mark.parametrize("case", list(tie_cases()), ids=lambda c: c[0].name)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_ties_follow_the_conventions_on_cuda(case, dtype):
    f, inputs, g, want = case
    inputs = {k: v.astype(dtype) for k, v in inputs.items()}
    g = g.astype(dtype)
    grads = f.vjp()
    got = f.compile(backend="cuda").vjp(g, **inputs)
    for name, expected in want.items():
        ref = evaluate(grads[name], {**inputs, f"grad_{f.output.name}": g})
        np.testing.assert_array_equal(ref, expected, err_msg=f"reference, {name}")
        np.testing.assert_array_equal(host(got[name]), np.asarray(expected, dtype=dtype), err_msg=f"cuda, {name}")


@pytest.mark.parametrize("pool,strides,padding", [((2, 2), None, "valid"), ((3, 3), (2, 2), "same"),
                                                  ((3, 3), (1, 1), "valid")])
def test_max_pooling_scatter_adds_overlapping_windows_without_races(pool, strides, padding):
    """The gradient scatters from each window's arg-max; overlapping windows that share one add
    into the same cell. On cuda one thread per batch element (each adds into its own image): the
    sums match NumPy's first-maximiser gradient exactly, with ties in most windows."""
    from symdl.backends.cuda.mapping import thread_map
    from symdl.loops import lower
    from symdl.loops.ir import Nest

    f = pool2d("max", pool, strides, padding, name="cuda_scatter_pool")
    scatter = next(s for s in lower(f.vjp()["x"]).steps if isinstance(s, Nest) and s.name == "scatter")
    assert [loop.var.name for loop in thread_map(scatter, f.dims).loops] == ["b"]
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, size=(3, 7, 6, 2)).astype(np.float64)
    G = rng.normal(size=host(f.compile(backend="cuda")(x=x)).shape)
    got = host(f.compile(backend="cuda").vjp(G, x=x)["x"])
    want = np.zeros_like(x)
    s = strides or pool
    oh, ow = G.shape[1:3]
    pt = max((oh - 1) * s[0] + pool[0] - x.shape[1], 0) // 2 if padding == "same" else 0
    pl = max((ow - 1) * s[1] + pool[1] - x.shape[2], 0) // 2 if padding == "same" else 0
    for b in range(x.shape[0]):
        for c in range(x.shape[3]):
            for i in range(oh):
                for j in range(ow):
                    r0, c0 = max(s[0] * i - pt, 0), max(s[1] * j - pl, 0)
                    win = x[b, r0:s[0] * i - pt + pool[0], c0:s[1] * j - pl + pool[1], c]
                    u, v = divmod(int(win.argmax()), win.shape[1])
                    want[b, r0 + u, c0 + v, c] += G[b, i, j, c]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
