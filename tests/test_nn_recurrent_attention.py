"""symdl.nn SimpleRNN and attention layers against NumPy written here (forward, BPTT, finite
differences), stable from-logits losses under extreme logits, and resumable training files."""
from __future__ import annotations

import numpy as np
import pytest

from symdl import nn
from symdl.datasets import digits

TOL = {"rtol": 2e-4, "atol": 2e-5}


# -- SimpleRNN ---------------------------------------------------------------------------------------

def rnn_numpy(x, W, R, b, act):
    """States h[b, t] = f(x[b, t] W + h[b, t-1] R + b) and the pre-activations."""
    f = np.tanh if act == "tanh" else (lambda a: np.maximum(a, 0))
    h, hs, pres = np.zeros((x.shape[0], W.shape[1])), [], []
    for t in range(x.shape[1]):
        pre = x[:, t] @ W + h @ R + b
        h = f(pre)
        hs.append(h), pres.append(pre)
    return np.stack(hs, 1), np.stack(pres, 1)


def bptt_numpy(x, W, R, hs, pres, G, act):
    """Backpropagation through time for upstream gradients G[b, t, j] on every state."""
    df = (lambda h, p: 1 - h ** 2) if act == "tanh" else (lambda h, p: (p > 0).astype(float))
    gx, gW, gR, gb = np.zeros_like(x), np.zeros_like(W), np.zeros_like(R), np.zeros(W.shape[1])
    carry = np.zeros((x.shape[0], W.shape[1]))
    for t in range(x.shape[1] - 1, -1, -1):
        da = (G[:, t] + carry) * df(hs[:, t], pres[:, t])
        h_prev = hs[:, t - 1] if t else np.zeros_like(hs[:, 0])
        gx[:, t], gW, gR, gb = da @ W.T, gW + x[:, t].T @ da, gR + h_prev.T @ da, gb + da.sum(0)
        carry = da @ R.T
    return gx, gW, gR, gb


@pytest.mark.parametrize("act,seq,bias", [("tanh", False, True), ("tanh", True, False), ("relu", True, True)])
def test_simple_rnn_forward_and_bptt_match_numpy(act, seq, bias):
    rng = np.random.default_rng(1)
    B, T, K, U = 3, 23, 4, 5
    layer = nn.SimpleRNN(U, activation=act, return_sequences=seq, use_bias=bias)
    model = nn.Sequential([nn.Input((T, K)), layer], seed=0)
    model.build()
    if bias:
        layer.bias.value = rng.normal(0, 0.2, U).astype(np.float32)
    x = rng.normal(size=(B, T, K)).astype(np.float32)
    W, R = (v.value.astype(np.float64) for v in (layer.kernel, layer.recurrent_kernel))
    b = layer.bias.value.astype(np.float64) if bias else np.zeros(U)
    hs, pres = rnn_numpy(x.astype(np.float64), W, R, b, act)
    out, ctx = layer.call(x)
    np.testing.assert_allclose(out, hs if seq else hs[:, -1], **TOL)
    G = rng.normal(size=out.shape)
    G_all = G if seq else np.concatenate([np.zeros((B, T - 1, U)), G[:, None]], 1)
    ref = bptt_numpy(x.astype(np.float64), W, R, hs, pres, G_all, act)
    gx, wgrads = layer.backward(ctx, G.astype(np.float32))
    for got, want in zip([gx, *wgrads], ref[:3] + ((ref[3],) if bias else ()), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    assert model.output_shape == ((T, U) if seq else (U,))


def test_simple_rnn_weights_in_keras_order_and_orthogonal_recurrence():
    model = nn.Sequential([nn.Input((8, 6)), nn.SimpleRNN(7), nn.Dense(3)], seed=0)
    assert [w.shape for w in model.get_weights()] == [(6, 7), (7, 7), (7,), (7, 3), (3,)]
    R = model.get_weights()[1]
    np.testing.assert_allclose(R.T @ R, np.eye(7), atol=1e-5)
    new = [np.full_like(w, 0.01 * n) for n, w in enumerate(model.get_weights())]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="activation"):
        nn.SimpleRNN(4, activation="sigmoid")


# -- attention ---------------------------------------------------------------------------------------

