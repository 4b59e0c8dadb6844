"""F4 convolution and F5 pooling against NumPy implementations written here (channels last, TensorFlow
padding), forward and gradients, and the gradients' cost against the forward's."""
import numpy as np
import pytest

from symdl.formulas.conv import conv2d
from symdl.formulas.pooling import pool2d
from symdl.loops import lower, trip_count


def pads(n, k, s, d, padding):
    span = d * (k - 1) + 1
    if padding == "valid":
        return (n - span) // s + 1, 0
    out = -(-n // s)
    return out, max((out - 1) * s + span - n, 0) // 2


def numpy_conv(x, kern, s, d, padding):
    """y[b, i, j, o] = Σ x[b, s·i + d·u - pt, s·j + d·v - pl, c] k[u, v, c, o], zeros outside."""
    B, _, _, _ = x.shape
    oh, ow = out_shape(x, kern, s, d, padding)
    y = np.zeros((B, oh, ow, kern.shape[3]))
    for u, v, i, j, r, q in taps(x, kern, s, d, padding):
        y[:, i, j] += x[:, r, q] @ kern[u, v]
    return y


def out_shape(x, kern, s, d, padding):
    return (pads(x.shape[1], kern.shape[0], s[0], d[0], padding)[0],
            pads(x.shape[2], kern.shape[1], s[1], d[1], padding)[0])


def taps(x, kern, s, d, padding):
    """(u, v, i, j, r, q): kernel tap (u, v) of output (i, j) reads input (r, q), inside the image."""
    H, W = x.shape[1:3]
    kh, kw = kern.shape[:2]
    oh, pt = pads(H, kh, s[0], d[0], padding)
    ow, pl = pads(W, kw, s[1], d[1], padding)
    for u in range(kh):
        for v in range(kw):
            for i in range(oh):
                for j in range(ow):
                    r, q = s[0] * i + d[0] * u - pt, s[1] * j + d[1] * v - pl
                    if 0 <= r < H and 0 <= q < W:
                        yield u, v, i, j, r, q


def numpy_conv_grads(x, kern, G, s, d, padding):
    """The same loops with every product's two gradients (the chain rule, written by hand)."""
    gx, gk = np.zeros_like(x), np.zeros_like(kern)
    for u, v, i, j, r, q in taps(x, kern, s, d, padding):
        gx[:, r, q] += G[:, i, j] @ kern[u, v].T
        gk[u, v] += x[:, r, q].T @ G[:, i, j]
    return gx, gk


CASES = [  # kernel, strides, padding, dilation
    ((3, 3), (1, 1), "valid", (1, 1)),
    ((3, 3), (1, 1), "same", (1, 1)),
    ((2, 3), (2, 1), "valid", (1, 1)),
    ((3, 3), (2, 2), "valid", (1, 1)),
    ((2, 2), (1, 1), "valid", (2, 2)),
    ((3, 2), (1, 2), "valid", (2, 1)),
    ((4, 4), (1, 1), "same", (1, 1)),  # an even kernel: the extra padding row goes at the bottom
    ((3, 3), (2, 2), "same", (1, 1)),  # 2 * ((H + 1) // 2) in the padding: once printed wrongly
    ((2, 3), (2, 3), "same", (1, 1)),
]


@pytest.mark.parametrize("ksize,strides,padding,dilation", CASES)
def test_conv2d_forward_and_gradients_match_numpy(ksize, strides, padding, dilation):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 9, 8, 3))
    kern = rng.normal(size=(*ksize, 3, 4))
    bias = rng.normal(size=4)
    k = conv2d(ksize, strides, padding, dilation, name="conv_case").compile()
    y = k(x=x, kernel=kern, bias=bias)
    np.testing.assert_allclose(y, numpy_conv(x, kern, strides, dilation, padding) + bias, atol=1e-12)
    G = rng.normal(size=y.shape)
    got = k.vjp(G, x=x, kernel=kern, bias=bias)
    gx, gk = numpy_conv_grads(x, kern, G, strides, dilation, padding)
    np.testing.assert_allclose(got["x"], gx, atol=1e-12)
    np.testing.assert_allclose(got["kernel"], gk, atol=1e-12)
    np.testing.assert_allclose(got["bias"], G.sum((0, 1, 2)), atol=1e-12)
    y32 = k(x=x.astype(np.float32), kernel=kern.astype(np.float32), bias=bias.astype(np.float32))
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y, rtol=1e-4, atol=1e-4)


