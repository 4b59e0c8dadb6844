"""Dimensions used as values, and loop lengths the caller gives (issue 11).

`y = N·Σ_k a[k] + Σ_n b[n]` differentiates to grad_a[k] = N·grad_y, a formula that names N only as
a value: it must stay a dimension (bound from b by the program), not become a scalar input called
N. A length no input carries (`y[i] = x[0]·i`, i < N) is the caller's: `dims={"N": 7}` on the
kernel, its vjp and a Program, with the call's read checks applied to it.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symdl

K, N, L = sp.symbols("K N L", integer=True, positive=True)
k, n = sp.Idx("k", K), sp.Idx("n", N)
a, b, x, y = (sp.IndexedBase(s) for s in "a b x y".split())
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def dim_value_formula():
    return symdl.Formula(sp.Eq(sp.Symbol("y"), N * sp.Sum(a[k], k) + sp.Sum(b[n], n)), name="dim_value")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes", [(1, 1), (3, 4), (7, 2)])
def test_dimension_as_a_value_differentiates_through_a_program(sizes, dtype):
    rng = np.random.default_rng(sum(sizes))
    av, bv = rng.uniform(-1, 1, sizes[0]).astype(dtype), rng.uniform(-1, 1, sizes[1]).astype(dtype)
    f = dim_value_formula()
    prog = symdl.Program([f]).compile()
    np.testing.assert_allclose(prog(a=av, b=bv), sizes[1] * av.sum() + bv.sum(), rtol=TOL[dtype])
    for grads in (prog.vjp(dtype(2.0), a=av, b=bv), f.compile().vjp(2.0, a=av, b=bv)):
        np.testing.assert_allclose(grads["a"], np.full(sizes[0], 2.0 * sizes[1]), rtol=TOL[dtype])
        np.testing.assert_allclose(grads["b"], np.full(sizes[1], 2.0), rtol=TOL[dtype])


def test_dimension_as_a_value_stays_a_dimension_in_its_gradient():
    f = dim_value_formula()
    g = f.vjp()["a"]
    assert N in g.dims and "N" not in g.input_names
    f.verify()


def test_dimension_inside_a_nonlinear_body_verifies():
    # the mean of squares over a row, N as a divisor inside a log: every stage reads N as a length
    i = sp.Idx("i", L)
    f = symdl.Formula(sp.Eq(y[i], sp.log(1 + sp.Sum(x[i, n] ** 2, n) / N) * K + sp.Sum(a[k], k)),
                      name="dim_in_log")
    f.verify()
    rng = np.random.default_rng(0)
    xv, av = rng.uniform(-1, 1, (3, 5)), rng.uniform(-1, 1, 2)
    want = np.log(1 + (xv ** 2).mean(axis=1)) * 2 + av.sum()
    np.testing.assert_allclose(f.compile()(x=xv, a=av), want, rtol=1e-12)


def ramp_formula():
    i = sp.Idx("i", N)
    x1 = sp.IndexedBase("x", shape=(1,))
    return symdl.Formula(sp.Eq(y[i], x1[0] * i), name="ramp")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", [1, 7, 12])
def test_a_loop_length_given_at_call_time(length, dtype):
    kern = ramp_formula().compile()
    xv = np.array([1.5], dtype)
    got = kern(x=xv, dims={"N": length})
    assert got.dtype == dtype and got.shape == (length,)
    np.testing.assert_allclose(got, 1.5 * np.arange(length), rtol=TOL[dtype])
    g = np.random.default_rng(length).uniform(-1, 1, length).astype(dtype)
    grads = kern.vjp(g, x=xv, dims={"N": length})
    np.testing.assert_allclose(grads["x"], [np.dot(g, np.arange(length))], rtol=TOL[dtype])


def test_a_call_without_the_callers_length_names_it():
    with pytest.raises(ValueError, match=r"dimension N is not the length of any input axis; pass dims=\{'N'"):
        ramp_formula().compile()(x=np.ones(1))


def test_call_time_length_in_a_reduction_and_a_program():
    m = sp.Idx("m", N)
    f = symdl.Formula(sp.Eq(sp.Symbol("s"), sp.Sum(a[k] * m, k, m)), name="tri")  # Σ_k a[k] · N(N-1)/2
    f.verify(sizes={"K": 2, "N": 3})
    av = np.array([1.0, 2.0, -0.5])
    want = av.sum() * 7 * 6 / 2
    np.testing.assert_allclose(f.compile()(a=av, dims={"N": 7}), want)
    prog = symdl.Program([f]).compile()
    np.testing.assert_allclose(prog(a=av, dims={"N": 7}), want)
    np.testing.assert_allclose(prog.vjp(1.0, a=av, dims={"N": 7})["a"], np.full(3, 21.0))


def test_reads_are_checked_against_a_call_time_length():
    i = sp.Idx("i", N)
    xs = sp.IndexedBase("x", shape=(K,))
    kern = symdl.Formula(sp.Eq(y[i], xs[i + 1] - xs[i]), name="forward_diff").compile()
    xv = np.arange(6.0) ** 2
    np.testing.assert_allclose(kern(x=xv, dims={"N": 5}), np.diff(xv))
    with pytest.raises(ValueError, match="outside its length 6"):
        kern(x=xv, dims={"N": 6})


def test_a_length_given_and_carried_must_agree():
    i = sp.Idx("i", N)
    kern = symdl.Formula(sp.Eq(y[i], 2 * x[i]), name="double").compile()
    np.testing.assert_allclose(kern(x=np.ones(3), dims={"N": 3}), np.full(3, 2.0))
    with pytest.raises(ValueError, match="has length 3, but N = 4"):
        kern(x=np.ones(3), dims={"N": 4})
