"""Kernel calls: every bad call is refused with a ValueError naming the formula and the tensor,
before any kernel runs; good calls follow the inputs' dtype and match NumPy.

"Before any kernel runs" is checked by passing a preallocated `out=` filled with a sentinel
(or an input as `out=`) and asserting it is untouched after the refusal.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

from symdl import Formula, Program

B, N, M, C, L, K = sp.symbols("B N M C L K", integer=True, positive=True)
SENTINEL = 7.25


# -- formulas under test (defined here so catalog edits do not move these tests) ----------------

def dense_formula() -> Formula:
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, b, y = (sp.IndexedBase(n) for n in "x W b y".split())
    return Formula(sp.Eq(y[i, j], sp.Sum(x[i, k] * W[k, j], k) + b[j]), name="dense")


def sparse_ce_formula() -> Formula:
    bb = sp.Idx("b", B)
    p, t = sp.IndexedBase("p", shape=(B, C)), sp.IndexedBase("t", integer=True)
    return Formula(sp.Eq(sp.Symbol("L"), -sp.Sum(sp.log(p[bb, t[bb]]), bb) / B), name="sparse_ce")


def conv_formula(out_len=None, name="conv1d") -> Formula:
    """y[i] = Σ_m w[m] x[i + m]; the output length defaults to the valid one, L - K + 1."""
    m, i = sp.Idx("m", K), sp.Idx("i", L - K + 1 if out_len is None else out_len)
    w, y, x = sp.IndexedBase("w"), sp.IndexedBase("y"), sp.IndexedBase("x", shape=(L,))
    return Formula(sp.Eq(y[i], sp.Sum(w[m] * x[i + m], m)), name=name)


def conv_s2_formula() -> Formula:
    m, i = sp.Idx("m", K), sp.Idx("i", sp.floor((L - K) / 2) + 1)
    w, y, x = sp.IndexedBase("w"), sp.IndexedBase("y"), sp.IndexedBase("x", shape=(L,))
    return Formula(sp.Eq(y[i], sp.Sum(w[m] * x[2 * i + m], m)), name="conv1d_s2")


def sgd_formula() -> Formula:
    i = sp.Idx("i", N)
    w, g, w_new = sp.IndexedBase("w"), sp.IndexedBase("g"), sp.IndexedBase("w_new")
    return Formula(sp.Eq(w_new[i], w[i] - sp.Symbol("lr") * g[i]), name="sgd")


def bias_formula() -> Formula:
    i, j = sp.Idx("i", B), sp.Idx("j", N)
    x, b, z = sp.IndexedBase("x"), sp.IndexedBase("b"), sp.IndexedBase("z")
    return Formula(sp.Eq(z[i, j], x[i, j] + b[j]), name="bias")


@pytest.fixture(scope="module")
def dense():
    return dense_formula().compile()


@pytest.fixture(scope="module")
def sparse_ce():
    return sparse_ce_formula().compile()


@pytest.fixture(scope="module")
def conv():
    return conv_formula().compile()


@pytest.fixture(scope="module")
def sgd():
    return sgd_formula().compile()


@pytest.fixture(scope="module")
def bias():
    return bias_formula().compile()


def dense_args(bsz=4, n=3, m=2, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((bsz, n)).astype(dtype),
            "W": rng.standard_normal((n, m)).astype(dtype),
            "b": rng.standard_normal(m).astype(dtype)}


def ce_args(bsz=4, c=5, seed=0, label_dtype=np.int64):
    rng = np.random.default_rng(seed)
    return {"p": rng.uniform(0.05, 1.0, (bsz, c)), "t": rng.integers(0, c, bsz).astype(label_dtype)}


def sentinel(shape, dtype=np.float64):
    return np.full(shape, SENTINEL, dtype=dtype)


def refused(call, formula: str, *tensors: str, **kwargs) -> ValueError:
    """`call()` raises ValueError whose message names the formula and each tensor (quoted or as a
    whole word)."""
    with pytest.raises(ValueError) as info:
        call(**kwargs)
    msg = str(info.value)
    assert repr(formula) in msg, f"formula {formula!r} missing from: {msg}"
    for t in tensors:
        assert re.search(rf"(?<![\w.]){re.escape(t)}(?!\w)", msg), f"tensor {t!r} missing from: {msg}"
    return info.value


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


# -- gathers and affine reads -----------------------------------------------------------------

@pytest.mark.parametrize("bad_label", [5, -1, 100])
def test_labels_out_of_range(sparse_ce, bad_label):
    args = ce_args(c=5)
    args["t"][2] = bad_label
    out = sentinel(())
    refused(lambda: sparse_ce(out=out, **args), "sparse_ce", "t", "p")
    assert out == SENTINEL


def test_labels_out_of_range_in_vjp(sparse_ce):
    args = ce_args(c=5)
    args["t"][0] = 5
    refused(lambda: sparse_ce.vjp(1.0, **args), "sparse_ce", "t")


def test_labels_at_both_edges_accepted(sparse_ce):
    args = ce_args(c=5)
    args["t"][:] = [0, 4, 0, 4]
    want = -np.mean(np.log(args["p"][np.arange(4), args["t"]]))
    np.testing.assert_allclose(sparse_ce(**args), want, rtol=1e-12)


@pytest.mark.parametrize("length, taps", [(2, 3), (3, 5), (1, 2)])
def test_conv_kernel_longer_than_signal(conv, length, taps):
    # L - K + 1 <= 0: no valid output; the error must say which tensors are too small
    err = refused(lambda: conv(x=np.ones(length), w=np.ones(taps)), "conv1d", "x", "w")
    assert str(length) in str(err) and str(taps) in str(err)


def test_conv_s2_kernel_longer_than_signal():
    kern = conv_s2_formula().compile()
    refused(lambda: kern(x=np.ones(2), w=np.ones(4)), "conv1d_s2", "x", "w")


@pytest.mark.parametrize("length, taps", [(6, 3), (5, 5), (4, 1)])
def test_conv_values_at_edges(conv, length, taps):
    rng = np.random.default_rng(length * 10 + taps)
    xv, wv = rng.standard_normal(length), rng.standard_normal(taps)
    np.testing.assert_allclose(conv(x=xv, w=wv), np.correlate(xv, wv, "valid"), rtol=1e-12)


def test_output_range_too_long_overflows_read():
    # y[i] for i < L reads x[i + m] up to L + K - 2: past x's end whenever K > 1
    kern = conv_formula(out_len=L, name="conv_long").compile()
    out = sentinel(6)
    err = refused(lambda: kern(out=out, x=np.ones(6), w=np.ones(3)), "conv_long", "x")
    assert "6" in str(err)
    assert np.all(out == SENTINEL)


def test_output_range_too_long_is_fine_when_no_overflow():
    kern = conv_formula(out_len=L, name="conv_long").compile()
    xv = np.arange(6.0)
    np.testing.assert_allclose(kern(x=xv, w=np.array([2.0])), 2.0 * xv)


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


# -- no out-of-bounds access, checked by Numba itself ------------------------------------------

_BOUNDSCHECK_SCRIPT = textwrap.dedent('''
    import json, sys
    import numba, numpy as np, sympy as sp
    from symdl import Formula

    # the check must be live: a plain out-of-bounds read has to raise here
    assert numba.config.BOUNDSCHECK, "NUMBA_BOUNDSCHECK not in effect"
    @numba.njit
    def _probe(a, i):
        return a[i]
    try:
        _probe(np.zeros(2), 5)
    except IndexError:
        pass
    else:
        sys.exit("bounds checking is not active")

    L, K, B, C = sp.symbols("L K B C", integer=True, positive=True)
    m = sp.Idx("m", K)
    w, y, x = sp.IndexedBase("w"), sp.IndexedBase("y"), sp.IndexedBase("x", shape=(L,))
    i1, i2 = sp.Idx("i", L - K + 1), sp.Idx("i", sp.floor((L - K) / 2) + 1)
    convs = {1: Formula(sp.Eq(y[i1], sp.Sum(w[m] * x[i1 + m], m)), name="conv_s1").compile(),
             2: Formula(sp.Eq(y[i2], sp.Sum(w[m] * x[2 * i2 + m], m)), name="conv_s2").compile()}
    bb = sp.Idx("b", B)
    p, t = sp.IndexedBase("p", shape=(B, C)), sp.IndexedBase("t", integer=True)
    ce = Formula(sp.Eq(sp.Symbol("L"), -sp.Sum(sp.log(p[bb, t[bb]]), bb) / B), name="sce").compile()

    data = np.load(sys.argv[1])
    results = {}
    for key in sorted({k.rsplit("_", 1)[0] for k in data.files}):
        kind = key.split("_")[0]
        if kind == "conv":
            stride = int(key.split("_")[1][1:])
            xv, wv, gv = data[key + "_x"], data[key + "_w"], data[key + "_g"]
            yv = convs[stride](x=xv, w=wv)
            gr = convs[stride].vjp(gv, x=xv, w=wv)
            results[key] = {"y": yv.tolist(), "gx": gr["x"].tolist(), "gw": gr["w"].tolist()}
        else:
            pv, tv, gv = data[key + "_p"], data[key + "_t"], float(data[key + "_g"])
            results[key] = {"L": float(ce(p=pv, t=tv)), "gp": ce.vjp(gv, p=pv, t=tv)["p"].tolist()}
    print(json.dumps(results))
''')


def _conv_ref(xv, wv, gv, stride):
    n = (len(xv) - len(wv)) // stride + 1
    pos = stride * np.arange(n)[:, None] + np.arange(len(wv))[None, :]   # (n, K) read positions
    y = (xv[pos] * wv[None, :]).sum(axis=1)
    gx = np.zeros_like(xv)
    np.add.at(gx, pos, gv[:, None] * wv[None, :])
    gw = (gv[:, None] * xv[pos]).sum(axis=0)
    return y, gx, gw


def test_no_out_of_bounds_under_boundscheck(tmp_path):
    rng = np.random.default_rng(2024)
    data = {}
    conv_cases = [(1, 5, 5), (1, 5, 1), (1, 1, 1), (1, 9, 4), (2, 5, 5), (2, 5, 1), (2, 6, 1),
                  (2, 7, 3), (2, 8, 3), (2, 2, 1), (1, 40000, 3), (2, 60001, 3)]  # last two: parallel loops
    for s, n, taps in conv_cases:
        key = f"conv_s{s}_L{n}K{taps}"
        data[key + "_x"], data[key + "_w"] = rng.standard_normal(n), rng.standard_normal(taps)
        data[key + "_g"] = rng.standard_normal((n - taps) // s + 1)
    ce_cases = [(1, 1, [0]), (3, 1, [0, 0, 0]), (4, 5, [0, 4, 4, 0]), (2, 3, [2, 1])]
    for bsz, c, labels in ce_cases:
        key = f"ce_B{bsz}C{c}"
        data[key + "_p"] = rng.uniform(0.05, 1.0, (bsz, c))
        data[key + "_t"] = np.array(labels, dtype=np.int64)
        data[key + "_g"] = np.array(rng.uniform(0.5, 1.5))
    np.savez(tmp_path / "inputs.npz", **data)

    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", SYMDL_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", _BOUNDSCHECK_SCRIPT, str(tmp_path / "inputs.npz")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stderr[-4000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])

    for s, n, taps in conv_cases:
        key = f"conv_s{s}_L{n}K{taps}"
        y, gx, gw = _conv_ref(data[key + "_x"], data[key + "_w"], data[key + "_g"], s)
        got = results[key]
        np.testing.assert_allclose(got["y"], y, rtol=1e-10, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(got["gx"], gx, rtol=1e-10, atol=1e-12, err_msg=key)
        np.testing.assert_allclose(got["gw"], gw, rtol=1e-10, atol=1e-10, err_msg=key)
    for bsz, c, labels in ce_cases:
        key = f"ce_B{bsz}C{c}"
        pv, tv, g = data[key + "_p"], data[key + "_t"], float(data[key + "_g"])
        rows = np.arange(bsz)
        gp = np.zeros_like(pv)
        gp[rows, tv] = -g / (bsz * pv[rows, tv])
        np.testing.assert_allclose(results[key]["L"], -np.mean(np.log(pv[rows, tv])), rtol=1e-12, err_msg=key)
        np.testing.assert_allclose(results[key]["gp"], gp, rtol=1e-12, err_msg=key)
    assert len(results) == len(conv_cases) + len(ce_cases)
