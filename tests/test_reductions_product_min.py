"""symdl.Product and symdl.Min as reductions over an index (issue 11).

The product's gradient is the product of the *other* factors, so it must stay right where a factor
is 0 (where P / x[k] divides by zero) and where two are (every gradient is then 0); Min is
-max(-x), with ties and the gradient going to the first minimiser. Each is checked against NumPy
written here, against sympy.diff (symdl.verify: symbolic, finite differences, reference vs
compiled), and for linear cost (tests/test_cost_contract.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from test_cost_contract import check as check_cost

import symdl

B, N, M = sp.symbols("B N M", integer=True, positive=True)
i, k, m = sp.Idx("i", B), sp.Idx("k", N), sp.Idx("m", M)
x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def product_formula():
    return symdl.Formula(sp.Eq(y[i], symdl.Product(x[i, k], k)), name="row_product")


def others(row: np.ndarray) -> np.ndarray:
    """The product of the other entries, element by element (no division)."""
    return np.array([np.prod(np.delete(row, j)) for j in range(row.size)])


def rows_with_zeros(rng, b, n, dtype):
    """Random rows; row 1 holds one zero, row 2 two zeros (when there are such rows)."""
    a = rng.uniform(0.5, 1.5, (b, n)) * rng.choice([-1.0, 1.0], (b, n))
    if b > 1:
        a[1, rng.integers(n)] = 0.0
    if b > 2 and n > 1:
        a[2, rng.choice(n, 2, replace=False)] = 0.0
    return a.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (4, 5), (5, 9)])
def test_product_and_its_gradient_match_numpy_with_zero_factors(shape, dtype):
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    a = rows_with_zeros(rng, *shape, dtype)
    g = rng.uniform(-1, 1, shape[0]).astype(dtype)
    kern = product_formula().compile()
    got = kern(x=a)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, a.prod(axis=1), rtol=TOL[dtype], atol=TOL[dtype])
    want = g[:, None] * np.stack([others(row.astype(np.float64)) for row in a])
    grad = kern.vjp(g, x=a)["x"]
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, want, rtol=TOL[dtype], atol=TOL[dtype])


def test_product_gradient_at_a_single_zero_is_the_product_of_the_others():
    a = np.array([[2.0, 0.0, 3.0, -1.0]])
    grad = product_formula().compile().vjp(np.ones(1), x=a)["x"]
    np.testing.assert_array_equal(grad, [[0.0, -6.0, 0.0, 0.0]])
    two = np.array([[2.0, 0.0, 3.0, 0.0]])
    np.testing.assert_array_equal(product_formula().compile().vjp(np.ones(1), x=two)["x"], np.zeros((1, 4)))


def test_product_verifies_symbolically_numerically_and_across_backends():
    summary = product_formula().verify()
    assert summary.symbolic > 0


def test_product_gradient_is_proven_on_the_zero_sets():
    # the symbolic check substitutes each `x == 0` test: a gradient wrong only at a zero factor fails
    from symdl.verify.symbolic import _zero
    a, b, c, g = sp.symbols("a b c g", real=True)
    at_zero_wrong = g * b * c * sp.Piecewise((1, sp.Ne(a, 0)), (0, True))
    assert not _zero(sp.expand(g * b * c - at_zero_wrong))
    right = g * sp.Piecewise((a * b * c / a, sp.Ne(a, 0)), (b * c, True))
    assert _zero(g * b * c - right)


def test_product_of_an_expression_over_two_indices():
    j, w = sp.Idx("j", B), sp.IndexedBase("w")
    f = symdl.Formula(sp.Eq(y[j], symdl.Product(x[j, k] + w[m], k, m)), name="prod2",
                      sizes={"B": 2, "N": 2, "M": 2})
    f.verify()
    rng = np.random.default_rng(1)
    a, ww, g = rng.uniform(-1, 1, (3, 4)), rng.uniform(-1, 1, 2), rng.uniform(-1, 1, 3)
    a[0, 1] = -ww[0]  # one zero factor in row 0
    factors = a[:, :, None] + ww[None, None, :]  # (B, N, M)
    kern = f.compile()
    np.testing.assert_allclose(kern(x=a, w=ww), factors.reshape(3, -1).prod(axis=1), rtol=1e-12, atol=1e-15)
    got = kern.vjp(g, x=a, w=ww)
    o = np.stack([others(row).reshape(4, 2) for row in factors.reshape(3, -1)])  # d y / d factor
    np.testing.assert_allclose(got["x"], g[:, None] * o.sum(axis=2), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(got["w"], (g[:, None, None] * o).sum(axis=(0, 1)), rtol=1e-10, atol=1e-15)


def test_cumulative_product_over_a_range_that_moves():
    xs = sp.IndexedBase("x", shape=(N,))
    n, q = sp.Idx("n", N), sp.Symbol("q", integer=True)
    f = symdl.Formula(sp.Eq(y[n], symdl.Product(xs[q], (q, 0, n))), name="cumprod", sizes={"N": 4})
    f.verify()
    a, g = np.array([2.0, 0.0, 3.0, -1.0, 0.5]), np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    kern = f.compile()
    np.testing.assert_allclose(kern(x=a), np.cumprod(a))
    want = [sum(g[r] * np.prod(np.delete(a[:r + 1], j)) for r in range(j, 5)) for j in range(5)]
    np.testing.assert_allclose(kern.vjp(g, x=a)["x"], want)


def test_sympy_product_is_accepted_as_symdl_product():
    f = symdl.Formula(sp.Eq(y[i], sp.Product(x[i, k], k)), name="sympy_product")
    assert isinstance(f.body, symdl.ReduceProduct)
    a = np.random.default_rng(2).uniform(-1, 1, (2, 3))
    np.testing.assert_allclose(f.compile()(x=a), a.prod(axis=1))


def min_formula():
    return symdl.Formula(sp.Eq(y[i], symdl.Min(x[i, k], k)), name="row_min")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 4), (6, 7)])
def test_min_and_its_gradient_match_numpy(shape, dtype):
    rng = np.random.default_rng(shape[1])
    a = rng.uniform(-1, 1, shape).astype(dtype)
    g = rng.uniform(-1, 1, shape[0]).astype(dtype)
    kern = min_formula().compile()
    np.testing.assert_array_equal(kern(x=a), a.min(axis=1))
    want = np.zeros(shape, dtype)
    want[np.arange(shape[0]), a.argmin(axis=1)] = g
    np.testing.assert_allclose(kern.vjp(g, x=a)["x"], want, rtol=TOL[dtype])


def test_min_ties_go_to_the_first_minimiser():
    a = np.array([[3.0, -1.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5]])
    grad = min_formula().compile().vjp(np.array([2.0, 5.0]), x=a)["x"]
    np.testing.assert_array_equal(grad, [[0.0, 2.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]])


def test_min_of_an_expression_verifies():
    # a min-distance objective (k-means' assignment): Σ_i min_m Σ_k (x[i,k] - c[m,k])²
    f = kmeans_min()
    f.verify(sizes={"B": 3, "N": 2, "M": 2})
    rng = np.random.default_rng(3)
    a, cc = rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, (3, 2))
    d = ((a[:, None, :] - cc[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(f.compile()(x=a, c=cc), d.min(axis=1).sum(), rtol=1e-12)
    near = d.argmin(axis=1)
    want_c = np.zeros_like(cc)
    for r, mm in enumerate(near):
        want_c[mm] -= 2 * (a[r] - cc[mm])
    np.testing.assert_allclose(f.compile().vjp(1.0, x=a, c=cc)["c"], want_c, rtol=1e-12)


def kmeans_min():
    c = sp.IndexedBase("c")
    return symdl.Formula(sp.Eq(sp.Symbol("loss"), sp.Sum(symdl.Min(sp.Sum((x[i, k] - c[m, k]) ** 2, k), m), i)),
                         name="kmeans_min")


@pytest.mark.parametrize("build", [product_formula, min_formula, kmeans_min])
def test_product_and_min_gradients_keep_the_forward_cost(build):
    # k-means: the arg-min of each row's distances is computed once per row (loops/invariant.py),
    # not once per gradient element (which cost M times the forward)
    check_cost(build(), {"B": 4, "N": 2, "M": 2})