def softmax_masked(s, causal):
    if causal:
        t, u = s.shape[-2:]
        s = np.where(np.arange(u)[None, :] <= np.arange(t)[:, None], s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention_numpy(q, v, k, scale, causal):
    return softmax_masked(scale * np.einsum("btd,bsd->bts", q, k), causal) @ v


def mha_numpy(q, v, k, w, causal):
    Wq, bq, Wk, bk, Wv, bv, Wo, bo = w
    Q = np.einsum("bte,ehd->bhtd", q, Wq) + bq[:, None]
    K = np.einsum("bse,ehd->bhsd", k, Wk) + bk[:, None]
    V = np.einsum("bse,ehd->bhsd", v, Wv) + bv[:, None]
    A = softmax_masked(np.einsum("bhtd,bhsd->bhts", Q, K) / np.sqrt(Wq.shape[-1]), causal)
    return np.einsum("bhts,bhsd,hde->bte", A, V, Wo) + bo


def additive_numpy(q, v, k, w, causal):
    W, R, bias, vec = w
    act = np.tanh((q @ W)[:, :, None] + (k @ R)[:, None] + bias)
    return softmax_masked(act @ vec, causal) @ v


def numeric_grads(f, arrays, G, eps=1e-6):
    """d Σ G·f(arrays) / d arrays by central differences in float64."""
    out = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            up = np.sum(G * f())
            a[i] = old - eps
            down = np.sum(G * f())
            a[i] = old
            g[i] = (up - down) / (2 * eps)
        out.append(g)
    return out


def _check(layer, inputs, ref_fn, weights, rng):
    """Forward and every gradient (inputs and weights) of `layer` against the NumPy reference."""
    out, ctx = layer.call([np.float32(a) for a in inputs] if len(inputs) > 1 else np.float32(inputs[0]))
    x64 = [a.astype(np.float64) for a in inputs]
    w64 = [np.array(w.value, dtype=np.float64) for w in weights]
    roles = x64 * 3 if len(x64) == 1 else (x64 + [x64[1]] if len(x64) == 2 else x64)

    def f():
        return ref_fn(*roles, w64)
    np.testing.assert_allclose(out, f(), **TOL)
    G = rng.normal(size=out.shape)
    gin, gw = layer.backward(ctx, G.astype(np.float32))
    gin = [gin] if len(inputs) == 1 else gin
    for got, want in zip([*gin, *gw], numeric_grads(f, x64 + w64, G), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_self_and_cross_match_numpy(causal):
    rng = np.random.default_rng(2)
    layer = nn.Attention(use_scale=True, causal=causal)
    model = nn.Sequential([nn.Input((5, 3)), layer], seed=0)
    model.build()
    layer.scale.value = np.array(0.7, dtype=np.float32)
    x = rng.normal(size=(2, 5, 3))
    _check(layer, [x], lambda q, v, k, w: attention_numpy(q, v, k, w[0], causal), layer.weights, rng)
    assert model.output_shape == (5, 3)
    q, v, k = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 6, 2)), rng.normal(size=(2, 6, 3))
    plain = nn.Attention(causal=causal)
    _check(plain, [q, v, k], lambda q, v, k, w: attention_numpy(q, v, k, 1.0, causal), [], rng)
    _check(plain, [q, k], lambda q, v, k, w: attention_numpy(q, v, k, 1.0, causal), [], rng)
    np.testing.assert_allclose(plain([q, v, k]), attention_numpy(q, v, k, 1.0, causal), **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_matches_numpy(causal):
    rng = np.random.default_rng(3)
    layer = nn.MultiHeadAttention(num_heads=2, key_dim=3, causal=causal)
    model = nn.Sequential([nn.Input((4, 5)), layer], seed=0)
    assert [w.shape for w in model.get_weights()] == [(5, 2, 3), (2, 3)] * 3 + [(2, 3, 5), (5,)]
    model.set_weights([rng.normal(0, 0.5, w.shape) for w in model.get_weights()])
    _check(layer, [rng.normal(size=(2, 4, 5))], lambda q, v, k, w: mha_numpy(q, v, k, w, causal),
           layer.weights, rng)
    cross = nn.MultiHeadAttention(num_heads=2, key_dim=2, use_bias=False, causal=causal)
    q, v = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 5))
    cross([q, v])
    nobias = lambda q, v, k, w: mha_numpy(q, v, k, [w[0], 0 * w[0][0], w[1], 0 * w[1][0], w[2],  # noqa: E731
                                                     0 * w[2][0], w[3], 0], causal)
    _check(cross, [q, v], nobias, cross.weights, rng)


