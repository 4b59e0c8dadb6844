"""Transposed contractions in col2im order (passes/col2im.py): a GEMM over only the indices both
operands read plainly into a temporary keeping every other axis whole, then the loops summing the
rest. Each kernel against NumPy written here, at sizes on both sides of the per-call condition
(col2im, the gather's GEMM, the plain loops), and the path a call takes read from the lowered IR."""
import itertools

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.formulas.conv import conv2d
from symdl.loops import lower
from symdl.loops.ir import Branch, Contract, Nest

TOL = {"float32": 3e-4, "float64": 1e-11}


def _taken(steps, dims: dict) -> list:
    """The steps a call at `dims` runs, each Branch decided as the driver decides it."""
    out = []
    for s in steps:
        if isinstance(s, Branch):
            cond = s.cond.subs({sp.Symbol(k, integer=True, positive=True): v for k, v in dims.items()})
            out += _taken(s.then_steps if bool(cond) else s.else_steps, dims)
        else:
            out.append(s)
    return out


def _path(program, dims: dict) -> str:
    """'col2im', 'gather' or 'loops': the way a call at `dims` computes the output."""
    steps = _taken(program.steps, dims)
    if any(isinstance(s, Nest) and s.name.startswith("col2im_") for s in steps):
        return "col2im"
    return "gather" if any(isinstance(s, Contract) for s in steps) else "loops"


