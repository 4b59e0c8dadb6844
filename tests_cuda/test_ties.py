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
