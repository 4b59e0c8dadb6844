"""symdl.nn losses and optimizers against NumPy formulas written here."""
from __future__ import annotations

import numpy as np
import pytest

from symdl import nn
from symdl.nn.layers import Variable

RNG = np.random.default_rng(1)
TOL = dict(rtol=2e-4, atol=1e-6)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_sparse_crossentropy_on_probabilities_and_logits():
    z = RNG.normal(size=(6, 4)).astype(np.float32) * 3
    t = RNG.integers(0, 4, 6)
    p = softmax(z).astype(np.float32)
    rows = np.arange(6)
    loss, g = nn.losses.get("sparse_categorical_crossentropy").value_and_grad(t, p)
    assert loss == pytest.approx(-np.log(p[rows, t]).mean(), rel=1e-5)
    ref = np.zeros_like(p)
    ref[rows, t] = -1 / (6 * p[rows, t])
    np.testing.assert_allclose(g, ref, **TOL)
    loss, g = nn.losses.SparseCategoricalCrossentropy(from_logits=True).value_and_grad(t, z * 40)
    zz = (z * 40).astype(np.float64)  # large logits: the row-max form must not overflow
    lse = zz.max(1) + np.log(np.exp(zz - zz.max(1, keepdims=True)).sum(1))
    assert loss == pytest.approx((lse - zz[rows, t]).mean(), rel=1e-5)
    ref = softmax(zz)
    ref[rows, t] -= 1
    np.testing.assert_allclose(g, ref / 6, **TOL)


def test_categorical_binary_mse():
    z = RNG.normal(size=(5, 3)).astype(np.float32)
    t = np.eye(3, dtype=np.float32)[RNG.integers(0, 3, 5)]
    loss, g = nn.losses.CategoricalCrossentropy(from_logits=True).value_and_grad(t, z)
    assert loss == pytest.approx(-(t * np.log(softmax(z.astype(np.float64)))).sum(1).mean(), rel=1e-5)
    np.testing.assert_allclose(g, (softmax(z) - t) / 5, **TOL)
    p = (1 / (1 + np.exp(-z[:, :1]))).astype(np.float32)
    tb = (RNG.random((5, 1)) > 0.5).astype(np.float32)
    loss, g = nn.losses.get("binary_crossentropy").value_and_grad(tb, p)
    assert loss == pytest.approx(-(tb * np.log(p) + (1 - tb) * np.log(1 - p)).mean(), rel=1e-5)
    np.testing.assert_allclose(g, (p - tb) / (p * (1 - p)) / 5, rtol=1e-3)
    loss, g = nn.losses.BinaryCrossentropy(from_logits=True).value_and_grad(tb, z[:, :1])
    np.testing.assert_allclose(g, (p - tb) / 5, **TOL)
    loss, g = nn.losses.get("mse").value_and_grad(tb, z[:, :1])
    assert loss == pytest.approx(((z[:, :1] - tb) ** 2).mean(), rel=1e-5)
    np.testing.assert_allclose(g, 2 * (z[:, :1] - tb) / 5, **TOL)


def test_probability_clipping_keeps_the_loss_finite():
    p = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    loss = nn.losses.get("sparse_categorical_crossentropy")(np.array([1, 1]), p)
    assert loss == pytest.approx(-np.log(1e-7) / 2, rel=1e-3)


def numpy_steps(name, w, grads, **h):
    """Reference trajectories (Keras' update rules as formulas/optimizers.py states them)."""
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        if name == "sgd":
            m = h["momentum"] * m - h["lr"] * g
            w = w + (h["momentum"] * m - h["lr"] * g if h["nesterov"] else m)
        elif name == "rmsprop":
            v = 0.9 * v + 0.1 * g * g
            w = w - h["lr"] * g / np.sqrt(v + 1e-7)
        else:
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            step = (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-7)
            w = w - h["lr"] * (step + h.get("wd", 0.0) * w)
    return w


@pytest.mark.parametrize("opt, ref", [
    (nn.optimizers.SGD(0.1, momentum=0.9, nesterov=True), ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True))),
    (nn.optimizers.SGD(0.1), ("sgd", dict(lr=0.1, momentum=0.0, nesterov=False))),
    (nn.optimizers.RMSprop(0.01), ("rmsprop", dict(lr=0.01))),
    (nn.optimizers.Adam(0.01), ("adam", dict(lr=0.01))),
    (nn.optimizers.AdamW(0.01, weight_decay=0.1), ("adam", dict(lr=0.01, wd=0.1))),
])
def test_optimizer_steps_match_numpy(opt, ref):
    w0 = RNG.normal(size=(3, 2)).astype(np.float32)
    grads = [RNG.normal(size=(3, 2)).astype(np.float32) for _ in range(3)]
    var = Variable("w", w0.copy())
    for g in grads:
        opt.apply([var], [g])
    expected = numpy_steps(ref[0], w0.astype(np.float64), [g.astype(np.float64) for g in grads], **ref[1])
    np.testing.assert_allclose(var.value, expected, rtol=1e-4, atol=1e-6)
    assert var.value.shape == (3, 2) and opt.iterations == 3


def test_unknown_names_are_clear():
    with pytest.raises(ValueError, match="unknown optimizer"):
        nn.optimizers.get("adagrad")
    with pytest.raises(ValueError, match="unknown loss"):
        nn.losses.get("hinge")
    with pytest.raises(ValueError, match="unknown metric"):
        nn.metrics.resolve("auc", None)
