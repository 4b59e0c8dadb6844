"""A data-parallel fit on device="cuda": gradients are staged through host memory for the Allreduce
and the optimizer state stays on the device. One rank in-process (the 2-rank runs are in
tests/test_distributed.py): the staging path must give the weights of a plain cuda fit."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from symdl import nn
from symdl.nn.device import is_device_array

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                                reason="needs mpi4py: pip install 'symdl[mpi]'")

RNG = np.random.default_rng(5)
X = RNG.normal(size=(10, 6, 6, 1)).astype(np.float32)
Y = RNG.integers(0, 3, size=10)


def cnn() -> nn.Sequential:
    model = nn.Sequential([nn.Input((6, 6, 1)), nn.Conv2D(2, 3, activation="relu"), nn.MaxPooling2D(2),
                           nn.Flatten(), nn.Dense(3, activation="softmax")], seed=4)
    model.compile(optimizer=nn.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], device="cuda")
    return model


def test_a_distributed_cuda_fit_stages_gradients_and_matches_a_plain_one():
    plain, dist = cnn(), cnn()
    runs = []
    for model, distributed in ((plain, False), (dist, nn.Distributed())):
        hist = [model.fit(X, Y, batch_size=4, epochs=1, verbose=0, shuffle=False, distributed=distributed)
                for _ in range(2)]   # a second fit re-broadcasts weights and device optimizer state
        runs.append((model.get_weights(), [h.history for h in hist]))
    (w_plain, h_plain), (w_dist, h_dist) = runs
    for a, b in zip(w_plain, w_dist, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(h_plain, h_dist, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6)
    assert all(is_device_array(v.value) for v in dist.weights)
    assert dist.optimizer.iterations == plain.optimizer.iterations == 6
    assert not np.allclose(w_dist[0], cnn().get_weights()[0])   # it trained
