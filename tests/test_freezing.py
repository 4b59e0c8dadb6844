"""Freezing and unfreezing layers between steps (`layer.trainable = False`, as in Keras): each
weight keeps its own optimizer slots, keyed by its position among the model's weights."""
from __future__ import annotations

import numpy as np
import pytest

from symdl import nn

LR, MU = 0.05, 0.9


def _model(replay: bool, optimizer=None):
    m = nn.Sequential([nn.Input((6,)), nn.Dense(5, activation="relu"), nn.Dense(4, activation="tanh"),
                       nn.Dense(3, activation="softmax")], seed=0)
    m.compile(optimizer=optimizer or nn.optimizers.SGD(LR, momentum=MU), loss="sparse_categorical_crossentropy")
    if not replay:
        m._replay = None
    return m


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(8, 6)).astype(np.float32), rng.integers(0, 3, 8)


@pytest.mark.parametrize("replay", [True, False])
@pytest.mark.parametrize("frozen", [0, 1, 2])
def test_freezing_a_layer_keeps_every_other_weights_slots(replay, frozen):
    m = _model(replay)
    x, y = _data()
    for _ in range(4):  # enough for the replay to record and take over
        m.train_on_batch(x, y)
    layer = m.layers[frozen]
    layer.trainable = False
    assert not any(v.trainable for v in layer.weights)
    kept = [v.value.copy() for v in layer.weights]
    slots = {k: a.copy() for k, a in m.optimizer.get_state()[1].items()}
    for _ in range(3):
        _, _, grads = m._gradients(x, y)  # the trainable weights' gradients at this state
        keys = [n for n, v in enumerate(m.weights) if v.trainable]
        expected = []
        for n, g in zip(keys, grads, strict=True):  # Keras' momentum SGD, on each weight's own slot
            slots[f"{n}/v"] = MU * slots[f"{n}/v"] - LR * g.reshape(-1)
            expected.append(m.weights[n].value.reshape(-1) + slots[f"{n}/v"])
        m.train_on_batch(x, y)
        for n, e in zip(keys, expected, strict=True):
            np.testing.assert_allclose(m.weights[n].value.reshape(-1), e, rtol=1e-5, atol=1e-6)
    for v, k in zip(layer.weights, kept, strict=True):
        np.testing.assert_array_equal(v.value, k)
    layer.trainable = True  # its slots resume where they stopped
    for n, v in enumerate(m.weights):
        if v in layer.weights:
            np.testing.assert_array_equal(m.optimizer.get_state()[1][f"{n}/v"], slots[f"{n}/v"])
    m.train_on_batch(x, y)
    assert all(v.trainable for v in m.weights)
    assert not np.array_equal(layer.weights[0].value, kept[0])


def test_a_model_saved_with_a_frozen_layer_resumes_alike(tmp_path):
    a = _model(True, nn.optimizers.Adam(0.01))
    x, y = _data(3)
    for _ in range(3):
        a.train_on_batch(x, y)
    a.layers[0].trainable = False
    a.train_on_batch(x, y)
    a.save(tmp_path / "m.npz")
    b = nn.load_model(tmp_path / "m.npz")
    b.layers[0].trainable = False
    for _ in range(2):
        assert a.train_on_batch(x, y) == pytest.approx(b.train_on_batch(x, y), rel=1e-6)
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
