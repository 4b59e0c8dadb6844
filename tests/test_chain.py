"""Chains (loops/chain.py, runtime/chain.py): a Program's formulas as one generated module, run by
symdl.nn forward and backward, against NumPy written here; and where a Program does not chain,
the formula-by-formula run it falls back to."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from symdl.declare import Formula, Program, ReduceMax
from symdl.formulas.activations import stable_softmax
from symdl.formulas.common import B, N, idx
from symdl.formulas.losses import clip, sparse_categorical_crossentropy
from symdl.loops.chain import lower_chain
from symdl.nn.graph import FormulaOp
from symdl.runtime.chain import ChainKernel, chain_kernel
from symdl.runtime.program import kernel_for

SHAPES = [(1, 1), (3, 5), (32, 10), (7, 130)]
DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-4, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}
i, j, k = idx("i", B), idx("j", N), idx("k", N)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def serial_functions(chain: ChainKernel, dtype) -> int:
    return chain.source(np.dtype(dtype).name).count("_serial(")  # definitions and the driver's call


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_forward_and_gradient_as_one_function_each(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    x = (rng.normal(size=shape) * 4).astype(dtype)
    g = rng.normal(size=shape).astype(dtype)
    op = FormulaOp(stable_softmax("x", "y"))
    env = op.forward(x=x)
    y = softmax(x.astype(np.float64))
    np.testing.assert_allclose(env["y"], y, **TOL[dtype])
    np.testing.assert_allclose(env["x_max"], x.max(1), **TOL[dtype])  # the intermediates are kept
    gx = op.backward(env, {"y": g}, ["x"])["x"]
    want = y * (g - (g * y).sum(1, keepdims=True))
    np.testing.assert_allclose(gx, want, **TOL[dtype])
    assert gx.dtype == dtype and env["y"].dtype == dtype
    forward, backward = op._chains[None], op._chains[("vjp", ("x",), False)]
    assert isinstance(forward, ChainKernel) and isinstance(backward, ChainKernel)
    assert forward._plans and backward._plans  # both ran (no fallback)
    # max, exp, sum, divide: one function; the eight gradient formulas: one function
    assert serial_functions(forward, dtype) == serial_functions(backward, dtype) == 2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,classes", [(1, 2), (5, 3), (32, 10)])
def test_clipped_cross_entropy_and_its_gradient(batch, classes, dtype):
    rng = np.random.default_rng(batch * classes)
    probs = rng.random((batch, classes)).astype(dtype)
    probs[0, 0], probs[-1, -1] = 1e-9, 1.0  # outside the clip on both sides
    t = rng.integers(0, classes, batch)
    t[0], t[-1] = 0, classes - 1
    op = FormulaOp(Program([clip("probs", "p", 2), sparse_categorical_crossentropy()], name="loss"))
    env = op.forward(probs=probs, t=t)
    lo, hi = dtype(1e-7), dtype(1 - 1e-7)  # the clip's bounds in the call's dtype
    p = np.clip(probs, lo, hi).astype(np.float64)
    rows = np.arange(batch)
    assert float(env["L"]) == pytest.approx(-np.log(p[rows, t]).mean(), rel=1e-5)
    gp = op.backward(env, {"L": 1.0}, ["probs"])["probs"]
    want = np.zeros((batch, classes))
    inside = (probs >= lo) & (probs <= hi)
    np.add.at(want, (rows, t), -1 / (batch * p[rows, t]))
    np.testing.assert_allclose(gp, np.where(inside, want, 0), **TOL[dtype])
    assert op._chains[None]._plans and op._chains[("vjp", ("probs",), False)]._plans


def test_a_label_out_of_range_is_refused_before_the_chain_runs():
    op = FormulaOp(Program([clip("probs", "p", 2), sparse_categorical_crossentropy()], name="loss"))
    probs = np.full((4, 3), 0.5, np.float32)
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy.*integer tensor t"):
        op.forward(probs=probs, t=np.array([0, 1, 3, 2]))


def test_locals_of_the_members_are_renamed_apart():
    a = sp.IndexedBase("a")
    x, s, y = sp.IndexedBase("x"), sp.IndexedBase("s"), sp.IndexedBase("y")
    prog = Program([Formula(sp.Eq(s[i], sp.Sum(x[i, k] * x[i, k], k)), name="sq"),
                    Formula(sp.Eq(a[i], sp.Sum(sp.exp(x[i, k]) * s[i], k)), name="ex"),
                    Formula(sp.Eq(y[i, j], x[i, j] * a[i] + s[i]), name="out")], name="three")
    kernels = [kernel_for(f) for f in prog.formulas]
    chained = lower_chain([kn.program for kn in kernels], "three")
    lets = [{str(st.name) for st in _walk(n.body) if hasattr(st, "name")} for n in chained.steps]
    assert len(lets) == 3 and all(lets[0:2]) and not lets[0] & lets[1]  # each member's accumulator its own
    assert serial_functions(chain_kernel(kernels, "three"), np.float64) == 2  # hence one function
    for shape in [(2, 3), (9, 4)]:
        xv = np.random.default_rng(3).normal(size=shape)
        env = FormulaOp(prog).forward(x=xv)
        sv = (xv * xv).sum(1)
        av = (np.exp(xv) * sv[:, None]).sum(1)
        np.testing.assert_allclose(env["y"], xv * av[:, None] + sv[:, None], rtol=1e-12)


def _walk(body):
    for st in body:
        yield st
        for inner in ("body", "then", "orelse"):
            yield from _walk(getattr(st, inner, ()))


def test_a_scalar_read_by_a_later_formula_does_not_chain_and_runs_formula_by_formula():
    x, y, s = sp.IndexedBase("x"), sp.IndexedBase("y"), sp.Symbol("s")
    prog = Program([Formula(sp.Eq(s, sp.Sum(x[i], i)), name="total"),
                    Formula(sp.Eq(y[i], x[i] * s), name="scaled")], name="scalar_chain")
    assert lower_chain([kernel_for(f).program for f in prog.formulas], "c") is None
    op = FormulaOp(prog)
    for dtype in DTYPES:
        xv = np.random.default_rng(0).normal(size=6).astype(dtype)
        env = op.forward(x=xv)
        np.testing.assert_allclose(env["y"], xv * xv.sum(), **TOL[dtype])
        gx = op.backward(env, {"y": np.ones(6, dtype)}, ["x"])["x"]
        np.testing.assert_allclose(gx, xv.sum() + xv.sum(), **TOL[dtype])  # d/dx_i Σ_j x_j S
    assert op._chains[None] is None


def test_members_binding_one_length_apart_fall_back():
    x, w, y, z = (sp.IndexedBase(n) for n in "xwyz")
    prog = Program([Formula(sp.Eq(y[i], 2 * x[i]), name="twice"),
                    Formula(sp.Eq(z[i], w[i] + 1), name="shifted")], name="apart")
    op = FormulaOp(prog)
    xv, wv = np.arange(3.0), np.arange(4.0)  # B is 3 for one formula and 4 for the other
    env = op.forward(x=xv, w=wv)
    np.testing.assert_allclose(env["z"], wv + 1)
    np.testing.assert_allclose(env["y"], 2 * xv)
    assert op._chains[None] is not None and op._chains[None]._plans  # tried, refused for these shapes


def test_two_arg_max_temporaries_of_one_name_are_renamed_apart():
    x, z, m1, m2, y = (sp.IndexedBase(n) for n in ("x", "z", "m1", "m2", "y"))
    prog = Program([Formula(sp.Eq(m1[i], ReduceMax(x[i, j], (j, 0, N - 1))), name="mx"),
                    Formula(sp.Eq(m2[i], ReduceMax(z[i, j], (j, 0, N - 1))), name="mz"),
                    Formula(sp.Eq(y[i], m1[i] * m2[i]), name="prod")], name="two_max")
    op = FormulaOp(prog)
    rng = np.random.default_rng(5)
    xv, zv = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    env = op.forward(x=xv, z=zv)
    np.testing.assert_allclose(env["y"], xv.max(1) * zv.max(1))
    g = op.backward(env, {"y": np.ones(4)}, ["x", "z"])
    want_x = np.zeros_like(xv)
    want_x[np.arange(4), xv.argmax(1)] = zv.max(1)
    np.testing.assert_allclose(g["x"], want_x)
    want_z = np.zeros_like(zv)
    want_z[np.arange(4), zv.argmax(1)] = xv.max(1)
    np.testing.assert_allclose(g["z"], want_z)
    backward = op._chains[("vjp", ("x", "z"), False)]  # two members' temporaries named inv0: renamed apart
    assert isinstance(backward, ChainKernel) and backward._plans
    temps = [t.name for t in backward.program.temps]
    assert len(temps) == len(set(temps)) == 2


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_loss_value_and_gradient_as_one_module(dtype):
    from symdl import nn
    loss = nn.losses.get("sparse_categorical_crossentropy")
    rng = np.random.default_rng(7)
    for batch, classes in [(3, 4), (32, 10)]:
        probs = softmax(rng.normal(size=(batch, classes))).astype(dtype)
        t = rng.integers(0, classes, batch)
        value, g = loss.value_and_grad(t, probs)
        rows = np.arange(batch)
        p = probs.astype(np.float64)
        assert value == pytest.approx(-np.log(p[rows, t]).mean(), rel=1e-5)
        want = np.zeros((batch, classes))
        want[rows, t] = -1 / (batch * p[rows, t])
        np.testing.assert_allclose(g, want, **TOL[dtype])
    whole = loss.op._chains[("vjp", (loss.pred_name,), True)]
    assert isinstance(whole, ChainKernel) and whole._plans  # clip, cross-entropy and both gradients
    assert serial_functions(whole, dtype) == 2
