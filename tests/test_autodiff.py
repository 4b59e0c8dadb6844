"""Structure of derived gradients: delta elimination, guards as loop bounds, cost, second order."""
import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.loops import lower, trip_count

L, K = sp.symbols("L K", integer=True, positive=True)
x = sp.IndexedBase("x", shape=(L,))
w, y = sp.IndexedBase("w"), sp.IndexedBase("y")
m = sp.Idx("m", K)


def conv(stride: int, dilation: int = 1) -> symdl.Formula:
    i = sp.Idx("i", (L - dilation * (K - 1) - 1) // stride + 1)
    return symdl.Formula(sp.Eq(y[i], sp.Sum(w[m] * x[stride * i + dilation * m], m)),
                         name=f"conv_s{stride}_d{dilation}")


def numpy_conv_grad_x(g, wv, n, stride, dilation):
    gx = np.zeros(n)
    for i in range(len(g)):
        for k in range(len(wv)):
            gx[stride * i + dilation * k] += g[i] * wv[k]
    return gx


@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2), (2, 3), (3, 2)])
def test_conv_input_gradient_has_no_delta_and_matches_numpy(stride, dilation):
    f = conv(stride, dilation)
    gx = f.vjp()["x"]
    assert not gx.body.has(sp.KroneckerDelta)
    rng = np.random.default_rng(stride * 10 + dilation)
    n, k = 23, 4
    xv, wv = rng.standard_normal(n), rng.standard_normal(k)
    kern = f.compile()
    g = rng.standard_normal(kern(x=xv, w=wv).shape)
    got = kern.vjp(g, x=xv, w=wv)["x"]
    np.testing.assert_allclose(got, numpy_conv_grad_x(g, wv, n, stride, dilation), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_input_gradient_costs_what_the_forward_costs(stride):
    """O(len(x) · len(w)) trips, and linear in len(x): never a loop over all index pairs."""
    f = conv(stride)
    grad = lower(f.vjp()["x"])
    for n in (200, 400, 800):
        trips = trip_count(grad, {"L": n, "K": 5})
        assert trips <= 2 * n * 5, (n, trips)
    assert trip_count(grad, {"L": 800, "K": 5}) < 2.2 * trip_count(grad, {"L": 400, "K": 5})
    forward = trip_count(lower(f), {"L": 800, "K": 5})
    assert trip_count(grad, {"L": 800, "K": 5}) <= 3 * forward


def test_dense_gradients_are_matrix_products():
    B, N, M = sp.symbols("B N M", integer=True, positive=True)
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    X, W, b = map(sp.IndexedBase, "x W b".split())
    dense = symdl.Formula(sp.Eq(y[i, j], sp.Sum(X[i, k] * W[k, j], k) + b[j]), name="dense")
    g = dense.vjp()
    from symdl.loops.ir import MatMul
    assert [type(s) for s in lower(g["x"]).steps] == [MatMul]
    assert [type(s) for s in lower(g["W"]).steps] == [MatMul]
    assert str(g["b"].body) == "Sum(grad_y[i, j], (i, 0, B - 1))"


def test_second_order_gradients_verify():
    gx = conv(2).vjp()["x"]
    sizes = {"L": 9, "K": 3}
    assert symdl.verify.symbolic(gx, sizes=sizes) > 0
    assert symdl.verify.numeric(gx, sizes=sizes) < 1e-6
    assert symdl.verify.backends(gx, sizes=sizes) < 2e-4


def test_reduction_under_a_function_is_computed_once_per_row():
    B, N = sp.symbols("B N", integer=True, positive=True)
    i, k = sp.Idx("i", B), sp.Idx("k", N)
    X = sp.IndexedBase("x")
    lse = symdl.Formula(sp.Eq(y[i], sp.log(sp.Sum(sp.exp(X[i, k]), k))), name="lse")
    grad = lower(lse.vjp()["x"])
    # the row sum is hoisted out of the element loop: B·N for the sum + B·N for the elements
    assert trip_count(grad, {"B": 50, "N": 40}) <= 2 * 50 * 40 + 50
    assert symdl.verify.numeric(lse) < 1e-6


def test_parity_guard_for_stride_without_unit_coefficient():
    """x[2 i] read at stride 2 with no other index: odd positions get zero gradient."""
    n = sp.Symbol("n", integer=True, positive=True)
    xs = sp.IndexedBase("x", shape=(2 * n,))
    i = sp.Idx("i", n)
    f = symdl.Formula(sp.Eq(y[i], xs[2 * i] ** 2), name="even")
    kern = f.compile()
    xv = np.arange(1.0, 9.0)
    g = np.ones(4)
    got = kern.vjp(g, x=xv)["x"]
    want = np.zeros(8)
    want[::2] = 2 * xv[::2]
    np.testing.assert_array_equal(got, want)


def test_program_gradient_sums_contributions_of_a_tensor_read_twice():
    B = sp.Symbol("B", integer=True, positive=True)
    i = sp.Idx("i", B)
    a, u, v, out = map(sp.IndexedBase, "a u v out".split())
    prog = symdl.Program([
        symdl.Formula(sp.Eq(u[i], sp.tanh(a[i])), name="u"),
        symdl.Formula(sp.Eq(v[i], a[i] * u[i]), name="v"),
        symdl.Formula(sp.Eq(out[i], u[i] + v[i] ** 2), name="out"),
    ], name="diamond")
    assert symdl.verify.symbolic(prog) > 0
    assert symdl.verify.numeric(prog) < 1e-6
    assert symdl.verify.backends(prog) < 2e-4
