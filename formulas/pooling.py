"""F5 max and average pooling, channels last, with window and stride (default: the window).

Max pooling is `symdl.Max` over the window; its gradient goes to the first arg-max in the window
(row-major order) on ties. With "same" padding (TensorFlow's rule) a window is clipped to the image:
the max and the average are over the cells inside it, as Keras computes them.
"""
import sympy as sp

from symdl.declare import Formula, Max

from . import entry
from .common import B
from .conv import CIN, H, W, output_length


def pool2d(kind: str = "max", pool_size=(2, 2), strides=None, padding: str = "valid", x: str = "x",
           out: str = "y", name: str | None = None) -> Formula:
    (ph, pw) = pool_size
    (sh, sw) = strides or pool_size
    oh, pt = output_length(H, ph, sh, 1, padding)
    ow, pl = output_length(W, pw, sw, 1, padding)
    b, i, j, c = sp.Idx("b", B), sp.Idx("i", oh), sp.Idx("j", ow), sp.Idx("c", CIN)
    u, v = sp.Symbol("u", integer=True), sp.Symbol("v", integer=True)
    X = sp.IndexedBase(x, shape=(B, H, W, CIN))
    # window rows sh·i - pt + u for u in [lo, hi], clipped to the image
    u_lo, u_hi = sp.Max(0, pt - sh * i), sp.Min(ph - 1, H - 1 + pt - sh * i)
    v_lo, v_hi = sp.Max(0, pl - sw * j), sp.Min(pw - 1, W - 1 + pl - sw * j)
    if padding == "valid":
        u_lo, u_hi, v_lo, v_hi = 0, ph - 1, 0, pw - 1
    cell = X[b, sh * i + u - pt, sw * j + v - pl, c]
    if kind == "max":
        body = Max(cell, (u, u_lo, u_hi), (v, v_lo, v_hi))
    elif kind == "average":
        # the cells a clipped window covers, counted as a sum so no Max/Min enters the values
        count = sp.Sum(1, (u, u_lo, u_hi), (v, v_lo, v_hi))
        body = sp.Sum(cell, (u, u_lo, u_hi), (v, v_lo, v_hi)) / count
    else:
        raise ValueError(f"pooling kind must be 'max' or 'average', got {kind!r}")
    sizes = {"B": 1, "H": 2 * sh + ph - 1, "W": sw + pw + 1, "Cin": 2}
    if padding == "same":  # clipped windows at both edges, few enough max regions to expand exactly
        sizes = {"B": 1, "H": ph, "W": pw, "Cin": 1}
    return Formula(sp.Eq(sp.IndexedBase(out)[b, i, j, c], body), name=name or f"{kind}_pool2d",
                   sizes=sizes)


entry("max_pool2d", "F5", "2x2 max pooling, stride 2")(lambda: pool2d("max"))
entry("average_pool2d", "F5", "2x2 average pooling, stride 2")(lambda: pool2d("average"))
entry("max_pool2d_same", "F5", "3x3 max pooling, stride 2, same padding (windows clipped)")(
    lambda: pool2d("max", (3, 3), (2, 2), "same", name="max_pool2d_same"))
entry("average_pool2d_same", "F5", "3x3 average pooling, stride 2, same padding (windows clipped)")(
    lambda: pool2d("average", (3, 3), (2, 2), "same", name="average_pool2d_same"))


def global_average_pool(spatial: int, x: str = "x", out: str = "y") -> Formula:
    """y[b, c] = the mean of x[b, ..., c] over its `spatial` middle axes: time (1, Keras'
    GlobalAveragePooling1D, input (B, T, Cin)) or height and width (2, GlobalAveragePooling2D)."""
    if spatial not in (1, 2):
        raise ValueError(f"global average pooling is over 1 or 2 axes, got {spatial}")
    lengths = (sp.Symbol("T", integer=True, positive=True),) if spatial == 1 else (H, W)
    b, c = sp.Idx("b", B), sp.Idx("c", CIN)
    axes = tuple(sp.Idx(n, length) for n, length in zip(("t",) if spatial == 1 else ("i", "j"), lengths))
    X = sp.IndexedBase(x, shape=(B, *lengths, CIN))
    body = sp.Sum(X[(b, *axes, c)], *axes) / sp.Mul(*lengths)
    return Formula(sp.Eq(sp.IndexedBase(out)[b, c], body), name=f"global_average_pool{spatial}d")
