"""Batched contractions on the cpu (passes/contraction.py `_match_batched`, blas.py's batched
GEMM) by class: output indices both operands read (attention's batch and head), with every order
of batch, row, column and summed indices in each operand and in the output; each kernel against
NumPy einsum written here, at sizes where the GEMM runs and where the loops do, gradients against
einsum, and the library call checked in the lowered IR so the path cannot silently fall back."""
import itertools

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.backends.cpu import blas, gemm
from symdl.formulas.attention import keras_multi_head_attention
from symdl.loops.ir import Branch, Contract
from symdl.passes.contraction import BATCHED_MIN_WORK

LETTERS = "pqrstuvw"
TOL = {"float32": 2e-4, "float64": 1e-11}


def _steps(steps, dims):
    """The steps a call at `dims` runs (a Branch's side its condition picks)."""
    out = []
    for s in steps:
        if isinstance(s, Branch):
            take = bool(s.cond.subs({sp.Symbol(k, integer=True, positive=True): v for k, v in dims.items()}))
            out += _steps(s.then_steps if take else s.else_steps, dims)
        else:
            out.append(s)
    return out


def _case(seed: int):
    """1-2 batch, row, column and summed indices; each operand's axes and the output's in a random
    order; a constant factor or none."""
    rng = np.random.default_rng(seed)
    nb, nr, nc, ns = rng.integers(1, 3, size=4)
    names = iter(LETTERS)
    batch, rows, cols, sums = ([next(names) for _ in range(n)] for n in (nb, nr, nc, ns))
    a_axes = list(rng.permutation(batch + rows + sums))
    b_axes = list(rng.permutation(batch + sums + cols))
    out_axes = list(rng.permutation(batch + rows + cols))
    return batch, rows, cols, sums, a_axes, b_axes, out_axes, bool(rng.integers(2))


def _formula(a_axes, b_axes, out_axes, sums, scaled, name):
    idx = {n: sp.Idx(n, sp.Symbol(f"N{n}", integer=True, positive=True)) for n in a_axes + b_axes}
    A, Bt, Y = sp.IndexedBase("A"), sp.IndexedBase("Bt"), sp.IndexedBase("Y")
    body = A[[idx[n] for n in a_axes]] * Bt[[idx[n] for n in b_axes]] * (sp.Rational(3, 2) if scaled else 1)
    return symdl.Formula(sp.Eq(Y[[idx[n] for n in out_axes]], sp.Sum(body, *[idx[n] for n in sums])), name=name)