def test_unknown_padding_is_refused_clearly():
    with pytest.raises(ValueError, match="padding"):
        conv2d((3, 3), (2, 2), "full")


@pytest.mark.parametrize("ksize,strides,padding,dilation", CASES[:5])
def test_conv2d_gradient_trips_stay_within_a_constant_of_the_forward(ksize, strides, padding, dilation):
    f = conv2d(ksize, strides, padding, dilation, bias=None, name="conv_trips")
    dims = lambda n: {"B": 2, "H": n, "W": n, "Cin": 3, "Cout": 4}  # noqa: E731
    forward = trip_count(lower(f), dims(24))
    for name, g in f.vjp().items():
        assert trip_count(lower(g), dims(24)) <= 3 * forward, name
        assert trip_count(lower(g), dims(48)) <= 4.5 * trip_count(lower(g), dims(24)), name


def windows(H, W, p, s, padding):
    """{(i, j): (row slice, column slice)} of the image cells each output reads (clipped for "same")."""
    oh, pt = pads(H, p[0], s[0], 1, padding)
    ow, pl = pads(W, p[1], s[1], 1, padding)
    return {(i, j): (slice(max(s[0] * i - pt, 0), min(s[0] * i - pt + p[0], H)),
                     slice(max(s[1] * j - pl, 0), min(s[1] * j - pl + p[1], W)))
            for i in range(oh) for j in range(ow)}, (oh, ow)


def numpy_pool(x, kind, p, s, padding="valid"):
    B, H, W, C = x.shape
    cells, (oh, ow) = windows(H, W, p, s, padding)
    y = np.zeros((B, oh, ow, C))
    for (i, j), (rows, cols) in cells.items():
        win = x[:, rows, cols].reshape(B, -1, C)
        y[:, i, j] = win.max(1) if kind == "max" else win.mean(1)
    return y


def numpy_pool_grad(x, G, kind, p, s, padding="valid"):
    gx = np.zeros_like(x)
    B, H, W, C = x.shape
    cells, _ = windows(H, W, p, s, padding)
    for (i, j), (rows, cols) in cells.items():
        win = x[:, rows, cols]
        width = win.shape[2]
        for b in range(B):
            for c in range(C):
                if kind == "max":  # the first maximiser in row-major order
                    u, v = divmod(int(win[b, :, :, c].argmax()), width)
                    gx[b, rows.start + u, cols.start + v, c] += G[b, i, j, c]
                else:
                    gx[b, rows, cols, c] += G[b, i, j, c] / win[b, :, :, c].size
    return gx


@pytest.mark.parametrize("kind", ["max", "average"])
@pytest.mark.parametrize("pool,strides,padding", [((2, 2), None, "valid"), ((3, 3), (2, 2), "valid"),
                                                  ((2, 3), (1, 2), "valid"), ((3, 3), (2, 2), "same"),
                                                  ((2, 2), None, "same")])
def test_pooling_forward_and_gradient_match_numpy(kind, pool, strides, padding):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 7, 8, 3))
    x[0, 0, 0, 0] = x[0, 0, 1, 0]  # a tie: the gradient goes to the first maximiser
    k = pool2d(kind, pool, strides, padding, name=f"pool_case_{kind}").compile()
    s = strides or pool
    y = k(x=x)
    np.testing.assert_allclose(y, numpy_pool(x, kind, pool, s, padding), atol=1e-12)
    G = rng.normal(size=y.shape)
    np.testing.assert_allclose(k.vjp(G, x=x)["x"], numpy_pool_grad(x, G, kind, pool, s, padding),
                               atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "average"])
def test_pooling_gradient_trips_stay_within_a_constant_of_the_forward(kind):
    """Max: zero the input's gradient, then each window finds its arg-max once (the forward's
    reads) and adds into it; average: per input element, the windows covering it. About 2x the
    forward's trips at every size (8x while max pooling searched every window per input), never a
    growing factor."""
    f = pool2d(kind, (2, 2), name=f"pool_trips_{kind}")
    dims = lambda n: {"B": 2, "H": n, "W": n, "Cin": 3}  # noqa: E731
    g = lower(f.vjp()["x"])
    ratio = [trip_count(g, dims(n)) / trip_count(lower(f), dims(n)) for n in (16, 32, 64)]
    assert max(ratio) <= 2.5, ratio
    assert max(ratio) - min(ratio) <= 0.5, ratio
