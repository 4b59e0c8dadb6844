"""The recorded training step (symdl/nn/replay.py) against the step run layer by layer.

Each case trains two copies of one model from the same weights on the same batches (new data
every step, so a value recorded from one batch and replayed with another shows): one replays its
recorded step, the other has the replay switched off. Losses, outputs' metrics and every weight
must agree to float32 rounding, and the replay must really have run (or been refused, with its
reason, where it cannot repeat the step: dropout's masks are drawn in Python).
"""
from __future__ import annotations

import numpy as np
import pytest

from symdl import nn

STEPS = 7  # steps 1 and 2 are recorded, 3 checked both ways, 4-6 replayed


def _models(layers, loss, optimizer, seed=0):
    a = nn.Sequential(layers(), seed=seed)
    b = nn.Sequential(layers(), seed=seed)
    for m in (a, b):
        m.compile(optimizer=nn.optimizers.get(optimizer()), loss=loss, metrics=["accuracy"] if "categorical" in str(loss) else None)
    b._replay = None  # layer by layer
    return a, b


def _targets(loss, rng, n, classes):
    if loss == "sparse_categorical_crossentropy":
        return rng.integers(0, classes, n)
    if loss == "categorical_crossentropy" or (isinstance(loss, nn.losses.CategoricalCrossentropy)):
        return np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)]
    if loss == "binary_crossentropy" or isinstance(loss, nn.losses.BinaryCrossentropy):
        return rng.integers(0, 2, (n, classes)).astype(np.float32)
    return rng.normal(size=(n, classes)).astype(np.float32)


def _train_both(a, b, xs, ys):
    for x, y in zip(xs, ys, strict=True):
        la, lb = a.train_on_batch(x, y), b.train_on_batch(x, y)
        assert la == pytest.approx(lb, rel=1e-5, abs=1e-6)
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


MODELS = {
    "mlp": (lambda: [nn.Input((12,)), nn.Dense(9, activation="relu"), nn.Dense(7, activation="tanh"),
                     nn.Dense(4, activation="softmax")], (12,), 4),
    "conv": (lambda: [nn.Input((8, 7, 2)), nn.Conv2D(3, 3, activation="relu", padding="same"),
                      nn.MaxPooling2D(2), nn.Flatten(), nn.Dense(4, activation="softmax")], (8, 7, 2), 4),
    "rnn": (lambda: [nn.Input((5, 3)), nn.SimpleRNN(6), nn.Dense(4, activation="softmax")], (5, 3), 4),
    "lstm": (lambda: [nn.Input((4, 3)), nn.LSTM(5), nn.Dense(4, activation="softmax")], (4, 3), 4),
    "logits": (lambda: [nn.Input((12,)), nn.Dense(8, activation="sigmoid"), nn.Dense(4)], (12,), 4),
}
OPTIMIZERS = {
    "sgd": lambda: nn.optimizers.SGD(0.05),
    "momentum": lambda: nn.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda: nn.optimizers.RMSprop(0.01),
    "adam": lambda: nn.optimizers.Adam(0.01),
    "adamw": lambda: nn.optimizers.AdamW(0.01),
}
LOSSES = {"mlp": "sparse_categorical_crossentropy", "conv": "categorical_crossentropy",
          "rnn": "sparse_categorical_crossentropy", "lstm": "mse",
          "logits": nn.losses.CategoricalCrossentropy(from_logits=True)}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_replay_equals_layer_by_layer(model, optimizer):
    layers, shape, classes = MODELS[model]
    loss = LOSSES[model]
    a, b = _models(layers, loss, OPTIMIZERS[optimizer])
    rng = np.random.default_rng(hash((model, optimizer)) % 2**32)
    xs = rng.normal(size=(STEPS, 6, *shape)).astype(np.float32)
    ys = [_targets(loss, rng, 6, classes) for _ in range(STEPS)]
    _train_both(a, b, xs, ys)
    assert not a._replay.refused, a._replay.refused
    assert len(a._replay.plans) == 1
    assert "def step(" in a._replay.source() and "y.dense" in a._replay.source()


