"""Contractions of any rank on the cpu (passes/contraction.py, loops `Contract`) by class: every
order of row, column and summed index groups; gathered operands (affine reads, zero-padding
guards, slices, products of reads); each kernel against NumPy einsum written here, gradients
against finite differences, and the library call checked in the lowered IR so the path cannot
silently fall back to loops."""
import itertools
from dataclasses import replace

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.formulas.conv import conv2d
from symdl.loops import lower, trip_count
from symdl.loops.ir import Branch, Contract, MatMul

LETTERS = "pqrstu"
TOL = {"float32": 2e-4, "float64": 1e-11}


def _library(steps, dims=None) -> list:
    """The steps a call runs: a Branch's GEMM side, or at `dims` the side its condition picks."""
    out = []
    for s in steps:
        if isinstance(s, Branch):
            gemm = dims is None or bool(s.cond.subs({sp.Symbol(k, integer=True, positive=True): v
                                                     for k, v in dims.items()}))
            out += _library(s.then_steps if gemm else s.else_steps, dims)
        else:
            out.append(s)
    return out


def _contracts(kern, dims=None) -> list:
    return [s for s in _library(kern.program.steps, dims) if isinstance(s, Contract)]


def _grouped_case(seed: int):
    """A random contraction: 1-2 row, column and summed indices, each operand's axes and the
    output's in a random order, lengths 1..5, with a constant factor or none."""
    rng = np.random.default_rng(seed)
    nr, nc, ns = rng.integers(1, 3, size=3)
    names = iter(LETTERS)
    rows, cols, sums = ([next(names) for _ in range(n)] for n in (nr, nc, ns))
    a_axes = list(rng.permutation(rows + sums))
    b_axes = list(rng.permutation(sums + cols))
    out_axes = list(rng.permutation(rows + cols))
    lengths = {n: int(rng.integers(1, 6)) for n in rows + cols + sums}
    return a_axes, b_axes, out_axes, sums, lengths, bool(rng.integers(2))


def _grouped_formula(a_axes, b_axes, out_axes, sums, lengths, scaled, name):
    dims = {n: sp.Symbol(f"N{n}", integer=True, positive=True) for n in lengths}
    idx = {n: sp.Idx(n, dims[n]) for n in lengths}
    A, Bt, Y = sp.IndexedBase("A"), sp.IndexedBase("Bt"), sp.IndexedBase("Y")
    body = A[[idx[n] for n in a_axes]] * Bt[[idx[n] for n in b_axes]] * (sp.Rational(3, 2) if scaled else 1)
    return symdl.Formula(sp.Eq(Y[[idx[n] for n in out_axes]], sp.Sum(body, *[idx[n] for n in sums])), name=name)


@pytest.mark.parametrize("seed, dtype", list(itertools.product(range(14), ["float32", "float64"])))
def test_grouped_contraction_equals_einsum(seed, dtype):
    a_axes, b_axes, out_axes, sums, lengths, scaled = _grouped_case(seed)
    f = _grouped_formula(a_axes, b_axes, out_axes, sums, lengths, scaled, f"grouped_{seed}")
    rng = np.random.default_rng(100 + seed)
    a = rng.standard_normal([lengths[n] for n in a_axes]).astype(dtype)
    b = rng.standard_normal([lengths[n] for n in b_axes]).astype(dtype)
    kern = f.compile()
    plain = len(a_axes) == len(b_axes) == len(out_axes) == 2  # a 2-D product stays a MatMul
    assert _contracts(kern) or plain and any(isinstance(s, MatMul) for s in kern.program.steps)
    want = np.einsum(f"{''.join(a_axes)},{''.join(b_axes)}->{''.join(out_axes)}", a, b) * (1.5 if scaled else 1)
    got = kern(A=a, Bt=b)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_grouped_contraction_gradients_equal_finite_differences(seed):
    a_axes, b_axes, out_axes, sums, lengths, scaled = _grouped_case(seed)
    f = _grouped_formula(a_axes, b_axes, out_axes, sums, lengths, scaled, f"grouped_grad_{seed}")
    rng = np.random.default_rng(seed)
    args = {"A": rng.standard_normal([lengths[n] for n in a_axes]),
            "Bt": rng.standard_normal([lengths[n] for n in b_axes])}
    up = rng.standard_normal([lengths[n] for n in out_axes])
    spec = f"{''.join(a_axes)},{''.join(b_axes)}->{''.join(out_axes)}"
    grads = f.compile().vjp(up, **args)
    for name in args:
        np.testing.assert_allclose(grads[name], _finite_difference(
            lambda v: float(np.sum(up * np.einsum(spec, v["A"], v["Bt"]) * (1.5 if scaled else 1))), args, name),
            rtol=1e-6, atol=1e-8)


