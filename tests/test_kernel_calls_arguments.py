"""Kernel calls, their arguments: missing or unexpected names, ranks and shared dimensions,
dtypes, lists and scalars, non-finite values and vjp's upstream gradient are refused with a
ValueError naming the formula and the tensor, before any kernel runs (kernel_call_helpers.py)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

from symdl import Formula, Program

# dense, sparse_ce: fixtures, the shared compiled kernels
from kernel_call_helpers import (SENTINEL, N, ce_args, dense, dense_args, dense_formula, refused, sentinel,
                                 sparse_ce)


def sgd_formula() -> Formula:
    i = sp.Idx("i", N)
    w, g, w_new = sp.IndexedBase("w"), sp.IndexedBase("g"), sp.IndexedBase("w_new")
    return Formula(sp.Eq(w_new[i], w[i] - sp.Symbol("lr") * g[i]), name="sgd")


@pytest.fixture(scope="module")
def sgd():
    return sgd_formula().compile()


# -- which arguments --------------------------------------------------------------------------

def test_missing_input(dense):
    args = dense_args()
    del args["b"]
    out = sentinel((4, 2))
    refused(lambda: dense(out=out, **args), "dense", "b")
    assert np.all(out == SENTINEL)


def test_unexpected_input(dense):
    out = sentinel((4, 2))
    refused(lambda: dense(out=out, bias=np.zeros(2), **dense_args()), "dense", "bias")
    assert np.all(out == SENTINEL)


def test_missing_and_unexpected_input(dense):
    args = dense_args()
    args["WW"] = args.pop("W")
    refused(lambda: dense(**args), "dense", "W", "WW")


def test_program_missing_input():
    z = sp.IndexedBase("z")
    i = sp.Idx("i", N)
    f1 = Formula(sp.Eq(sp.IndexedBase("h")[i], sp.exp(z[i])), name="f1")
    f2 = Formula(sp.Eq(sp.IndexedBase("o")[i], sp.IndexedBase("h")[i] * sp.IndexedBase("s")[i]), name="f2")
    pk = Program([f1, f2], name="twostep").compile()
    with pytest.raises(ValueError, match=r"'twostep'.*\bs\b"):
        pk(z=np.zeros(3))
    np.testing.assert_allclose(pk(z=np.zeros(3), s=np.arange(3.0)), np.arange(3.0))


# -- ranks and shapes -------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((4, 3, 1)), np.zeros(())])
def test_wrong_rank(dense, bad):
    args = dense_args()
    args["x"] = bad
    out = sentinel((4, 2))
    err = refused(lambda: dense(out=out, **args), "dense", "x")
    assert "rank" in str(err)
    assert np.all(out == SENTINEL)


def test_shared_dimension_mismatch(dense):
    args = dense_args()
    args["x"], args["W"] = np.ones((4, 3)), np.ones((5, 2))
    out = sentinel((4, 2))
    err = refused(lambda: dense(out=out, **args), "dense", "x", "W")
    assert "3" in str(err) and "5" in str(err)
    assert np.all(out == SENTINEL)


def test_bias_length_mismatch(dense):
    args = dense_args()
    args["b"] = np.ones(3)
    out = sentinel((4, 2))
    refused(lambda: dense(out=out, **args), "dense", "b")
    assert np.all(out == SENTINEL)


def test_batch_mismatch_between_gathered_tensor_and_labels(sparse_ce):
    args = ce_args()
    args["t"] = np.array([0, 1, 2])
    out = sentinel(())
    refused(lambda: sparse_ce(out=out, **args), "sparse_ce", "t", "p")
    assert out == SENTINEL


# -- dtypes -----------------------------------------------------------------------------------

def test_float32_float64_mix(dense):
    args = dense_args()
    args["W"] = args["W"].astype(np.float32)
    out = sentinel((4, 2))
    err = refused(lambda: dense(out=out, **args), "dense", "W")
    assert "float32" in str(err) and "float64" in str(err)
    assert np.all(out == SENTINEL)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_integer_dtype_for_float_tensor(dense, dtype):
    args = dense_args()
    args["x"] = np.ones((4, 3), dtype=dtype)
    out = sentinel((4, 2))
    err = refused(lambda: dense(out=out, **args), "dense", "x")
    assert np.dtype(dtype).name in str(err)
    assert np.all(out == SENTINEL)


def test_integer_dtype_for_every_float_tensor(dense):
    args = {n: np.ones(a.shape, dtype=np.int64) for n, a in dense_args().items()}
    err = refused(lambda: dense(**args), "dense")
    assert "int64" in str(err) and re.search(r"'(x|W|b)'", str(err))


@pytest.mark.parametrize("dtype", [np.float16, np.complex128])
def test_unsupported_float_dtype(dense, dtype):
    args = {n: a.astype(dtype) for n, a in dense_args().items()}
    err = refused(lambda: dense(**args), "dense")
    assert np.dtype(dtype).name in str(err)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float_dtype_for_label_tensor(sparse_ce, dtype):
    args = ce_args()
    args["t"] = args["t"].astype(dtype)
    out = sentinel(())
    err = refused(lambda: sparse_ce(out=out, **args), "sparse_ce", "t")
    assert "integer" in str(err)
    assert out == SENTINEL


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8])
def test_integer_label_dtypes_accepted(sparse_ce, label_dtype):
    args = ce_args(label_dtype=label_dtype)
    want = -np.mean(np.log(args["p"][np.arange(4), args["t"]]))
    np.testing.assert_allclose(sparse_ce(**args), want, rtol=1e-12)


# -- finite values ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused_when_asked(dense, bad):
    args = dense_args()
    args["W"][1, 0] = bad
    out = sentinel((4, 2))
    err = refused(lambda: dense(out=out, check_finite=True, **args), "dense", "W")
    assert "NaN" in str(err) or "finite" in str(err)
    assert np.all(out == SENTINEL)


def test_non_finite_refused_by_kernel_option():
    kern = dense_formula().compile(check_finite=True)
    args = dense_args()
    args["x"][0, 0] = np.nan
    refused(lambda: kern(**args), "dense", "x")
    good = dense_args()
    np.testing.assert_allclose(kern(**good), good["x"] @ good["W"] + good["b"], rtol=1e-12)


def test_non_finite_upstream_gradient_refused_by_kernel_option():
    kern = dense_formula().compile(check_finite=True)
    g = np.ones((4, 2))
    g[0, 0] = np.inf
    refused(lambda: kern.vjp(g, **dense_args()), "grad_y")


def test_non_finite_accepted_by_default(dense):
    args = dense_args()
    args["x"][1, 2] = np.nan
    got = dense(**args)
    want = args["x"] @ args["W"] + args["b"]
    assert np.isnan(got[1]).all()
    np.testing.assert_allclose(np.delete(got, 1, axis=0), np.delete(want, 1, axis=0), rtol=1e-12)


# -- argument kinds ---------------------------------------------------------------------------

def test_list_input_refused(dense):
    args = dense_args()
    args["x"] = args["x"].tolist()
    out = sentinel((4, 2))
    err = refused(lambda: dense(out=out, **args), "dense", "x")
    assert "array" in str(err)
    assert np.all(out == SENTINEL)


@pytest.mark.parametrize("lr", [np.array([0.1, 0.2]), np.full((2, 2), 0.1), "0.1", None, [0.1]])
def test_scalar_input_not_a_number(sgd, lr):
    out = sentinel(3)
    refused(lambda: sgd(out=out, w=np.ones(3), g=np.ones(3), lr=lr), "sgd", "lr")
    assert np.all(out == SENTINEL)


@pytest.mark.parametrize("lr", [0.5, 1, np.float32(0.5), np.array(0.5), np.array([0.5])])
def test_scalar_input_number_forms_accepted(sgd, lr):
    w, g = np.arange(3.0), np.ones(3)
    np.testing.assert_allclose(sgd(w=w, g=g, lr=lr), w - float(np.asarray(lr).ravel()[0]) * g)


# -- vjp upstream gradient --------------------------------------------------------------------

@pytest.mark.parametrize("grad", [np.ones((2, 4)), np.ones((4, 2, 1)), np.ones(8), np.ones((4, 2), np.float32),
                                  np.ones((4, 2), np.int64), [[1.0, 1.0]] * 4],
                         ids=["transposed", "rank3", "flat", "float32", "int64", "list"])
def test_vjp_bad_upstream_gradient(dense, grad):
    with pytest.raises(ValueError) as info:
        dense.vjp(grad, **dense_args())
    msg = str(info.value)
    assert "'dense'" in msg
    assert "grad_y" in msg or "'y'" in msg or "upstream gradient" in msg, msg
    assert "(4, 2)" in msg


def test_vjp_bad_input_refused(dense):
    args = dense_args()
    args["W"] = np.ones((5, 2))
    refused(lambda: dense.vjp(np.ones((4, 2)), **args), "dense", "W")