@pytest.mark.parametrize("loss", ["binary_crossentropy", "mse", nn.losses.BinaryCrossentropy(from_logits=True),
                                  nn.losses.SparseCategoricalCrossentropy(from_logits=True)])
def test_every_loss_replays(loss):
    layers = lambda: [nn.Input((5,)), nn.Dense(3, activation="sigmoid" if isinstance(loss, str) and "binary" in loss else None)]
    a, b = _models(layers, loss, lambda: nn.optimizers.Adam(0.02))
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(STEPS, 4, 5)).astype(np.float32)
    _train_both(a, b, xs, [_targets(loss if not isinstance(loss, nn.losses.SparseCategoricalCrossentropy)
                                     else "sparse_categorical_crossentropy", rng, 4, 3) for _ in range(STEPS)])
    assert not a._replay.refused and a._replay.plans


def test_learning_rate_and_weights_changed_between_steps():
    """A new learning rate is read at every replay; weights set from outside record again; each batch
    shape has its own plan."""
    a, b = _models(MODELS["mlp"][0], "sparse_categorical_crossentropy", lambda: nn.optimizers.Adam(0.01))
    rng = np.random.default_rng(5)
    xs, ys = rng.normal(size=(3 * STEPS, 6, 12)).astype(np.float32), rng.integers(0, 4, (3 * STEPS, 6))
    _train_both(a, b, xs[:STEPS], ys[:STEPS])
    for m in (a, b):
        m.optimizer.learning_rate = 0.2
    _train_both(a, b, xs[STEPS:2 * STEPS], ys[STEPS:2 * STEPS])
    w = [v * 0.5 for v in a.get_weights()]
    a.set_weights(w), b.set_weights(w)
    _train_both(a, b, xs[2 * STEPS:], ys[2 * STEPS:])
    _train_both(a, b, xs[:STEPS, :5], ys[:STEPS, :5])  # another batch size: a plan of its own
    assert len(a._replay.plans) == 2 and not a._replay.refused


def test_fit_with_validation_and_uneven_last_batch():
    a, b = _models(MODELS["conv"][0], "categorical_crossentropy", lambda: nn.optimizers.RMSprop(0.01))
    rng = np.random.default_rng(7)
    x = rng.normal(size=(50, 8, 7, 2)).astype(np.float32)
    y = _targets("categorical_crossentropy", rng, 50, 4)
    ha = a.fit(x, y, batch_size=8, epochs=3, validation_split=0.2, verbose=0, shuffle=True)
    hb = b.fit(x, y, batch_size=8, epochs=3, validation_split=0.2, verbose=0, shuffle=True)
    for k in hb.history:
        np.testing.assert_allclose(ha.history[k], hb.history[k], rtol=1e-5, atol=1e-6)
    assert a._replay.plans and not a._replay.refused


def test_labels_out_of_range_are_refused_before_any_kernel_runs():
    a, _ = _models(MODELS["mlp"][0], "sparse_categorical_crossentropy", lambda: nn.optimizers.SGD(0.1))
    rng = np.random.default_rng(9)
    x = rng.normal(size=(6, 12)).astype(np.float32)
    for _ in range(STEPS):
        a.train_on_batch(x, rng.integers(0, 4, 6))
    assert a._replay.plans
    before = a.get_weights()
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        a.train_on_batch(x, np.array([0, 1, 2, 3, 4, 0]))
    for u, v in zip(before, a.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)


def test_dropout_is_refused_with_its_reason_and_trains_alike():
    layers = lambda: [nn.Input((12,)), nn.Dense(9, activation="relu"), nn.Dropout(0.5), nn.Dense(4, activation="softmax")]
    a, b = _models(layers, "sparse_categorical_crossentropy", lambda: nn.optimizers.SGD(0.1))
    rng = np.random.default_rng(11)
    xs, ys = rng.normal(size=(STEPS, 6, 12)).astype(np.float32), rng.integers(0, 4, (STEPS, 6))
    _train_both(a, b, xs, ys)
    assert not a._replay.plans
    assert "no kernel of the step wrote" in next(iter(a._replay.refused.values()))


class _NumpyScale(nn.layers.Layer):
    """A custom layer doing its arithmetic in NumPy: nothing a recording can see."""

    def build(self, input_shape, rng):
        self.output_shape = input_shape

    def call(self, x, training=False):
        return x * 2.0, None

    def backward(self, ctx, grad, need_input_grad=True):
        return grad * 2.0, []