def _finite_difference(loss, args, name, eps=1e-6):
    g = np.zeros_like(args[name])
    for pos in np.ndindex(g.shape):
        hi, lo = {n: v.copy() for n, v in args.items()}, {n: v.copy() for n, v in args.items()}
        hi[name][pos] += eps
        lo[name][pos] -= eps
        g[pos] = (loss(hi) - loss(lo)) / (2 * eps)
    return g


def _conv_numpy(x, w, stride, padding, dilation):
    """Channels-last 2-D convolution written with einsum per kernel tap, as Keras pads 'same'."""
    kh, kw = w.shape[:2]
    (sh, sw), (dh, dw) = stride, dilation
    n, hgt, wid = x.shape[:3]
    if padding == "same":
        oh, ow = -(-hgt // sh), -(-wid // sw)
        ph = max((oh - 1) * sh + dh * (kh - 1) + 1 - hgt, 0)
        pw = max((ow - 1) * sw + dw * (kw - 1) + 1 - wid, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (hgt - dh * (kh - 1) - 1) // sh + 1, (wid - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, oh, ow, w.shape[3]), dtype=x.dtype)
    for m, q in np.ndindex(kh, kw):
        patch = x[:, dh * m: dh * m + sh * (oh - 1) + 1: sh, dw * q: dw * q + sw * (ow - 1) + 1: sw]
        y += np.einsum("bijc,co->bijo", patch, w[m, q])
    return y


def _conv_numpy_grad_x(up, w, x_shape, stride, padding, dilation):
    """The convolution's adjoint in x, written as the forward's taps adding back (x is linear)."""
    kh, kw = w.shape[:2]
    (sh, sw), (dh, dw) = stride, dilation
    n, hgt, wid = x_shape[:3]
    oh, ow = up.shape[1:3]
    ph = max((oh - 1) * sh + dh * (kh - 1) + 1 - hgt, 0) if padding == "same" else 0
    pw = max((ow - 1) * sw + dw * (kw - 1) + 1 - wid, 0) if padding == "same" else 0
    gx = np.zeros((n, hgt + ph, wid + pw, x_shape[3]), dtype=up.dtype)
    for m, q in np.ndindex(kh, kw):
        gx[:, dh * m: dh * m + sh * (oh - 1) + 1: sh, dw * q: dw * q + sw * (ow - 1) + 1: sw] += np.einsum(
            "bijo,co->bijc", up, w[m, q])
    return gx[:, ph // 2: ph // 2 + hgt, pw // 2: pw // 2 + wid]


CONVS = [((3, 3), (1, 1), "valid", (1, 1)), ((3, 3), (1, 1), "same", (1, 1)),
         ((3, 3), (2, 2), "same", (1, 1)), ((2, 3), (2, 1), "valid", (1, 1)),
         ((2, 2), (1, 1), "valid", (2, 2)), ((5, 5), (1, 1), "same", (1, 1))]


@pytest.mark.parametrize("conv, channels, dtype",
                         list(itertools.product(CONVS, [(3, 4), (16, 17)], ["float32", "float64"])))
def test_convolution_gathers_then_gemm(conv, channels, dtype):
    """Forward and kernel gradient gather patches (zeros where 'same' pads) and run one GEMM where
    the gather is reused by enough channels (contraction.MIN_REUSE), and keep their loops below
    that; the input gradient (a transposed convolution) runs col2im's GEMM over Cout (col2im.py)
    or the gather's, by the same measure (tests/test_col2im.py)."""
    size, stride, padding, dilation = conv
    cin, cout = channels
    f = conv2d(size, stride, padding, dilation, bias=None)
    rng = np.random.default_rng(sum(size) + stride[0] + len(padding) + cin)
    x = rng.standard_normal((2, 9, 8, cin)).astype(dtype)
    w = (rng.standard_normal((*size, cin, cout)) / np.sqrt(cin)).astype(dtype)
    kern = f.compile()
    dims = {"B": 2, "H": 9, "W": 8, "Cin": cin, "Cout": cout}
    big = cin >= 16
    assert bool(_contracts(kern, dims)) == big
    assert any(s.name.startswith("gather_") for s in _library(kern.program.steps) if not isinstance(s, (Contract, MatMul)))
    y = _conv_numpy(x, w, stride, padding, dilation)
    np.testing.assert_allclose(kern(x=x, kernel=w), y, rtol=TOL[dtype], atol=TOL[dtype])
    up = rng.standard_normal(y.shape).astype(dtype)
    assert bool(_contracts(f.vjp()["kernel"].compile(), dims)) == big
    # the input gradient, strided too: col2im's GEMM (summing Cout >= 16) or the gather's (Cin >= 16)
    assert bool(_contracts(f.vjp()["x"].compile(), dims)) == big
    grads = kern.vjp(up, x=x, kernel=w)
    want = np.zeros_like(w)
    for pos in np.ndindex(w.shape[:2]):  # the forward is linear in w: one tap at a time
        want[pos] = _kernel_gradient(x, up, pos, w.shape, stride, padding, dilation)
    np.testing.assert_allclose(grads["kernel"], want, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    np.testing.assert_allclose(grads["x"], _conv_numpy_grad_x(up, w, x.shape, stride, padding, dilation),
                               rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


def _kernel_gradient(x, up, pos, shape, stride, padding, dilation):
    """∂/∂w[m, q, :, :] of Σ up·conv(x, w): the forward with one tap's channel matrix the identity."""
    out = np.zeros(shape[2:], dtype=up.dtype)
    for c in range(shape[2]):
        unit = np.zeros(shape, dtype=x.dtype)
        unit[pos][c] = 1  # w[m, q, c, :] = 1: every output channel sees x's channel c at tap (m, q)
        out[c] = np.einsum("bijo->o", up * _conv_numpy(x, unit, stride, padding, dilation))
    return out


def test_convolution_input_gradient_equals_finite_differences():
    f = conv2d((3, 3), (1, 1), "same", bias=None)
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((1, 5, 4, 16)), rng.standard_normal((3, 3, 16, 2))
    up = rng.standard_normal((1, 5, 4, 2))
    assert _contracts(f.vjp()["x"].compile(), {"B": 1, "H": 5, "W": 4, "Cin": 16, "Cout": 2})
    grads = f.compile().vjp(up, x=x, kernel=w)
    want = _finite_difference(lambda v: float(np.sum(up * _conv_numpy(v["x"], w, (1, 1), "same", (1, 1)))),
                              {"x": x}, "x")
    np.testing.assert_allclose(grads["x"], want, rtol=1e-6, atol=1e-8)


def _rnn_weight_gradient(dtype):
    """grad_W[k, j] = Σ_{b,t} (1 - h²)·g·x: a product of reads is one gathered operand."""
    Bn, Tn, Kn, Hn = sp.symbols("B T K H", integer=True, positive=True)
    b, t, k, j = sp.Idx("b", Bn), sp.Idx("t", Tn), sp.Idx("k", Kn), sp.Idx("j", Hn)
    x, h, g, out = map(sp.IndexedBase, ("x", "h", "g", "gW"))
    return symdl.Formula(sp.Eq(out[k, j], sp.Sum((1 - h[b, t, j] ** 2) * g[b, t, j] * x[b, t, k], b, t)),
                         name="grouped_rnn_gw")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_products_and_slices_are_gathered(dtype):
    rng = np.random.default_rng(3)
    x, h, g = (rng.standard_normal(s).astype(dtype) for s in ((3, 5, 4), (3, 5, 6), (3, 5, 6)))
    kern = _rnn_weight_gradient(dtype).compile()
    assert len(_contracts(kern)) == 1
    np.testing.assert_allclose(kern(x=x, h=h, g=g), np.einsum("btj,btk->kj", (1 - h**2) * g, x),
                               rtol=TOL[dtype], atol=TOL[dtype])
    # a region t >= 1 reading h[b, t - 1, l] (as the recurrent weight's gradient does): a shifted read
    Bn, Tn, Hn = sp.symbols("B T H", integer=True, positive=True)
    b, t, l, j = sp.Idx("b", Bn), sp.Idx("t", Tn), sp.Idx("l", Hn), sp.Idx("j", Hn)
    hh, gg, out = map(sp.IndexedBase, ("h", "g", "gR"))
    f = symdl.Formula(sp.Eq(out[l, j], sp.Sum(hh[b, t - 1, l] * gg[b, t, j], (b, 0, Bn - 1), (t, 1, Tn - 1))),
                      name="grouped_shifted")
    kern = f.compile()
    assert len(_contracts(kern)) == 1
    np.testing.assert_allclose(kern(h=h[:, :-1].copy(), g=g), np.einsum("btl,btj->lj", h[:, :-1], g[:, 1:]),
                               rtol=TOL[dtype], atol=TOL[dtype])


def test_dense_of_rank_three_writes_the_output_directly():
    """y[b, t, j] = Σ_k x[b, t, k] W[k, j]: one GEMM over (b, t) rows into y, no temporary."""
    Bn, Tn, Kn, Hn = sp.symbols("B T K H", integer=True, positive=True)
    b, t, k, j = sp.Idx("b", Bn), sp.Idx("t", Tn), sp.Idx("k", Kn), sp.Idx("j", Hn)
    x, w, y = map(sp.IndexedBase, "xwy")
    kern = symdl.Formula(sp.Eq(y[b, t, j], sp.Sum(x[b, t, k] * w[k, j], k)), name="grouped_dense3").compile()
    assert [type(s) for s in kern.program.steps] == [Contract] and not kern.program.temps
    assert "contract(y, x, (0, 1, 2), w, (0, 1), 2)" in kern.source("float64")
    rng = np.random.default_rng(0)
    xv, wv = rng.standard_normal((4, 3, 5)), rng.standard_normal((5, 2))
    np.testing.assert_allclose(kern(x=xv, w=wv), xv @ wv, rtol=1e-12)
    dims = {Bn: 4, Tn: 3, Kn: 5, Hn: 2}
    assert trip_count(kern.program, dims) == 4 * 3 * 5 * 2  # m·n·k, counted like a matrix product


def test_counted_work_of_a_gathered_convolution():
    """Gather (the patch box) + GEMM (m·n·k) + the bias nest: the trip count adds the three where
    the Branch takes the GEMM (16 output channels), and counts the loops it takes below that."""
    f = conv2d((3, 3), (1, 1), "same")
    prog = lower(f, row_reductions=True)
    (branch,) = prog.steps
    assert [type(s).__name__ for s in branch.then_steps] == ["Nest", "Contract", "Nest"]

    def loops(*lengths):  # every iteration of every loop of a nest, as trip_count counts them
        return lengths[0] * (1 + loops(*lengths[1:])) if len(lengths) > 1 else lengths[0]

    dims = {"B": 2, "H": 7, "W": 6, "Cin": 3, "Cout": 16}
    gemm = (2 * 7 * 6) * 16 * (9 * 3)
    assert trip_count(prog, dims) == loops(2, 7, 6, 3, 3, 3) + gemm + loops(2, 7, 6, 16)
    small = {**dims, "Cout": 5}
    plain = replace(prog, temps=branch.else_temps, steps=branch.else_steps)
    assert trip_count(prog, small) == trip_count(plain, small) > 2 * 7 * 6 * 5 * 9 * 3


def test_what_stays_in_loops():
    """A matrix-vector product, a gather under a guard, and every backend but the cpu's keep their
    loops; a batch index on both sides (attention's per-head products) is a batched GEMM
    (tests/test_batched_contractions.py)."""
    Bn, Nn, Kn = sp.symbols("B N K", integer=True, positive=True)
    b, i, j, k = sp.Idx("b", Bn), sp.Idx("i", Nn), sp.Idx("j", Nn), sp.Idx("k", Kn)
    q, v, y, s = map(sp.IndexedBase, "qvys")
    batched = symdl.Formula(sp.Eq(y[b, i, j], sp.Sum(q[b, i, k] * v[b, j, k], k)), name="grouped_batched")
    matvec = symdl.Formula(sp.Eq(y[b, i], sp.Sum(q[b, i, k] * v[k], k)), name="grouped_matvec")
    shifted = sp.Sum(sp.IndexedBase("q", shape=(Kn, Nn))[k + 1, i] * v[k, j], (k, 0, Kn - 2))
    guarded = symdl.Formula(sp.Eq(y[i, j], sp.Piecewise((0, s[i] > 0), (shifted, True))), name="grouped_guarded")
    assert [tuple(map(str, st.batch)) for st in _library(lower(batched, row_reductions=True).steps)
            if isinstance(st, Contract)] == [("b",)]
    for f in (matvec, guarded):
        assert not any(isinstance(st, Contract) for st in _library(lower(f, row_reductions=True).steps)), f.name
    assert not any(isinstance(st, (Contract, Branch)) for st in lower(conv2d(), row_reductions=False).steps)
    unguarded = symdl.Formula(sp.Eq(y[i, j], shifted), name="grouped_unguarded")  # the same Sum alone gathers
    assert any(isinstance(st, Contract) for st in _library(lower(unguarded, row_reductions=True).steps))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_recurrence_projects_its_inputs_before_the_step_loop(dtype):
    """h[b, t, j] = tanh(Σ_k x[b, t, k] W[k, j] + Σ_{m,n} u[t, b, m, n] V[n, m, j] + 0.5 h[b, t - 1, j]):
    both input sums are GEMMs over every (b, t) before the step loop (one of them over a summed
    pair in reversed order), the recurrence's own read stays in the loop."""
    Bn, Tn, Kn, Hn, Mn, Nn = sp.symbols("B T K H M N", integer=True, positive=True)
    b, t, k, j, m, n = (sp.Idx(s, d) for s, d in zip("btkjmn", (Bn, Tn, Kn, Hn, Mn, Nn), strict=True))
    x, w, u, v, h, h0 = map(sp.IndexedBase, ("x", "W", "u", "V", "h", "h0"))
    pre = sp.Sum(x[b, t, k] * w[k, j], k) + sp.Sum(u[t, b, m, n] * v[n, m, j], m, n) + h[b, t - 1, j] / 2
    f = symdl.Formula(sp.Eq(h[b, t, j], sp.tanh(pre)), name="grouped_projected", initial={"h": h0})
    kern = f.compile()
    kinds = [type(s) for s in kern.program.steps]
    assert kinds[:2] == [Contract, Contract] and kinds[2:] and Contract not in kinds[2:]
    rng = np.random.default_rng(2)
    a = {"x": rng.standard_normal((3, 4, 5)), "W": rng.standard_normal((5, 6)) / 3,
         "u": rng.standard_normal((4, 3, 2, 3)), "V": rng.standard_normal((3, 2, 6)) / 3, "h0": rng.standard_normal((3, 6))}
    a = {name: val.astype(dtype) for name, val in a.items()}
    proj = np.einsum("btk,kj->btj", a["x"], a["W"]) + np.einsum("tbmn,nmj->btj", a["u"], a["V"])
    want, prev = np.empty_like(proj), a["h0"]
    for s in range(proj.shape[1]):
        want[:, s] = prev = np.tanh(proj[:, s] + prev / 2)
    np.testing.assert_allclose(kern(**a), want, rtol=TOL[dtype], atol=TOL[dtype])


def test_a_sum_inside_another_names_the_outer_index():
    """y[i, j] = Σ_m c[m] Σ_k A[i, k, m] B[k, j]: the inner Sum depends on the outer m, so it is
    no contraction of its own (a gather would leave m unbound); the value stays right."""
    In, Jn, Kn, Mn = sp.symbols("I J K M", integer=True, positive=True)
    i, j, k, m = sp.Idx("i", In), sp.Idx("j", Jn), sp.Idx("k", Kn), sp.Idx("m", Mn)
    A, Bt, c, y = map(sp.IndexedBase, ("A", "Bt", "c", "y"))
    f = symdl.Formula(sp.Eq(y[i, j], sp.Sum(c[m] * sp.Sum(A[i, k, m] * Bt[k, j], k), m)), name="grouped_nested")
    rng = np.random.default_rng(4)
    a = {"A": rng.standard_normal((3, 4, 2)), "Bt": rng.standard_normal((4, 5)), "c": rng.standard_normal(2)}
    np.testing.assert_allclose(f.compile()(**a), np.einsum("m,ikm,kj->ij", a["c"], a["A"], a["Bt"]), rtol=1e-12)


@pytest.mark.parametrize("out_axes", ["boi", "bio", "obi", "oib", "ibo", "iob"])
def test_a_gathered_contraction_into_every_output_order(out_axes):
    """y[...] = Σ_m x[b, i + m] w[m, o] in every order of the output's axes, where the gather pays
    (O >= MIN_REUSE): the GEMM writes the output itself, through a transposed view where its
    (rows, cols) order is not the output's, after the gather that fills its operand (a permuted
    output once dropped that gather, and the kernel read an unfilled temporary)."""
    Bn, Nn, On = sp.symbols("B N O", integer=True, positive=True)
    idx = {"b": sp.Idx("b", Bn), "i": sp.Idx("i", Nn - 2), "o": sp.Idx("o", On)}
    m = sp.Idx("m", 3)
    x, w, y = sp.IndexedBase("x", shape=(Bn, Nn)), sp.IndexedBase("w"), sp.IndexedBase("y")
    f = symdl.Formula(sp.Eq(y[[idx[n] for n in out_axes]], sp.Sum(x[idx["b"], idx["i"] + m] * w[m, idx["o"]], m)),
                      name=f"gathered_{out_axes}")
    kern = f.compile()
    assert _contracts(kern, {"B": 5, "N": 30, "O": 20})
    rng = np.random.default_rng(3)
    xs, ws = rng.standard_normal((5, 30)), rng.standard_normal((3, 20))
    patches = np.stack([xs[:, k:k + 28] for k in range(3)], -1)
    np.testing.assert_allclose(kern(x=xs, w=ws), np.einsum(f"bim,mo->{out_axes}", patches, ws), rtol=1e-12,
                               atol=1e-12)
