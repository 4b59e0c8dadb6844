"""Kernel calls, their reads: gathered labels and affine reads (convolutions) outside their tensor
are refused at call time, reads at the edges compute the right values, and the compiled kernels
never read out of bounds (Numba's boundscheck, in a subprocess)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

from symdl import Formula

# sparse_ce: a fixture, the shared compiled kernel
from kernel_call_helpers import SENTINEL, ce_args, refused, sentinel, sparse_ce

L, K = sp.symbols("L K", integer=True, positive=True)


def conv_formula(out_len=None, name="conv1d") -> Formula:
    """y[i] = Σ_m w[m] x[i + m]; the output length defaults to the valid one, L - K + 1."""
    m, i = sp.Idx("m", K), sp.Idx("i", L - K + 1 if out_len is None else out_len)
    w, y, x = sp.IndexedBase("w"), sp.IndexedBase("y"), sp.IndexedBase("x", shape=(L,))
    return Formula(sp.Eq(y[i], sp.Sum(w[m] * x[i + m], m)), name=name)


def conv_s2_formula() -> Formula:
    m, i = sp.Idx("m", K), sp.Idx("i", sp.floor((L - K) / 2) + 1)
    w, y, x = sp.IndexedBase("w"), sp.IndexedBase("y"), sp.IndexedBase("x", shape=(L,))
    return Formula(sp.Eq(y[i], sp.Sum(w[m] * x[2 * i + m], m)), name="conv1d_s2")


@pytest.fixture(scope="module")
def conv():
    return conv_formula().compile()


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

    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", SYMDL_CACHE_DIR=str(tmp_path / "cache"),
               SYMDL_PARALLEL_WORK=str(1 << 16))  # the two long convolutions run their parallel loops
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
