"""A Dense layer's forward pass outside training (predict, evaluate) runs its product and its
activation as one kernel (`y = f(x W + b)`, f in the product's epilogue): against NumPy for every
activation, with and without a bias, on 2-D and 3-D inputs; a backward pass after it (a tape
recorded with training=False) gives the training tape's gradients (both fused since training runs
the fused kernel too: tests/test_fused_dense.py checks those against NumPy)."""
from __future__ import annotations

import numpy as np
import pytest

from symdl import nn
from symdl.loops.ir import MatMul

NUMPY = {"relu": lambda z: np.maximum(z, 0), "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh}


def _model(shape, activation, use_bias):
    m = nn.Sequential([nn.Input(shape), nn.Dense(5, activation=activation, use_bias=use_bias)], seed=1)
    m.compile(optimizer="sgd", loss="mse")
    m._replay = None  # each call runs the layers (a replay would run the same kernels)
    return m


@pytest.mark.parametrize("shape", [(7,), (3, 7)])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", sorted(NUMPY))
def test_fused_dense_equals_numpy_and_the_unfused_layer(activation, use_bias, shape):
    m = _model(shape, activation, use_bias)
    rng = np.random.default_rng(len(shape))
    x = rng.normal(size=(11, *shape)).astype(np.float32)
    weights = m.get_weights()
    z = x.astype(np.float64) @ weights[0] + (weights[1] if use_bias else 0)
    got = m.predict(x, batch_size=4)
    np.testing.assert_allclose(got, NUMPY[activation](z), rtol=2e-5, atol=2e-6)
    layer = m.layers[0]
    assert layer._fused is not None and any(isinstance(s, MatMul) for s in layer._fused.kernels[0].program.steps)
    np.testing.assert_allclose(got, m.forward(x, training=True), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("activation", sorted(NUMPY))
def test_backward_after_a_fused_forward_pass(activation):
    m = _model((6,), activation, True)
    rng = np.random.default_rng(3)
    x, g = rng.normal(size=(9, 6)).astype(np.float32), rng.normal(size=(9, 5)).astype(np.float32)
    m._ensure_built()
    grads = {}
    for training in (True, False):
        tape: list = []
        m.forward(x, training=training, tape=tape)
        grads[training] = [a.copy() for a in m.backward(tape, g)]
    for fused, plain in zip(grads[False], grads[True], strict=True):
        np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)
