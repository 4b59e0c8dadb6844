"""A Dense layer with relu, sigmoid or tanh runs `y = f(x W + b)` as one kernel in training too,
and its backward pass starts from f'(z) written with the output y (nn/layers/core.py
`_from_output`): each such derivative against SymPy's, and a layer's gradients (weights, bias,
input) against NumPy by hand, with and without a bias, on 2-D and 3-D inputs, in both dtypes;
a model trained a few steps against the same model built from Dense(linear) + Activation (the
unfused formulas, differentiated by symdl)."""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

from formulas.activations import ACTIVATIONS
from symdl import nn
from symdl.nn.layers.core import _from_output

NUMPY = {"relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
         "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2),
         "tanh": (np.tanh, lambda z: 1 / np.cosh(z) ** 2)}


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_the_derivative_from_the_output_is_sympys(activation):
    z = sp.Symbol("z", real=True)
    f = ACTIVATIONS[activation](z)
    derivative = sp.diff(f, z)
    for value in (-7.5, -1.25, -0.01, 0.02, 0.5, 3.0, 9.0):
        want = float(derivative.subs(z, value).evalf())
        got = float(_from_output(activation, f).subs(z, value).evalf())
        assert abs(got - want) <= 1e-12 * max(1.0, abs(want)), (activation, value, got, want)
    if activation == "relu":  # at 0: 0, as the printed Heaviside (z > 0) of the unfused kernels
        assert _from_output("relu", f.subs(z, 0)) == 0


def _layer(shape, activation, use_bias, dtype):
    m = nn.Sequential([nn.Input(shape), nn.Dense(5, activation=activation, use_bias=use_bias)], seed=2)
    m.compile(optimizer="sgd", loss="mse")
    m._ensure_built()
    layer = m.layers[0]
    for w in layer.weights:  # float64 weights for a float64 run: the kernels follow the arrays
        w.value = w.value.astype(dtype)
    return m, layer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6,), (3, 6)])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", sorted(NUMPY))
def test_fused_layer_gradients_equal_numpys(activation, use_bias, shape, dtype):
    m, layer = _layer(shape, activation, use_bias, dtype)
    rng = np.random.default_rng(len(shape) + 3 * use_bias)
    x = rng.normal(size=(9, *shape)).astype(dtype)
    g = rng.normal(size=(9, *shape[:-1], 5)).astype(dtype)
    tape: list = []
    y = m.forward(x, training=True, tape=tape)
    gx, grads = layer.backward(tape[0][1], g, need_input_grad=True)
    assert layer._fused is not None and layer._fused_vjp is not None  # the fused way ran
    f, df = NUMPY[activation]
    W = layer.kernel.value.astype(np.float64)
    b = layer.bias.value.astype(np.float64) if use_bias else 0.0
    x2, g2 = x.reshape(-1, shape[-1]).astype(np.float64), g.reshape(-1, 5).astype(np.float64)
    z = x2 @ W + b
    gz = g2 * df(z)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(y.reshape(-1, 5), f(z), rtol=tol, atol=tol)
    want = [x2.T @ gz] + ([gz.sum(0)] if use_bias else [])
    assert len(grads) == len(want)
    for got, w in zip(grads, want, strict=True):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, w, rtol=tol, atol=tol)
    np.testing.assert_allclose(gx.reshape(-1, shape[-1]), gz @ W.T, rtol=tol, atol=tol)


@pytest.mark.parametrize("activation", sorted(NUMPY))
def test_training_fused_equals_the_unfused_formulas(activation):
    """Five Adam steps of Dense(16, f) -> Dense(3, softmax) against Dense(16) -> Activation(f) ->
    Dense(3, softmax): the same weights after every step."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(24, 8)).astype(np.float32), rng.integers(0, 3, 24)
    fused = nn.Sequential([nn.Input((8,)), nn.Dense(16, activation=activation), nn.Dense(3, activation="softmax")],
                          seed=4)
    plain = nn.Sequential([nn.Input((8,)), nn.Dense(16), nn.Activation(activation), nn.Dense(3, activation="softmax")],
                          seed=4)
    for m in (fused, plain):
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m._ensure_built()
    plain.set_weights(fused.get_weights())
    for _ in range(5):
        fused.train_on_batch(x, y)
        plain.train_on_batch(x, y)
        for a, b in zip(fused.get_weights(), plain.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert fused.layers[0]._fused is not None and plain.layers[0]._fused is None


@pytest.mark.parametrize("geometry", [dict(), dict(padding="same", strides=2), dict(dilation_rate=2, use_bias=False),
                                      dict(padding="same", use_bias=False)])
@pytest.mark.parametrize("activation", sorted(NUMPY))
def test_a_convolution_with_its_activation_trains_as_the_unfused_formulas(activation, geometry):
    """Conv2D(f) runs f in the convolution's epilogue and starts its backward pass from f' of the
    output (the Dense layer's activation gradient, on the output as rows): four Adam steps, with
    new data each, against Conv2D() -> Activation(f), for every geometry the kernel's loops
    change with (padding, stride, dilation, bias)."""
    rng = np.random.default_rng(11)
    conv = lambda **kw: nn.Conv2D(3, 3, **geometry, **kw)  # noqa: E731
    head = [nn.Flatten(), nn.Dense(4, activation="softmax")]
    fused = nn.Sequential([nn.Input((9, 8, 2)), conv(activation=activation), *head], seed=5)
    plain = nn.Sequential([nn.Input((9, 8, 2)), conv(), nn.Activation(activation),
                           nn.Flatten(), nn.Dense(4, activation="softmax")], seed=5)
    for m in (fused, plain):
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        m._ensure_built()
    plain.set_weights(fused.get_weights())
    for _ in range(4):
        x, y = rng.normal(size=(5, 9, 8, 2)).astype(np.float32), rng.integers(0, 4, 5)
        assert fused.train_on_batch(x, y) == pytest.approx(plain.train_on_batch(x, y), rel=1e-5)
        for a, b in zip(fused.get_weights(), plain.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(fused.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert fused.layers[0]._fused is not None and plain.layers[0]._fused is None