def _grad_x_numpy(up, w, x_shape, stride, padding, dilation):
    """∂/∂x of Σ up·conv(x, w), channels last: each output position adds w's taps, times its
    upstream gradient, back onto the input positions it read (Keras's 'same': pad low = total // 2)."""
    kh, kw, _, _ = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    n, hgt, wid, cin = x_shape
    oh, ow = up.shape[1:3]
    pad_h = max((oh - 1) * sh + dh * (kh - 1) + 1 - hgt, 0) if padding == "same" else 0
    pad_w = max((ow - 1) * sw + dw * (kw - 1) + 1 - wid, 0) if padding == "same" else 0
    gx = np.zeros((n, hgt + pad_h, wid + pad_w, cin), dtype=np.float64)
    for i, j, m, q in itertools.product(range(oh), range(ow), range(kh), range(kw)):
        gx[:, sh * i + dh * m, sw * j + dw * q, :] += up[:, i, j, :].astype(np.float64) @ w[m, q].T.astype(np.float64)
    return gx[:, pad_h // 2: pad_h // 2 + hgt, pad_w // 2: pad_w // 2 + wid]


def _output_length(n, k, s, d, padding):
    return -(-n // s) if padding == "same" else (n - d * (k - 1) - 1) // s + 1


CONVS = [((3, 3), (1, 1), "valid", (1, 1)), ((3, 3), (1, 1), "same", (1, 1)), ((2, 3), (1, 1), "valid", (1, 1)),
         ((3, 3), (2, 2), "valid", (1, 1)), ((3, 3), (2, 2), "same", (1, 1)), ((2, 2), (1, 1), "valid", (2, 2))]
# (Cin, Cout, H, W) on each side of the condition: col2im (Cout >= 16 sums and Z no larger than the
# gather), the gather (Z larger: many input channels, small images), the plain loops (Cout < 16)
SIZES = {"col2im": (5, 16, 9, 8), "larger Z": (48, 16, 6, 7), "few channels": (17, 6, 7, 9)}


@pytest.mark.parametrize("conv, sizes, dtype", list(itertools.product(CONVS, SIZES, ["float32", "float64"])))
def test_convolution_input_gradient_equals_numpy(conv, sizes, dtype):
    size, stride, padding, dilation = conv
    cin, cout, hgt, wid = SIZES[sizes]
    f = symdl.vjp(conv2d(size, stride, padding, dilation, bias=None))["x"]
    oh, ow = (_output_length(n, k, s, d, padding) for n, k, s, d in zip((hgt, wid), size, stride, dilation))
    rng = np.random.default_rng(10 * CONVS.index(conv) + list(SIZES).index(sizes))
    up = rng.standard_normal((2, oh, ow, cout)).astype(dtype)
    w = (rng.standard_normal((*size, cin, cout)) / np.sqrt(cout)).astype(dtype)
    kern = f.compile()
    dims = {"B": 2, "H": hgt, "W": wid, "Cin": cin, "Cout": cout}
    path = _path(kern.program, dims)
    if sizes == "col2im":
        assert path == "col2im"
    elif sizes == "larger Z":  # the gather where there is one (a strided gradient has none)
        assert path == ("gather" if stride == (1, 1) else "col2im")
    else:
        assert path == ("gather" if stride == (1, 1) else "loops")
    got = kern(grad_y=up, kernel=w, dims={"H": hgt, "W": wid})
    assert got.dtype == np.dtype(dtype)
    want = _grad_x_numpy(up, w, (2, hgt, wid, cin), stride, padding, dilation)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


def test_e1_second_convolution_takes_col2im():
    """E1's conv2d 32 -> 64 channels on 15x15 inputs, batch 128: one GEMM on grad_y and the kernel
    as they lie, (128·13·13, 64) @ (64, 3·3·32), into a 25 MB temporary instead of a 66 MB gather."""
    program = lower(symdl.vjp(conv2d(bias=None))["x"], row_reductions=True)
    dims = {"B": 128, "H": 15, "W": 15, "Cin": 32, "Cout": 64}
    steps = _taken(program.steps, dims)
    contract, = [s for s in steps if isinstance(s, Contract)]
    assert (contract.a, contract.b, [str(i) for i in contract.sums]) == ("grad_y", "kernel", ["o"])
    values = {sp.Symbol(k, integer=True, positive=True): v for k, v in dims.items()}
    assert [int(n.subs(values)) for n in contract.sizes] == [128 * 13 * 13, 9 * 32, 64]
    assert not any(isinstance(s, Nest) and s.name.startswith("gather_") for s in steps)
    assert [s.name for s in steps if isinstance(s, Nest)] == ["col2im_zero", "col2im_rows"]


@pytest.mark.parametrize("kw", [{}, {"padding": "same"}, {"strides": (2, 2)}, {"kernel_size": (2, 3)},
                                {"kernel_size": (2, 2), "dilation": (2, 2)}])
def test_forward_and_kernel_gradient_keep_their_way(kw):
    """col2im's temporary for a forward convolution (Z over the input's H·W positions) or a kernel
    gradient (Z of H·W·Cin by Ho·Wo·Cout) is larger at large sizes: their programs have no col2im
    branch at all."""
    f = conv2d(bias=None, **kw)
    for g in (f, symdl.vjp(f)["kernel"]):
        text = str(lower(g, row_reductions=True))
        assert "col2im" not in text, g


def _transposed_1d(stride: int, taps: int, scaled: bool):
    """A user's 1-D transposed convolution with two channel axes summed: out[b, p, c] =
    s·Σ_i Σ_o Σ_r x[b, i, o, r]·w[p - stride·i, c, o, r] over the i whose tap is in [0, taps)."""
    B, N, C, O, R = sp.symbols("B N C O R", integer=True, positive=True)
    P = stride * (N - 1) + taps
    b, p, c = sp.Idx("b", B), sp.Idx("p", P), sp.Idx("c", C)
    i, o, r = sp.symbols("i o r", integer=True)
    x = sp.IndexedBase("x", shape=(B, N, O, R))
    w = sp.IndexedBase("w", shape=(taps, C, O, R))
    lo = sp.Max(0, sp.ceiling((p - taps + 1) / sp.Integer(stride)))
    hi = sp.Min(N - 1, sp.floor(p / sp.Integer(stride)))
    body = sp.Sum(x[b, i, o, r] * w[p - stride * i, c, o, r], (i, lo, hi), (o, 0, O - 1), (r, 0, R - 1))
    out = sp.IndexedBase("out")[b, p, c]
    return symdl.Formula(sp.Eq(out, body * sp.Rational(3, 2) if scaled else body),
                         name=f"tconv1d_s{stride}_k{taps}")


def _transposed_1d_numpy(x, w, stride):
    n, taps = x.shape[1], w.shape[0]
    out = np.zeros((x.shape[0], stride * (n - 1) + taps, w.shape[1]))
    for i, m in itertools.product(range(n), range(taps)):
        out[:, stride * i + m] += np.einsum("bor,cor->bc", x[:, i], w[m])
    return out


@pytest.mark.parametrize("stride, taps, scaled, dtype", [(1, 3, False, "float64"), (2, 3, True, "float32"),
                                                         (3, 2, True, "float64"), (2, 4, False, "float32")])
def test_user_transposed_convolution(stride, taps, scaled, dtype):
    """Written by hand (not from autodiff): the GEMM sums both channel axes o, r at once."""
    f = _transposed_1d(stride, taps, scaled)
    rng = np.random.default_rng(stride * 10 + taps)
    x = rng.standard_normal((3, 6, 4, 5)).astype(dtype)
    w = rng.standard_normal((taps, 7, 4, 5)).astype(dtype)
    kern = f.compile()
    assert _path(kern.program, {"B": 3, "N": 6, "C": 7, "O": 4, "R": 5}) == "col2im"
    contract, = [s for s in _taken(kern.program.steps, {"B": 3, "N": 6, "C": 7, "O": 4, "R": 5})
                 if isinstance(s, Contract)]
    assert sorted(str(i) for i in contract.sums) == ["o", "r"]
    assert _path(kern.program, {"B": 3, "N": 6, "C": 7, "O": 2, "R": 5}) == "loops"  # 10 < MIN_REUSE
    want = _transposed_1d_numpy(x, w, stride) * (1.5 if scaled else 1)
    np.testing.assert_allclose(kern(x=x, w=w), want, rtol=TOL[dtype], atol=TOL[dtype])
    few = kern(x=x[:, :, :2], w=w[:, :, :2])  # the plain loops' side of the condition
    np.testing.assert_allclose(few, _transposed_1d_numpy(x[:, :, :2], w[:, :, :2], stride) * (1.5 if scaled else 1),
                               rtol=TOL[dtype], atol=TOL[dtype])


def test_output_index_in_two_axes_keeps_the_plain_loops_after_the_gemm():
    """out[b, p, c] = Σ_i Σ_o x[b, i, o]·w[p + c - i, c, o]: c names two axes of Z, so no element
    of Z belongs to one output element alone; the sum over Z runs as the plain loops."""
    B, N, C, O, T = sp.symbols("B N C O T", integer=True, positive=True)
    b, p, c = sp.Idx("b", B), sp.Idx("p", N + T - 1), sp.Idx("c", C)
    i, o = sp.symbols("i o", integer=True)
    x, w = sp.IndexedBase("x", shape=(B, N, O)), sp.IndexedBase("w", shape=(T, C, O))
    body = sp.Sum(x[b, i, o] * w[p + c - i, c, o], (i, sp.Max(0, p + c - T + 1), sp.Min(N - 1, p + c)), (o, 0, O - 1))
    f = symdl.Formula(sp.Eq(sp.IndexedBase("out")[b, p, c], body), name="skewed_tconv")
    kern = f.compile()
    dims = {"B": 2, "N": 5, "C": 3, "O": 16, "T": 4}
    assert [s.name for s in _taken(kern.program.steps, dims) if isinstance(s, Nest)] == ["col2im_loops"]
    rng = np.random.default_rng(7)
    xv, wv = rng.standard_normal((2, 5, 16)), rng.standard_normal((4, 3, 16))
    want = np.zeros((2, 8, 3))
    for pv, cv, iv in itertools.product(range(8), range(3), range(5)):
        if 0 <= pv + cv - iv < 4:
            want[:, pv, cv] += xv[:, iv] @ wv[pv + cv - iv, cv]
    np.testing.assert_allclose(kern(x=xv, w=wv), want, rtol=1e-11, atol=1e-11)
