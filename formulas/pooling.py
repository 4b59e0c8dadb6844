"""F5 max and average pooling, channels last, with window and stride (default: the window).

Max pooling is `symdl.Max` over the window; its gradient goes to the first arg-max in the window
(row-major order) on ties. Only "valid" padding is offered in this release.
"""
import sympy as sp

import symdl
from symdl import Formula

from . import entry
from .common import B
from .conv import CIN, H, W, output_length


def pool2d(kind: str = "max", pool_size=(2, 2), strides=None, padding: str = "valid", x: str = "x",
           out: str = "y", name: str | None = None) -> Formula:
    (ph, pw) = pool_size
    if padding != "valid":
        raise ValueError("pooling supports padding='valid' only in this release")
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
        body = symdl.Max(cell, (u, u_lo, u_hi), (v, v_lo, v_hi))
    elif kind == "average":
        # the cells a clipped window covers, counted as a sum so no Max/Min enters the values
        count = sp.Sum(1, (u, u_lo, u_hi), (v, v_lo, v_hi))
        body = sp.Sum(cell, (u, u_lo, u_hi), (v, v_lo, v_hi)) / count
    else:
        raise ValueError(f"pooling kind must be 'max' or 'average', got {kind!r}")
    sizes = {"B": 1, "H": 2 * sh + ph - 1, "W": sw + pw + 1, "Cin": 2}
    return Formula(sp.Eq(sp.IndexedBase(out)[b, i, j, c], body), name=name or f"{kind}_pool2d",
                   sizes=sizes)


entry("max_pool2d", "F5", "2x2 max pooling, stride 2")(lambda: pool2d("max"))
entry("average_pool2d", "F5", "2x2 average pooling, stride 2")(lambda: pool2d("average"))