def test_numpy_arithmetic_between_kernels_is_refused():
    layers = lambda: [nn.Input((12,)), nn.Dense(9, activation="relu"), _NumpyScale(), nn.Dense(4, activation="softmax")]
    a, b = _models(layers, "sparse_categorical_crossentropy", lambda: nn.optimizers.Adam(0.01))
    rng = np.random.default_rng(13)
    xs, ys = rng.normal(size=(STEPS, 6, 12)).astype(np.float32), rng.integers(0, 4, (STEPS, 6))
    _train_both(a, b, xs, ys)
    assert not a._replay.plans and a._replay.refused


def test_a_replay_that_disagrees_is_dropped(monkeypatch):
    """The one step run both ways decides: a replay that computes anything else is never used."""
    from symdl.nn import replay

    run = replay.Plan.run

    def wrong(self, x, t, state, hyper, parallel):
        new_state, loss, out = run(self, x, t, state, hyper, parallel)
        new_state[0] = new_state[0] + 1.0
        return new_state, loss, out

    monkeypatch.setattr(replay.Plan, "run", wrong)
    a, b = _models(MODELS["mlp"][0], "sparse_categorical_crossentropy", lambda: nn.optimizers.SGD(0.1))
    rng = np.random.default_rng(17)
    xs, ys = rng.normal(size=(STEPS, 6, 12)).astype(np.float32), rng.integers(0, 4, (STEPS, 6))
    _train_both(a, b, xs, ys)
    assert not a._replay.plans
    assert "disagreed" in next(iter(a._replay.refused.values()))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_predict_replays_its_forward_pass_and_follows_new_weights(model):
    """predict's forward pass is replayed too; it reads the weights as they are at each call, so
    training between predictions (new weight arrays every step) is seen at once."""
    layers, shape, classes = MODELS[model]
    a, b = _models(layers, LOSSES[model], OPTIMIZERS["adam"])
    rng = np.random.default_rng(19)
    x = rng.normal(size=(20, *shape)).astype(np.float32)
    for step in range(3):
        for _ in range(3):
            np.testing.assert_allclose(a.predict(x, batch_size=8), b.predict(x, batch_size=8), rtol=1e-5, atol=1e-6)
        y = _targets(LOSSES[model], rng, 20, classes)
        a.train_on_batch(x, y), b.train_on_batch(x, y)
    assert any(k[0] == "forward" for k in a._replay.plans), a._replay.refused
    va, vb = (next(v for layer in m.layers for v in layer.weights if v.value.ndim > 1) for m in (a, b))
    va.value = np.asfortranarray(va.value)  # another layout: not replayed
    vb.value = va.value.copy()
    np.testing.assert_allclose(a.predict(x, batch_size=8), b.predict(x, batch_size=8), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_batches_that_are_views_of_a_larger_array(model):
    """A batch sliced from the data set (a view at any offset, contiguous or strided) trains and
    predicts as its copy does: the recording roots its views at a copy, a replay at the batch."""
    layers, shape, classes = MODELS[model]
    a, b = _models(layers, LOSSES[model], OPTIMIZERS["adam"])
    rng = np.random.default_rng(23)
    data = rng.normal(size=(40, *shape)).astype(np.float32)
    views = [data[k:k + 8] for k in (0, 8, 3, 17, 29)] + [data[1:17:2], data[::5]]
    for x in views:  # contiguous views at several offsets, then strided ones
        y = _targets(LOSSES[model], rng, 8, classes)
        la, lb = a.train_on_batch(x, y), b.train_on_batch(x.copy(), y)
        assert la == pytest.approx(lb, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(a.predict(data[5:13], batch_size=8), b.predict(data[5:13].copy(), batch_size=8),
                                   rtol=1e-5, atol=1e-6)
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    assert a._replay.plans and not a._replay.refused, a._replay.refused
    np.testing.assert_allclose(a.predict(data, batch_size=8), b.predict(data, batch_size=8), rtol=1e-5, atol=1e-6)


def test_a_batch_that_is_its_own_target_is_recorded_apart():
    """An autoencoder's step fed x as its own targets (fit(x, x)) is recorded with the batch and
    the targets as two inputs: a later step with different targets reads each from its own array."""
    layers = lambda: [nn.Input((6,)), nn.Dense(3, activation="tanh"), nn.Dense(6)]  # noqa: E731
    a, b = _models(layers, "mse", OPTIMIZERS["adam"])
    rng = np.random.default_rng(29)
    x = rng.normal(size=(8, 6)).astype(np.float32)
    _train_both(a, b, [x] * STEPS, [x] * STEPS)
    xs = [rng.normal(size=(8, 6)).astype(np.float32) for _ in range(3)]
    _train_both(a, b, xs, [rng.normal(size=(8, 6)).astype(np.float32) for _ in range(3)])
    assert a._replay.plans and not a._replay.refused, a._replay.refused


def _freeze_first(m):
    m.layers[0].trainable = False


def _unfreeze_first(m):
    m.layers[0].trainable = True


def _reload_optimizer(m):
    """The optimizer's slots replaced by equal copies (what loading a saved model does)."""
    m.optimizer.set_state(*m.optimizer.get_state())


def _scale_weights(m):
    m.set_weights([w * 0.5 for w in m.get_weights()])


def _new_learning_rate(m):
    m.optimizer.learning_rate = 0.03


def _add_layer(m):
    m.add(nn.Dense(4, activation="softmax"))


# what a user may do between two steps; each hits the short path of a replayed step (replay.py Hot)
BETWEEN_STEPS = {"freeze": _freeze_first, "unfreeze": _unfreeze_first, "reload optimizer": _reload_optimizer,
                 "set_weights": _scale_weights, "learning rate": _new_learning_rate, "add a layer": _add_layer}


@pytest.mark.parametrize("event", sorted(BETWEEN_STEPS))
def test_what_changes_between_replayed_steps_is_seen(event):
    """After some replayed steps, the change applies to both copies; from the next step on they must
    still agree, whatever the replay recorded before (a layer added after training once replayed the
    old step's layers)."""
    layers = lambda: [nn.Input((12,)), nn.Dense(9, activation="relu"), nn.Dense(4, activation="softmax")]  # noqa: E731
    a, b = _models(layers, "sparse_categorical_crossentropy", OPTIMIZERS["adam"])
    if event == "unfreeze":
        _freeze_first(a), _freeze_first(b)
    rng = np.random.default_rng(31)
    xs, ys = rng.normal(size=(2 * STEPS, 6, 12)).astype(np.float32), rng.integers(0, 4, (2 * STEPS, 6))
    _train_both(a, b, xs[:STEPS], ys[:STEPS])
    for _ in range(4):  # predict's own recording too
        a.predict(xs[0], verbose=0)
    assert a._replay.hot is not None
    BETWEEN_STEPS[event](a), BETWEEN_STEPS[event](b)
    np.testing.assert_allclose(a.predict(xs[0], verbose=0), b.predict(xs[0], verbose=0), rtol=1e-5, atol=1e-6)
    _train_both(a, b, xs[STEPS:], ys[STEPS:])
    np.testing.assert_allclose(a.predict(xs[0], verbose=0), b.predict(xs[0], verbose=0), rtol=1e-5, atol=1e-6)
    assert a._replay.plans and not a._replay.refused, a._replay.refused


def test_the_short_path_follows_batch_shapes_and_layouts():
    """Batch sizes alternating step by step, and a strided batch between contiguous ones: each step
    takes its own signature's plan (or the full checks), never the last one's."""
    a, b = _models(MODELS["mlp"][0], "sparse_categorical_crossentropy", OPTIMIZERS["sgd"])
    rng = np.random.default_rng(37)
    data, labels = rng.normal(size=(64, 12)).astype(np.float32), rng.integers(0, 4, 64)
    batches = [slice(k, k + n) for k in range(0, 40, 4) for n in (6, 5)] + [slice(0, 24, 3)] * 5
    _train_both(a, b, [data[s] for s in batches], [labels[s] for s in batches])
    assert a._replay.hot is not None and a._replay.hot.x_shape == (8, 12) and not a._replay.refused
