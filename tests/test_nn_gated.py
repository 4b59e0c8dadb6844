"""symdl.nn LSTM and GRU against NumPy written here: forward and backpropagation through time over
20 steps, finite differences, Keras weight shapes and order, training and saving."""
from __future__ import annotations

import numpy as np
import pytest

from symdl import nn


def sig(a):
    return 1 / (1 + np.exp(-a))


def lstm_numpy(x, W, U, b, G):
    """Keras LSTM from zero states (gates i, f, c, o): the states and, for upstream gradients G on
    every state, the gradients of x, W, U, b by hand-written BPTT."""
    B, T, _ = x.shape
    n = U.shape[0]
    h, c, keep = np.zeros((B, n)), np.zeros((B, n)), []
    for t in range(T):
        i, f, g, o = np.split(x[:, t] @ W + h @ U + b, 4, axis=1)
        i, f, g, o = sig(i), sig(f), np.tanh(g), sig(o)
        keep.append((h, c, i, f, g, o))
        c = f * c + i * g
        h = o * np.tanh(c)
        keep[-1] += (c, h)
    hs = np.stack([k[-1] for k in keep], 1)
    gx, gW, gU, gb = np.zeros_like(x), np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
    dh_next, dc_next = np.zeros((B, n)), np.zeros((B, n))
    for t in reversed(range(T)):
        h_prev, c_prev, i, f, g, o, c, _ = keep[t]
        dh = G[:, t] + dh_next
        do = dh * np.tanh(c)
        dc = dh * o * (1 - np.tanh(c) ** 2) + dc_next
        dz = np.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g ** 2),
                             do * o * (1 - o)], axis=1)
        dc_next = dc * f
        gW, gU, gb = gW + x[:, t].T @ dz, gU + h_prev.T @ dz, gb + dz.sum(0)
        gx[:, t], dh_next = dz @ W.T, dz @ U.T
    return hs, (gx, gW, gU, gb)


def gru_numpy(x, W, U, b, G):
    """Keras GRU (reset_after=True, gates z, r, h; bias (2, 3n)) from a zero state, and BPTT."""
    B, T, _ = x.shape
    n = U.shape[0]
    h, keep = np.zeros((B, n)), []
    for t in range(T):
        xz, xr, xh = np.split(x[:, t] @ W + b[0], 3, axis=1)
        rz, rr, rh = np.split(h @ U + b[1], 3, axis=1)
        z, r = sig(xz + rz), sig(xr + rr)
        nn_ = np.tanh(xh + r * rh)
        keep.append((h, z, r, rh, nn_))
        h = z * h + (1 - z) * nn_
    hs = np.stack([k[1] * k[0] + (1 - k[1]) * k[4] for k in keep], 1)
    gx, gW, gU, gb = np.zeros_like(x), np.zeros_like(W), np.zeros_like(U), np.zeros_like(b)
    dh_next = np.zeros((B, n))
    for t in reversed(range(T)):
        h_prev, z, r, rh, nn_ = keep[t]
        dh = G[:, t] + dh_next
        dan = dh * (1 - z) * (1 - nn_ ** 2)
        daz = dh * (h_prev - nn_) * z * (1 - z)
        dar = dan * rh * r * (1 - r)
        dX, dR = np.concatenate([daz, dar, dan], 1), np.concatenate([daz, dar, dan * r], 1)
        gW, gU = gW + x[:, t].T @ dX, gU + h_prev.T @ dR
        gb = gb + np.stack([dX.sum(0), dR.sum(0)])
        gx[:, t], dh_next = dX @ W.T, dh * z + dR @ U.T
    return hs, (gx, gW, gU, gb)


CELLS = {"LSTM": (nn.LSTM, lstm_numpy), "GRU": (nn.GRU, gru_numpy)}


