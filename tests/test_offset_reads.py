"""Reads at an offset of an index: the lengths they bind and the checks they get (issue 11).

`y[t] = s[t+1] - s[t]` with t < C - 1 reads s up to C - 1: s has length C (not C - 1, which the
lone s[t] alone would say). `y[b] = w[b]·w[B+b]` reads w up to 2B - 1: w has length 2B (packed gate
rows, concatenated parameters), so B = len(w) / 2, and an odd length is refused before any kernel
runs. Every case: values and gradients against NumPy written here, symdl.verify, and wrong lengths
refused with a message naming the tensor. Also the indexed initial state of a recurrence.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symdl

B, C, H, T, X = sp.symbols("B C H T X", integer=True, positive=True)
s, w, y, x, z = (sp.IndexedBase(n) for n in "s w y x z".split())
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def difference():
    t = sp.Idx("t", (0, C - 2))
    return symdl.Formula(sp.Eq(y[t], s[t + 1] - s[t]), name="difference")


def packed():
    b = sp.Idx("b", B)
    return symdl.Formula(sp.Eq(y[b], w[b] * w[B + b]), name="packed")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length", [2, 5, 11])
def test_output_range_an_expression_of_an_input_length(length, dtype):
    f = difference()
    assert f.input("s").shape == (C,)
    rng = np.random.default_rng(length)
    sv, g = rng.uniform(-1, 1, length).astype(dtype), rng.uniform(-1, 1, length - 1).astype(dtype)
    kern = f.compile()
    np.testing.assert_allclose(kern(s=sv), np.diff(sv), rtol=TOL[dtype])
    want = np.zeros(length)
    want[1:] += g
    want[:-1] -= g
    np.testing.assert_allclose(kern.vjp(g, s=sv)["s"], want, rtol=TOL[dtype], atol=TOL[dtype])


def test_difference_verifies_and_refuses_an_empty_output():
    difference().verify()
    with pytest.raises(ValueError, match="output axis 0 would have length"):
        difference().compile()(s=np.ones(1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("half", [1, 3, 8])
def test_packed_halves_bind_and_differentiate(half, dtype):
    f = packed()
    assert f.input("w").shape == (2 * B,)
    rng = np.random.default_rng(half)
    wv, g = rng.uniform(-1, 1, 2 * half).astype(dtype), rng.uniform(-1, 1, half).astype(dtype)
    kern = f.compile()
    np.testing.assert_allclose(kern(w=wv), wv[:half] * wv[half:], rtol=TOL[dtype])
    want = np.concatenate([g * wv[half:], g * wv[:half]])
    np.testing.assert_allclose(kern.vjp(g, w=wv)["w"], want, rtol=TOL[dtype])


def test_packed_verifies_and_refuses_an_odd_length():
    packed().verify()
    with pytest.raises(ValueError, match="'w' axis 0 has length 7, which is not of the form"):
        packed().compile()(w=np.ones(7))


def test_packed_with_a_declared_length():
    b = sp.Idx("b", B)
    wd = sp.IndexedBase("w", shape=(2 * B,))
    kern = symdl.Formula(sp.Eq(y[b], wd[b] + 2 * wd[B + b]), name="packed_declared").compile()
    np.testing.assert_allclose(kern(w=np.arange(6.0)), [6.0, 9.0, 12.0])


def test_four_packed_gates_of_a_weight_matrix():
    # Keras' LSTM kernel: (X, 4H), gates i, f, c, o at column offsets 0, H, 2H, 3H
    bb, j, xi = sp.Idx("b", B), sp.Idx("j", H), sp.Idx("xi", X)

    def gate(q):
        return sp.Sum(x[bb, xi] * w[xi, q * H + j], xi)

    f = symdl.Formula(sp.Eq(y[bb, j], symdl.sigmoid(gate(1)) * gate(2) + sp.tanh(gate(3)) * gate(0)),
                      name="gates", sizes={"B": 2, "H": 2, "X": 2})
    assert f.input("w").shape == (X, 4 * H)
    f.verify()
    rng = np.random.default_rng(5)
    xv, wv, g = rng.uniform(-1, 1, (3, 4)), rng.uniform(-1, 1, (4, 8)), rng.uniform(-1, 1, (3, 2))
    q = [xv @ wv[:, 2 * n: 2 * n + 2] for n in range(4)]
    sig = 1 / (1 + np.exp(-q[1]))
    kern = f.compile()
    np.testing.assert_allclose(kern(x=xv, w=wv), sig * q[2] + np.tanh(q[3]) * q[0], rtol=1e-12)
    dq = [g * np.tanh(q[3]), g * q[2] * sig * (1 - sig), g * sig, g * q[0] * (1 - np.tanh(q[3]) ** 2)]
    np.testing.assert_allclose(kern.vjp(g, x=xv, w=wv)["w"], np.concatenate([xv.T @ d for d in dq], axis=1),
                               rtol=1e-10)
    with pytest.raises(ValueError, match="'w' axis 1 has length 9"):
        kern(x=xv, w=np.ones((4, 9)))


def test_an_axis_read_only_at_offsets_is_as_long_as_its_last_read():
    t = sp.Idx("t", (1, T - 1))
    f = symdl.Formula(sp.Eq(sp.Symbol("r"), sp.Sum(x[t] * x[t - 1], t)), name="lag_one")
    assert f.input("x").shape == (T,)
    f.verify()
    xv = np.random.default_rng(6).uniform(-1, 1, 9)
    kern = f.compile()
    np.testing.assert_allclose(kern(x=xv), np.dot(xv[1:], xv[:-1]), rtol=1e-12)
    want = np.zeros(9)
    want[:-1] += xv[1:]
    want[1:] += xv[:-1]
    np.testing.assert_allclose(kern.vjp(1.0, x=xv)["x"], want, rtol=1e-12)


def test_zero_padded_reads_keep_the_tensors_length():
    # a zero-padded tensor is read past its end on purpose: offsets there do not lengthen it
    t = sp.Idx("t", T)
    f = symdl.Formula(sp.Eq(y[t], x[t + 1] - x[t]), name="padded_diff", zero_padded=("x",))
    assert f.input("x").shape == (T,)
    np.testing.assert_allclose(f.compile()(x=np.array([1.0, 4.0, 9.0])), [3.0, 5.0, -9.0])


def test_incomparable_reads_bind_nothing_new():
    # w[b] and w[h + 1]: neither end is provably the last (B against H + 1), so w binds B only and
    # the call's read check refuses what does not fit
    b, h = sp.Idx("b", B), sp.Idx("h", H)
    f = symdl.Formula(sp.Eq(y[b], w[b] * sp.Sum(z[h] * w[h + 1], h)), name="incomparable")
    assert f.input("w").shape == (B,)
    np.testing.assert_allclose(f.compile()(w=np.arange(4.0), z=np.ones(3)), np.arange(4.0) * 6)
    with pytest.raises(ValueError, match="'w' is read at axis 0 with h \\+ 1 from 1 to 4, outside its length 4"):
        f.compile()(w=np.ones(4), z=np.ones(4))


def test_indexed_initial_state_is_refused_at_declaration():
    b, t = sp.Idx("b", B), sp.Idx("t", T)
    h, h0 = sp.IndexedBase("h"), sp.IndexedBase("h0")
    body = sp.tanh(h[t - 1, b] + x[t, b])
    with pytest.raises(symdl.FormulaError, match=r"indexed read; pass the tensor itself, initial=\{'h': h0\}"):
        symdl.Formula(sp.Eq(h[t, b], body), name="rnn", initial={"h": h0[b]})
    f = symdl.Formula(sp.Eq(h[t, b], body), name="rnn", initial={"h": h0})  # what the error says to write
    xv, hv = np.random.default_rng(7).uniform(-1, 1, (4, 3)), np.random.default_rng(8).uniform(-1, 1, 3)
    want, prev = [], hv
    for step in range(4):
        prev = np.tanh(prev + xv[step])
        want.append(prev)
    np.testing.assert_allclose(f.compile()(x=xv, h0=hv), np.array(want), rtol=1e-12)