def _lengths(batch, rows, cols, sums, rng, large: bool) -> dict:
    """Lengths 1..3 (every product below BATCHED_MIN_WORK: the loops) or with each product's
    m·n·k at least BATCHED_MIN_WORK (the GEMM)."""
    if not large:
        return {n: int(rng.integers(1, 4)) for n in batch + rows + cols + sums}
    lengths = {n: int(rng.integers(1, 3)) for n in batch}
    for group in (rows, cols, sums):
        for n in group:
            lengths[n] = int(rng.integers(17 // len(group) + 1, 24 // len(group) + 2))
    return lengths


@pytest.mark.parametrize("seed, dtype, large", list(itertools.product(range(10), ["float32", "float64"],
                                                                      [False, True])))
def test_batched_contraction_equals_einsum(seed, dtype, large):
    batch, rows, cols, sums, a_axes, b_axes, out_axes, scaled = _case(seed)
    f = _formula(a_axes, b_axes, out_axes, sums, scaled, f"batched_{seed}")
    rng = np.random.default_rng(200 + seed)
    lengths = _lengths(batch, rows, cols, sums, rng, large)
    a = rng.standard_normal([lengths[n] for n in a_axes]).astype(dtype)
    b = rng.standard_normal([lengths[n] for n in b_axes]).astype(dtype)
    kern = f.compile()
    dims = {f"N{n}": v for n, v in lengths.items()}
    calls = [s for s in _steps(kern.program.steps, dims) if isinstance(s, Contract) and s.batch]
    work = np.prod([lengths[n] for n in rows + cols + sums])
    assert len(calls) == (1 if work >= BATCHED_MIN_WORK else 0), (lengths, calls)
    if calls:
        assert set(map(str, calls[0].batch)) == set(batch)
    want = np.einsum(f"{''.join(a_axes)},{''.join(b_axes)}->{''.join(out_axes)}", a, b) * (1.5 if scaled else 1)
    got = kern(A=a, Bt=b)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * max(1, np.abs(want).max()))


@pytest.mark.parametrize("seed", [0, 1, 4, 7])
def test_batched_contraction_gradients_equal_einsum(seed):
    batch, rows, cols, sums, a_axes, b_axes, out_axes, scaled = _case(seed)
    f = _formula(a_axes, b_axes, out_axes, sums, scaled, f"batched_grad_{seed}")
    rng = np.random.default_rng(300 + seed)
    lengths = _lengths(batch, rows, cols, sums, rng, large=True)
    a = rng.standard_normal([lengths[n] for n in a_axes])
    b = rng.standard_normal([lengths[n] for n in b_axes])
    up = rng.standard_normal([lengths[n] for n in out_axes])
    A, Bt, O = "".join(a_axes), "".join(b_axes), "".join(out_axes)
    grads = f.compile().vjp(up, A=a, Bt=b)
    c = 1.5 if scaled else 1
    np.testing.assert_allclose(grads["A"], c * np.einsum(f"{O},{Bt}->{A}", up, b), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grads["Bt"], c * np.einsum(f"{O},{A}->{Bt}", up, a), rtol=1e-10, atol=1e-10)


def test_attention_scores_and_mix_run_as_batched_gemms():
    """Multi-head attention's q·kᵀ and A·v (batch and head on both sides), and their gradients,
    at the sizes where each product pays: the programs' lowered steps name a batched GEMM."""
    prog = keras_multi_head_attention(causal=False, use_bias=True)
    dims = {"B": 2, "S": 32, "D": 8, "NH": 2, "E": 16, "EK": 16, "EV": 16}
    kern = prog.compile()
    batched = {f.name for f, k in zip(prog.formulas, kern.kernels, strict=True)
               if any(isinstance(s, Contract) and s.batch for s in _steps(k.program.steps, dims))}
    assert {"y.score", "y.mix"} <= batched, batched


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("layout", ["c", "a_transposed", "b_transposed", "both", "fortran_a", "strided_a",
                                    "strided_out"])
def test_batched_matmul_layouts(parallel, layout):
    """gemm.batched_matmul on threads and not, and blas.contract's batched path, on every operand
    layout, against einsum: a layout BLAS cannot read in place is refused (False) or copied by
    contract, never misread."""
    rng = np.random.default_rng(7)
    count, m, n, k = 5, 33, 17, 40
    a = rng.standard_normal((count, m, k)).astype(np.float32)
    b = rng.standard_normal((count, k, n)).astype(np.float32)
    want = np.einsum("pmk,pkn->pmn", a, b)
    a_perm, b_perm = (0, 1, 2), (0, 1, 2)
    if layout in ("a_transposed", "both"):
        a, a_perm = np.ascontiguousarray(a.transpose(0, 2, 1)), (0, 2, 1)
    if layout in ("b_transposed", "both"):
        b, b_perm = np.ascontiguousarray(b.transpose(0, 2, 1)), (0, 2, 1)
    if layout == "fortran_a":
        a = np.asfortranarray(a)  # the batch axis fastest: no matrix has a unit stride
    if layout == "strided_a":  # each matrix strided along both axes: not readable in place
        wide = np.full((count, m, 2 * k), np.nan, np.float32)
        wide[:, :, ::2] = a
        a = wide[:, :, ::2]
    def output():
        if layout == "strided_out":
            return np.full((count, m, 2 * n), np.nan, np.float32)[:, :, ::2]
        return np.full((count, m, n), np.nan, np.float32)
    out, direct = output(), output()
    if gemm.batched_matmul(a.transpose(a_perm), b.transpose(b_perm), direct, parallel):
        assert layout not in ("fortran_a", "strided_a", "strided_out"), layout
        np.testing.assert_allclose(direct, want, rtol=2e-5, atol=2e-5)
    else:
        assert layout in ("fortran_a", "strided_a", "strided_out") or not gemm.available(), layout
    blas.contract(out, a, a_perm, b, b_perm, 1, 1)
    np.testing.assert_allclose(out, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_layer_at_batched_sizes(causal, monkeypatch):
    """The nn layer where its q·kᵀ and A·v run as batched GEMMs (two heads, biases, 40 steps):
    the output against NumPy (tests/layer_references.py), and the weights' gradients along random
    directions against central differences of Σ output·up, in float64."""
    from layer_references import mha_numpy

    from symdl import nn
    layer = nn.MultiHeadAttention(2, 8, causal=causal)
    model = nn.Sequential([nn.Input((40, 12)), layer], seed=0)
    model.build()
    rng = np.random.default_rng(11)
    for v in layer.weights:
        v.value = rng.normal(0, 0.3, v.shape)
    x, up = rng.normal(size=(2, 40, 12)), rng.normal(size=(2, 40, 12))
    batched = []
    run = blas._contract_batched
    monkeypatch.setattr(blas, "_contract_batched", lambda *a: batched.append(a[-1]) or run(*a))
    out, ctx = layer.call(x)
    assert len(batched) == 2  # q·kᵀ and A·v
    np.testing.assert_allclose(out, mha_numpy(x, [v.value for v in layer.weights], causal, True), rtol=1e-10,
                               atol=1e-12)
    grad_x, grads = layer.backward(ctx, up)
    assert len(batched) == 6  # and the gradients' four

    def loss():
        return float(np.sum(layer.call(x)[0] * up))
    eps = 1e-6
    for v, g in zip(layer.weights, grads, strict=True):
        direction = rng.normal(size=v.shape)
        v.value = v.value + eps * direction
        hi = loss()
        v.value = v.value - 2 * eps * direction
        lo = loss()
        v.value = v.value + eps * direction
        assert np.sum(g * direction) == pytest.approx((hi - lo) / (2 * eps), rel=1e-6, abs=1e-8), v.name
    direction = rng.normal(size=x.shape)
    numeric = (float(np.sum(layer.call(x + eps * direction)[0] * up))
               - float(np.sum(layer.call(x - eps * direction)[0] * up))) / (2 * eps)
    assert np.sum(grad_x * direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)
