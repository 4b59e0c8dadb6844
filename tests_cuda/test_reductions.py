"""symdl.Product and symdl.Min on the cuda backend (issue 11), against NumPy written here: a product
with zero factors (its gradient is the product of the others), a minimum with ties (the gradient to
the first minimiser); and the new binding forms (a call-time length, packed halves) on cuda."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symdl

B, N = sp.symbols("B N", integer=True, positive=True)
i, k = sp.Idx("i", B), sp.Idx("k", N)
x, y, w = sp.IndexedBase("x"), sp.IndexedBase("y"), sp.IndexedBase("w")
TOL = {np.float32: 2e-5, np.float64: 1e-12}


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def others(row):
    return np.array([np.prod(np.delete(row, j)) for j in range(row.size)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_product_with_zero_factors_on_cuda(dtype):
    f = symdl.Formula(sp.Eq(y[i], symdl.Product(x[i, k], k)), name="cuda_row_product")
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.5, (4, 5)) * rng.choice([-1.0, 1.0], (4, 5))
    a[1, 2] = 0.0
    a[2, [0, 3]] = 0.0
    a = a.astype(dtype)
    g = rng.uniform(-1, 1, 4).astype(dtype)
    kern = f.compile(backend="cuda")
    np.testing.assert_allclose(host(kern(x=a)), a.prod(axis=1), rtol=TOL[dtype], atol=TOL[dtype])
    want = g[:, None] * np.stack([others(r.astype(np.float64)) for r in a])
    np.testing.assert_allclose(host(kern.vjp(g, x=a)["x"]), want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_min_with_ties_on_cuda(dtype):
    f = symdl.Formula(sp.Eq(y[i], symdl.Min(x[i, k], k)), name="cuda_row_min")
    a = np.array([[3.0, -1.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5], [0.1, 0.2, -0.3, 0.4]], dtype)
    g = np.array([2.0, 5.0, -1.0], dtype)
    kern = f.compile(backend="cuda")
    np.testing.assert_array_equal(host(kern(x=a)), a.min(axis=1))
    want = np.zeros_like(a)
    want[[0, 1, 2], [1, 0, 2]] = g
    np.testing.assert_array_equal(host(kern.vjp(g, x=a)["x"]), want)


def test_product_and_min_verify_on_cuda():
    for body, name in ((symdl.Product(1 + x[i, k], k), "cuda_verify_product"),
                       (symdl.Min(x[i, k] ** 2, k), "cuda_verify_min")):
        symdl.Formula(sp.Eq(y[i], body), name=name).verify(backend="cuda")


def test_call_time_length_and_packed_halves_on_cuda():
    x1 = sp.IndexedBase("x", shape=(1,))
    ramp = symdl.Formula(sp.Eq(y[i], x1[0] * i), name="cuda_ramp").compile(backend="cuda")
    np.testing.assert_allclose(host(ramp(x=np.array([2.0]), dims={"B": 5})), 2.0 * np.arange(5))
    packed = symdl.Formula(sp.Eq(y[i], w[i] * w[B + i]), name="cuda_packed").compile(backend="cuda")
    wv = np.arange(1.0, 7.0)
    np.testing.assert_allclose(host(packed(w=wv)), wv[:3] * wv[3:])
    np.testing.assert_allclose(host(packed.vjp(np.ones(3), w=wv)["w"]), np.concatenate([wv[3:], wv[:3]]))
