"""No kernel, driver or model step reads memory before writing it.

Every output, temporary and buffer symdl allocates comes from np.empty. Fresh large allocations are
zero pages, so a read before the first write would pass unnoticed there and go wrong only when the
memory is reused. Here np.empty hands out NaN-filled float arrays: training (layer by layer, then
replayed) must give bit-identical losses and weights.
"""
from __future__ import annotations

import numpy as np
import pytest

from symdl import nn

_real_empty = np.empty


def _nan_empty(shape, dtype=float, order="C", **kw):
    a = _real_empty(shape, dtype=dtype, order=order, **kw)
    if a.dtype.kind == "f":
        a.fill(np.nan)
    return a


MODELS = {
    "mlp": (lambda: [nn.Input((20,)), nn.Dense(16, activation="relu"), nn.Dense(5, activation="softmax")], (20,)),
    "cnn": (lambda: [nn.Input((10, 9, 2)), nn.Conv2D(4, 3, activation="relu", padding="same"), nn.MaxPooling2D(2),
                     nn.Conv2D(3, 3, activation="tanh"), nn.Flatten(), nn.Dense(5, activation="softmax")], (10, 9, 2)),
    "rnn": (lambda: [nn.Input((6, 3)), nn.SimpleRNN(7), nn.Dense(5, activation="softmax")], (6, 3)),
    "lstm": (lambda: [nn.Input((5, 3)), nn.LSTM(4, return_sequences=True), nn.Flatten(),
                      nn.Dense(5, activation="softmax")], (5, 3)),
}


def _train(layers, shape, steps=7):
    rng = np.random.default_rng(3)
    m = nn.Sequential(layers(), seed=1)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    losses = [m.train_on_batch(rng.normal(size=(9, *shape)).astype(np.float32), rng.integers(0, 5, 9))
              for _ in range(steps)]
    return losses, m.get_weights(), m.predict(rng.normal(size=(4, *shape)).astype(np.float32), batch_size=2)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_nan_filled_allocations_change_nothing(model, monkeypatch):
    layers, shape = MODELS[model]
    losses, weights, pred = _train(layers, shape)
    monkeypatch.setattr(np, "empty", _nan_empty)
    nan_losses, nan_weights, nan_pred = _train(layers, shape)
    assert nan_losses == losses
    for a, b in zip(weights, nan_weights, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pred, nan_pred)
