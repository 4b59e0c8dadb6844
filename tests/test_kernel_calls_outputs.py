"""Kernel calls, their results: a bad `out=` buffer is refused before any kernel runs, a good one
is filled and returned; good calls follow the inputs' dtype and match NumPy, forward and vjp."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symdl import Formula

# dense, sparse_ce: fixtures, the shared compiled kernels
from kernel_call_helpers import B, N, SENTINEL, ce_args, dense, dense_args, refused, sentinel, sparse_ce


def bias_formula() -> Formula:
    i, j = sp.Idx("i", B), sp.Idx("j", N)
    x, b, z = sp.IndexedBase("x"), sp.IndexedBase("b"), sp.IndexedBase("z")
    return Formula(sp.Eq(z[i, j], x[i, j] + b[j]), name="bias")


@pytest.fixture(scope="module")
def bias():
    return bias_formula().compile()


# -- out= -------------------------------------------------------------------------------------

@pytest.mark.parametrize("out", [
    sentinel((4, 3)), sentinel((2, 4)), sentinel((8,)), sentinel((4, 2), np.float32),
    sentinel((4, 2), np.int64),
], ids=["shape", "transposed", "flat", "float32", "int64"])
def test_out_wrong_shape_or_dtype(dense, out):
    before = out.copy()
    err = refused(lambda: dense(out=out, **dense_args()), "dense", "out")
    assert "(4, 2)" in str(err)
    np.testing.assert_array_equal(out, before)


def test_out_non_contiguous(dense):
    big = sentinel((4, 4))
    out = big[:, ::2]
    assert out.shape == (4, 2) and not out.flags.c_contiguous
    refused(lambda: dense(out=out, **dense_args()), "dense", "out")
    assert np.all(big == SENTINEL)


def test_out_fortran_order(dense):
    out = np.asfortranarray(sentinel((4, 2)))
    refused(lambda: dense(out=out, **dense_args()), "dense", "out")
    assert np.all(out == SENTINEL)


def test_out_not_an_array(dense):
    refused(lambda: dense(out=[[0.0] * 2] * 4, **dense_args()), "dense", "out")


def test_out_aliases_an_input(bias):
    xv, bv = np.arange(6.0).reshape(2, 3), np.ones(3)
    before = xv.copy()
    refused(lambda: bias(out=xv, x=xv, b=bv), "bias", "out")
    np.testing.assert_array_equal(xv, before)


def test_out_overlaps_an_input_view(bias):
    base = np.arange(12.0)
    xv, out = base[:6].reshape(2, 3), base[3:9].reshape(2, 3)
    refused(lambda: bias(out=out, x=xv, b=np.ones(3)), "bias", "out")
    np.testing.assert_array_equal(base, np.arange(12.0))


def test_out_scalar_output_wrong_shape(sparse_ce):
    out = sentinel((1,))
    refused(lambda: sparse_ce(out=out, **ce_args()), "sparse_ce", "out")
    assert out[0] == SENTINEL


def test_out_filled_and_returned(dense):
    args = dense_args()
    out = sentinel((4, 2))
    got = dense(out=out, **args)
    assert got is out
    np.testing.assert_allclose(out, args["x"] @ args["W"] + args["b"], rtol=1e-12)


# -- good calls -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_dense_values_and_dtype(dense, dtype, rtol):
    args = dense_args(bsz=5, n=7, m=3, dtype=dtype, seed=3)
    got = dense(**args)
    assert got.dtype == dtype and got.shape == (5, 3)
    ref = args["x"].astype(np.float64) @ args["W"].astype(np.float64) + args["b"].astype(np.float64)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_dense_vjp_values_and_dtype(dense, dtype, rtol):
    args = dense_args(bsz=5, n=7, m=3, dtype=dtype, seed=4)
    g = np.random.default_rng(5).standard_normal((5, 3)).astype(dtype)
    grads = dense.vjp(g, **args)
    x64, w64, g64 = (a.astype(np.float64) for a in (args["x"], args["W"], g))
    for name, ref in {"x": g64 @ w64.T, "W": x64.T @ g64, "b": g64.sum(axis=0)}.items():
        assert grads[name].dtype == dtype and grads[name].shape == args[name].shape
        np.testing.assert_allclose(grads[name], ref, rtol=rtol, atol=rtol)


def test_second_call_with_other_batch_size(dense):
    for bsz in (4, 9, 1, 4):
        args = dense_args(bsz=bsz, seed=bsz)
        got = dense(**args)
        assert got.shape == (bsz, 2)
        np.testing.assert_allclose(got, args["x"] @ args["W"] + args["b"], rtol=1e-12)


def test_second_call_with_other_dtype(dense):
    for dtype in (np.float32, np.float64, np.float32):
        args = dense_args(dtype=dtype)
        assert dense(**args).dtype == dtype


def test_non_contiguous_inputs_computed_correctly(dense):
    rng = np.random.default_rng(7)
    xt = rng.standard_normal((3, 4)).T          # (4, 3), Fortran order
    wv = rng.standard_normal((3, 4))[:, ::2]    # (3, 2), strided
    bv = rng.standard_normal(4)[::2]
    np.testing.assert_allclose(dense(x=xt, W=wv, b=bv), xt @ wv + bv, rtol=1e-12)


def test_sparse_ce_vjp_values(sparse_ce):
    args = ce_args(bsz=3, c=4, seed=11)
    g = 0.7
    got = sparse_ce.vjp(g, **args)
    assert set(got) == {"p"}
    want = np.zeros_like(args["p"])
    rows = np.arange(3)
    want[rows, args["t"]] = -g / (3 * args["p"][rows, args["t"]])
    np.testing.assert_allclose(got["p"], want, rtol=1e-12)
