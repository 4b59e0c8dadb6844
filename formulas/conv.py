"""F4 2-D convolution, channels last like Keras: x[b, h, w, c], kernel[kh, kw, cin, cout].

Stride, dilation and zero padding ("valid" or "same", TensorFlow's rule for odd totals: the extra
row goes at the bottom) are ordinary notation: padding is `zero_padded`, so the input and kernel
gradients come out of delta elimination as transposed and correlated convolutions with the
forward pass's cost. The documents' `x_(i-m+1, j-n+1)` (a flipped kernel) is the same operation
with the kernel reversed; symdl follows the frameworks' cross-correlation.
"""
import sympy as sp

from symdl.declare import Formula, Program

from . import entry
from .activations import ACTIVATIONS
from .common import B

H, W, CIN, COUT = sp.symbols("H W Cin Cout", integer=True, positive=True)
OH, OW = sp.symbols("OH OW", integer=True, positive=True)  # output lengths, for elementwise stages


def output_length(n, k: int, stride: int, dilation: int, padding: str):
    """(output length, padding before) for one spatial axis."""
    span = dilation * (k - 1) + 1
    if padding == "valid":
        return (n - span) // stride + 1, sp.Integer(0)
    if padding == "same":
        out = (n + stride - 1) // stride
        total = sp.Max((out - 1) * stride + span - n, 0)
        return out, total // 2
    raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")


def conv2d(kernel_size=(3, 3), strides=(1, 1), padding: str = "valid", dilation=(1, 1),
           activation: str | None = None, x: str = "x", kernel: str = "kernel", bias: str | None = "bias",
           out: str = "y", name: str = "conv2d", fused: bool = False):
    """y[b, i, j, o] = Σ_{kh, kw, c} x[b, s·i + d·kh - pad, s·j + d·kw - pad, c] kernel[kh, kw, c, o]
    (+ bias[o]), then the activation (a Program when there is one; with `fused`, one formula
    whose kernel applies it in the product's epilogue, in place)."""
    (kh_n, kw_n), (sh, sw), (dh, dw) = kernel_size, strides, dilation
    oh, pt = output_length(H, kh_n, sh, dh, padding)
    ow, pl = output_length(W, kw_n, sw, dw, padding)
    b, i, j = sp.Idx("b", B), sp.Idx("i", oh), sp.Idx("j", ow)
    o, c = sp.Idx("o", COUT), sp.Idx("c", CIN)
    kh, kw = sp.Idx("kh", kh_n), sp.Idx("kw", kw_n)
    X = sp.IndexedBase(x, shape=(B, H, W, CIN))
    K = sp.IndexedBase(kernel, shape=(kh_n, kw_n, CIN, COUT))
    z = out if activation in (None, "linear") else f"{out}_z"
    body = sp.Sum(X[b, sh * i + dh * kh - pt, sw * j + dw * kw - pl, c] * K[kh, kw, c, o], kh, kw, c)
    if bias:
        body = body + sp.IndexedBase(bias)[o]
    sizes = {"B": 1, "H": 3 + (kh_n - 1) * dh, "W": 2 + (kw_n - 1) * dw + sw, "Cin": 2, "Cout": 2}
    padded = [x] if padding == "same" else []
    conv = Formula(sp.Eq(sp.IndexedBase(z)[b, i, j, o], body), name=name if z == out else f"{out}.conv",
                   zero_padded=padded, sizes=sizes)
    if z == out:
        return conv
    if fused:
        return Formula(sp.Eq(sp.IndexedBase(out)[b, i, j, o], ACTIVATIONS[activation](body)),
                       name=f"{name}.{activation}", zero_padded=padded, sizes=sizes)
    # elementwise over z's own axes: its lengths are z's (OH, OW), not expressions of H and W that
    # a strided or padded output length (a floor division) would leave unbindable from z
    Z, Y = sp.IndexedBase(z), sp.IndexedBase(out)
    i, j = sp.Idx("i", OH), sp.Idx("j", OW)
    act = Formula(sp.Eq(Y[b, i, j, o], ACTIVATIONS[activation](Z[b, i, j, o])), name=f"{out}.{activation}")
    return Program([conv, act], name=f"{name}_{activation}")


entry("conv2d", "F4", "3x3 convolution, stride 1, valid padding")(lambda: conv2d())
entry("conv2d_same", "F4", "3x3 convolution, stride 1, same (zero) padding")(lambda: conv2d(padding="same"))
entry("conv2d_strided", "F4", "3x3 convolution, stride 2, valid padding")(
    lambda: conv2d(strides=(2, 2), name="conv2d_strided"))
entry("conv2d_same_strided", "F4", "3x3 convolution, stride 2, same (zero) padding")(
    lambda: conv2d(strides=(2, 2), padding="same", name="conv2d_same_strided"))
entry("conv2d_dilated", "F4", "2x2 convolution, dilation 2, valid padding")(
    lambda: conv2d(kernel_size=(2, 2), dilation=(2, 2), name="conv2d_dilated"))
entry("conv2d_relu", "F4", "3x3 convolution with bias and relu")(lambda: conv2d(activation="relu"))
