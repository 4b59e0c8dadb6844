"""symdl.nn layers: forward and backward against NumPy written here (small sizes, float32)."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import nn

RNG = np.random.default_rng(0)
TOL = dict(rtol=2e-4, atol=2e-5)


def run_layer(layer, x, grad):
    """(output, input gradient, weight gradients) of one built layer."""
    if not layer.built:
        layer.build(x.shape[1:], np.random.default_rng(1))
    y, ctx = layer.call(x, training=True)
    y = y.copy()
    gx, gw = layer.backward(ctx, grad)
    return y, gx, gw


def f32(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("activation", ["relu", "softmax"])
def test_dense_forward_backward(activation):
    layer = nn.Dense(3, activation=activation)
    x, g = f32(4, 5), f32(4, 3)
    layer.build((5,), np.random.default_rng(1))
    layer.bias.value = f32(3)  # nonzero, so the bias path is checked
    W, b = layer.kernel.value, layer.bias.value
    y, gx, (gW, gb) = run_layer(layer, x, g)
    z = x @ W + b
    if activation == "relu":
        ref, gz = np.maximum(z, 0), g * (z > 0)
    else:
        ref = softmax(z)
        gz = ref * (g - (g * ref).sum(1, keepdims=True))
    np.testing.assert_allclose(y, ref, **TOL)
    np.testing.assert_allclose(gx, gz @ W.T, **TOL)
    np.testing.assert_allclose(gW, x.T @ gz, **TOL)
    np.testing.assert_allclose(gb, gz.sum(0), **TOL)
    assert W.shape == (5, 3)  # Keras layout: kernel (in, out)


def conv_ref(x, k, b, stride=1):
    n, h, w, _ = x.shape
    kh, kw, _, co = k.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    y = np.zeros((n, oh, ow, co))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            y[:, i, j, :] = np.tensordot(patch, k, axes=([1, 2, 3], [0, 1, 2]))
    return y + b


def test_conv2d_forward_backward_against_numpy():
    layer = nn.Conv2D(3, (3, 3), activation="relu")
    x = f32(2, 5, 6, 2)
    layer.build((5, 6, 2), np.random.default_rng(1))
    layer.bias.value = f32(3)
    K, b = layer.kernel.value, layer.bias.value
    assert K.shape == (3, 3, 2, 3) and layer.output_shape == (3, 4, 3)
    g = f32(2, 3, 4, 3)
    y, gx, (gK, gb) = run_layer(layer, x, g)
    z = conv_ref(x.astype(np.float64), K, b)
    np.testing.assert_allclose(y, np.maximum(z, 0), **TOL)
    gz = g * (z > 0)
    # gradients by the chain rule on the reference, written as explicit loops
    gx_ref, gK_ref = np.zeros(x.shape), np.zeros(K.shape)
    for i in range(3):
        for j in range(4):
            gx_ref[:, i:i + 3, j:j + 3, :] += np.einsum("no,abco->nabc", gz[:, i, j, :], K)
            gK_ref += np.einsum("nabc,no->abco", x[:, i:i + 3, j:j + 3, :], gz[:, i, j, :])
    np.testing.assert_allclose(gx, gx_ref, **TOL)
    np.testing.assert_allclose(gK, gK_ref, **TOL)
    np.testing.assert_allclose(gb, gz.sum((0, 1, 2)), **TOL)


def test_conv2d_same_padding_shape_and_refusals():
    assert nn.Conv2D(4, 3, padding="same").compute_output_shape((7, 5, 2)) == (7, 5, 4)
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="activation"):
        nn.Conv2D(4, 3, activation="gelu")


@pytest.mark.parametrize("layer_cls", [nn.MaxPooling2D, nn.AveragePooling2D])
def test_pooling_forward_backward(layer_cls):
    layer = layer_cls((2, 2))
    x, g = f32(2, 4, 6, 3), f32(2, 2, 3, 3)
    y, gx, gw = run_layer(layer, x, g)
    blocks = x.reshape(2, 2, 2, 3, 2, 3).transpose(0, 1, 3, 5, 2, 4).reshape(2, 2, 3, 3, 4)
    if layer_cls is nn.MaxPooling2D:
        np.testing.assert_allclose(y, blocks.max(-1), **TOL)
        onehot = (blocks == blocks.max(-1, keepdims=True)).astype(np.float32)
    else:
        np.testing.assert_allclose(y, blocks.mean(-1), **TOL)
        onehot = np.full(blocks.shape, 0.25, dtype=np.float32)
    ref = (onehot * g[..., None]).reshape(2, 2, 3, 3, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(x.shape)
    np.testing.assert_allclose(gx, ref, **TOL)
    assert gw == []


def test_pooling_same_padding_clips_windows_like_keras():
    layer = nn.MaxPooling2D((2, 2), padding="same")
    assert layer.compute_output_shape((5, 3, 2)) == (3, 2, 2)
    x = f32(1, 5, 3, 2)
    y, _, _ = run_layer(layer, x, f32(1, 3, 2, 2))
    padded = np.full((1, 6, 4, 2), -np.inf, dtype=np.float32)  # Keras: padded cells never win
    padded[:, :5, :3] = x
    np.testing.assert_allclose(y, padded.reshape(1, 3, 2, 2, 2, 2).max((2, 4)), **TOL)
    with pytest.raises(ValueError, match="padding"):
        nn.AveragePooling2D((2, 2), padding="full")


def test_activation_flatten_dropout():
    x, g = f32(3, 2, 4), f32(3, 2, 4)
    y, gx, _ = run_layer(nn.Activation("tanh"), x, g)
    np.testing.assert_allclose(y, np.tanh(x), **TOL)
    np.testing.assert_allclose(gx, g * (1 - np.tanh(x) ** 2), **TOL)
    y, gx, _ = run_layer(nn.Flatten(), x, g.reshape(3, 8))
    assert y.shape == (3, 8) and gx.shape == x.shape
    drop = nn.Dropout(0.5, seed=3)
    y, gx, _ = run_layer(drop, x, g)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 2 * x[kept], **TOL)     # inverted dropout scaling
    np.testing.assert_allclose(gx, np.where(kept, 2 * g, 0), **TOL)
    assert 0 < kept.mean() < 1
    np.testing.assert_array_equal(drop.call(x, training=False)[0], x)  # identity at inference


def test_formula_layer_trains_a_user_formula():
    B, N, M = sp.symbols("B N M", integer=True, positive=True)
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, y = sp.IndexedBase("x"), sp.IndexedBase("W"), sp.IndexedBase("y")
    alpha = sp.Symbol("alpha")
    f = symdl.Formula(sp.Eq(y[i, j], sp.tanh(alpha * sp.Sum(x[i, k] * W[k, j], k))), name="scaled_tanh")
    layer = nn.FormulaLayer(f, params={"W": (4, 2)}, constants={"alpha": 0.5})
    xv, g = f32(3, 4), f32(3, 2)
    yv, gx, (gW,) = run_layer(layer, xv, g)
    Wv = layer.vars["W"].value
    t = np.tanh(0.5 * xv @ Wv)
    np.testing.assert_allclose(yv, t, **TOL)
    gz = g * (1 - t ** 2) * 0.5
    np.testing.assert_allclose(gx, gz @ Wv.T, **TOL)
    np.testing.assert_allclose(gW, xv.T @ gz, **TOL)
    assert layer.output_shape == (2,)
    with pytest.raises(ValueError, match="alpha"):
        nn.FormulaLayer(f, params={"W": (4, 2)})