@pytest.mark.parametrize("causal", [False, True])
def test_additive_attention_matches_numpy_and_keras_form(causal):
    rng = np.random.default_rng(4)
    layer = nn.AdditiveAttention(units=4, causal=causal)
    nn.Sequential([nn.Input((5, 3)), layer], seed=0).build()
    layer.weights[2].value = rng.normal(0, 0.3, 4).astype(np.float32)
    _check(layer, [rng.normal(size=(2, 5, 3))], lambda q, v, k, w: additive_numpy(q, v, k, w, causal),
           layer.weights, rng)
    # Keras' AdditiveAttention: scores Σ_d scale[d] tanh(q[t, d] + k[s, d]), no projections
    keras = nn.AdditiveAttention(causal=causal)
    q, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 6, 4))
    keras([q, v])
    scale = rng.normal(size=4)
    for var, val in zip(keras.weights, [np.eye(4), np.eye(4), np.zeros(4), scale], strict=True):
        var.value = val.astype(np.float32)
    ref = softmax_masked(np.tanh(q[:, :, None] + v[:, None]) @ scale, causal) @ v
    np.testing.assert_allclose(keras([q, v]), ref, **TOL)


# -- training ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rows():
    """Digits as sequences: 8 time steps (rows) of 8 features."""
    (xtr, ytr), _ = digits.load_data()
    return xtr[:480].astype(np.float32) / 16, ytr[:480]


def test_rnn_and_attention_models_train_and_round_trip(rows, tmp_path):
    x, y = rows
    for body in ([nn.SimpleRNN(16)],
                 [nn.MultiHeadAttention(2, 4, causal=True), nn.Attention(use_scale=True), nn.Flatten()],
                 [nn.AdditiveAttention(), nn.Flatten()]):
        model = nn.Sequential([nn.Input((8, 8)), *body, nn.Dense(10, activation="softmax")], seed=0)
        model.compile(optimizer=nn.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        loss = model.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
        assert loss[-1] < 0.8 * loss[0]
        model.save(tmp_path / "m.symdl")
        again = nn.load_model(tmp_path / "m.symdl")
        np.testing.assert_array_equal(again.predict(x[:16]), model.predict(x[:16]))


@pytest.mark.parametrize("loss,target", [
    (nn.losses.SparseCategoricalCrossentropy(from_logits=True), lambda n: np.arange(n) % 3),
    (nn.losses.CategoricalCrossentropy(from_logits=True), lambda n: np.eye(3)[np.arange(n) % 3]),
    (nn.losses.BinaryCrossentropy(from_logits=True), lambda n: (np.arange(n) % 2)[:, None] * np.ones(3)),
])
def test_extreme_logits_give_finite_losses_and_gradients(loss, target):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]] * 3, dtype=np.float32)
    t = target(len(z))
    value, grad = loss.value_and_grad(t, z)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    if isinstance(loss, nn.losses.SparseCategoricalCrossentropy):  # (softmax(z) - onehot) / B
        p = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(grad, (p / p.sum(1, keepdims=True) - np.eye(3)[t]) / len(z), atol=1e-6)
    # through model.fit: a Dense layer whose logits are ±1e4
    model = nn.Sequential([nn.Input((2,)), nn.Dense(3)], seed=0)
    model.set_weights([np.array([[1e4, -1e4, 0], [-1e4, 1e4, 5e3]], np.float32), np.zeros(3, np.float32)])
    model.compile(optimizer=nn.optimizers.SGD(1e-6), loss=loss)
    x = np.tile(np.eye(2, dtype=np.float32), (3, 1))
    hist = model.fit(x, t, epochs=2, batch_size=3, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_save_load_resumes_training_exactly(rows, tmp_path, optimizer):
    x, y = rows[0][:192], rows[1][:192]

    def make():
        model = nn.Sequential([nn.Input((8, 8)), nn.SimpleRNN(8), nn.Dropout(0.2, seed=1),
                               nn.Dense(10, activation="softmax")], seed=7)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        return model
    straight = make()
    full = straight.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    first = make()
    head = first.fit(x, y, epochs=2, batch_size=32, verbose=0).history["loss"]
    first.save(tmp_path / "ckpt.symdl")
    resumed = nn.load_model(tmp_path / "ckpt.symdl")
    assert resumed.optimizer.iterations == first.optimizer.iterations == 12
    tail = resumed.fit(x, y, epochs=3, initial_epoch=2, batch_size=32, verbose=0).history["loss"]
    assert head + tail == full
    for a, b in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob(".*.tmp"))