def built(kind, units, seq, steps=20, features=4, seed=0):
    cls, _ = CELLS[kind]
    layer = cls(units, return_sequences=seq)
    model = nn.Sequential([nn.Input((steps, features)), layer], seed=seed)
    model.build()
    rng = np.random.default_rng(seed + 1)
    layer.bias.value = rng.normal(0, 0.3, layer.bias.value.shape).astype(np.float32)
    return model, layer


@pytest.mark.parametrize("kind", sorted(CELLS))
@pytest.mark.parametrize("seq", [False, True])
def test_forward_and_bptt_match_numpy_over_20_steps(kind, seq):
    B, T, K, n = 3, 20, 4, 5
    model, layer = built(kind, n, seq, T, K)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(B, T, K)).astype(np.float32)
    W, U, b = (v.value.astype(np.float64) for v in (layer.kernel, layer.recurrent_kernel, layer.bias))
    out, ctx = layer.call(x)
    G = rng.normal(size=out.shape)
    G_all = G if seq else np.concatenate([np.zeros((B, T - 1, n)), G[:, None]], 1)
    hs, ref = CELLS[kind][1](x.astype(np.float64), W, U, b, G_all)
    np.testing.assert_allclose(out, hs if seq else hs[:, -1], rtol=1e-4, atol=1e-5)
    gx, wgrads = layer.backward(ctx, G.astype(np.float32))
    for name, got, want in zip(["x", "kernel", "recurrent_kernel", "bias"], [gx, *wgrads], ref, strict=True):
        assert got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * max(1, np.abs(want).max()), err_msg=name)
    assert model.output_shape == ((T, n) if seq else (n,))


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_gradients_match_finite_differences_in_float64(kind):
    _, layer = built(kind, 3, True, steps=6, features=2, seed=3)
    for v in layer.weights:
        v.value = v.value.astype(np.float64)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 6, 2))
    G = rng.normal(size=(2, 6, 3))
    _, ctx = layer.call(x)
    gx, wgrads = layer.backward(ctx, G)
    for target, got in zip([None, *layer.weights], [gx, *wgrads], strict=True):
        base = x if target is None else target.value
        d = rng.normal(size=base.shape)
        eps = 1e-6
        values = []
        for s in (1, -1):
            moved = base + s * eps * d
            if target is None:
                values.append((layer.call(moved)[0] * G).sum())
            else:
                target.value = moved
                values.append((layer.call(x)[0] * G).sum())
                target.value = base
        fd = (values[0] - values[1]) / (2 * eps)
        assert abs((got * d).sum() - fd) <= 1e-6 * max(1.0, abs(fd)), (target and target.name, fd)


def test_keras_weight_shapes_order_and_forget_bias():
    model = nn.Sequential([nn.Input((8, 6)), nn.LSTM(7), nn.GRU(5), nn.Dense(3)], seed=0)
    with pytest.raises(ValueError, match="inputs \\(batch, time, features\\)"):
        model.build()
    model = nn.Sequential([nn.Input((8, 6)), nn.LSTM(7, return_sequences=True), nn.GRU(5), nn.Dense(3)], seed=0)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(6, 28), (7, 28), (28,), (7, 15), (5, 15), (2, 15), (5, 3), (3,)]
    b = model.get_weights()[2]
    np.testing.assert_array_equal(b, np.r_[np.zeros(7), np.ones(7), np.zeros(14)])  # unit_forget_bias
    with pytest.raises(ValueError, match="activation"):
        nn.LSTM(4, activation="relu")
    with pytest.raises(ValueError, match="reset_after"):
        nn.GRU(4, reset_after=False)


def test_an_lstm_model_trains_saves_and_loads(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 6, 3)).astype(np.float32)
    y = (x[:, :, 0].sum(1) > 0).astype(np.int64)  # the sign of a running sum: needs the sequence
    model = nn.Sequential([nn.Input((6, 3)), nn.LSTM(8), nn.Dense(2, activation="softmax")], seed=1)
    model.compile(optimizer=nn.optimizers.Adam(0.03), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    path = tmp_path / "lstm.symdl"
    model.save(path)
    again = nn.load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
