"""Acceptance tests for symdl.nn (issue 4): Keras-order weights against an independent NumPy
forward pass, interrupting fit, refusing bad data before any training step, and (slow, opt-in)
the documents' MNIST models on the shared real MNIST test set."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from symdl import nn
from symdl.datasets import digits, mnist
from symdl.nn import zoo

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture(scope="module")
def data():
    """The bundled digits as flat (n, 64) float32 rows in [0, 1], int64 labels."""
    (xtr, ytr), (xte, yte) = digits.load_data()
    flat = lambda x: x.reshape(len(x), -1).astype(np.float32) / 16  # noqa: E731
    return (flat(xtr), ytr.astype(np.int64)), (flat(xte), yte.astype(np.int64))


# -- an independent NumPy forward pass on Keras-order weights ------------------------------------
def _act(name: str, z: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "softmax":
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    assert name == "linear"
    return z


def _conv2d(x, kernel, bias, padding):
    """Cross-correlation, stride 1, kernel (kh, kw, in, out) as Keras stores it."""
    kh, kw = kernel.shape[:2]
    if padding == "same":
        x = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((len(x), h, w, kernel.shape[3]))
    for m in range(kh):
        for n in range(kw):
            out += np.einsum("bijc,co->bijo", x[:, m:m + h, n:n + w, :], kernel[m, n])
    return out + bias


def _maxpool2(x):
    b, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _simple_rnn(x, kernel, recurrent, bias, return_sequences):
    h, states = np.zeros((len(x), kernel.shape[1])), []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ kernel + h @ recurrent + bias)
        states.append(h)
    return np.stack(states, axis=1) if return_sequences else h


def _numpy_forward(model, x):
    """The model's output from get_weights() alone, in float64."""
    weights = [w.astype(np.float64) for w in model.get_weights()]
    x = x.astype(np.float64)
    for layer in model.layers:
        kind, cfg = type(layer).__name__, layer.get_config()
        if kind == "Conv2D":
            kernel, bias = weights.pop(0), weights.pop(0)
            x = _act(cfg["activation"], _conv2d(x, kernel, bias, cfg["padding"]))
        elif kind == "MaxPooling2D":
            x = _maxpool2(x)
        elif kind == "Flatten":
            x = x.reshape(len(x), -1)
        elif kind == "Dense":
            kernel, bias = weights.pop(0), weights.pop(0)
            x = _act(cfg["activation"], x @ kernel + bias)
        elif kind == "SimpleRNN":
            kernel, recurrent, bias = weights.pop(0), weights.pop(0), weights.pop(0)
            x = _simple_rnn(x, kernel, recurrent, bias, cfg["return_sequences"])
        else:
            raise AssertionError(f"no NumPy reference for {kind}")
    assert not weights
    return x


@pytest.mark.parametrize("kind", ["conv_dense", "rnn"])
def test_keras_order_weights_match_an_independent_numpy_forward(kind, data):
    (xtr, ytr), (xte, _) = data
    if kind == "conv_dense":
        shape = (8, 8, 1)
        layers = [nn.Conv2D(6, (3, 3), activation="relu"), nn.MaxPooling2D((2, 2)),
                  nn.Conv2D(4, (3, 3), padding="same", activation="tanh"), nn.Flatten(),
                  nn.Dense(16, activation="relu"), nn.Dense(10, activation="softmax")]
    else:
        shape = (8, 8)
        layers = [nn.SimpleRNN(12, return_sequences=True), nn.SimpleRNN(8), nn.Dense(10, activation="softmax")]
    model = nn.Sequential([nn.Input(shape), *layers], seed=1)
    model.compile(optimizer=nn.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    # one epoch first, so that biases and recurrent kernels are no longer their initial values
    model.fit(xtr[:256].reshape(-1, *shape), ytr[:256], epochs=1, batch_size=32, verbose=0)
    assert all(np.abs(w).max() > 0 for w in model.get_weights())
    x = xte[:64].reshape(-1, *shape)
    np.testing.assert_allclose(model.predict(x), _numpy_forward(model, x), rtol=1e-4, atol=2e-6)


# -- interrupting fit ------------------------------------------------------------------------------
class InterruptAt(nn.Callback):
    """Raises KeyboardInterrupt (as Ctrl-C would) at `batch` of `epoch` (0-based)."""

    def __init__(self, epoch: int, batch: int):
        super().__init__()
        self.at, self.epoch, self.ended, self.weights_after = (epoch, batch), None, False, {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.weights_after[epoch] = self.model.get_weights()

    def on_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt

    def on_train_end(self, logs=None):
        self.ended = True


def test_interrupted_fit_returns_history_and_leaves_a_loadable_checkpoint(tmp_path, data, capsys):
    (xtr, ytr), (xte, _) = data
    x, y = xtr[:320], ytr[:320]  # 10 batches of 32 per epoch
    model = nn.Sequential([nn.Input((64,)), nn.Dense(16, activation="relu"),
                           nn.Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = InterruptAt(epoch=1, batch=3)  # batch 4 of epoch 2
    ckpt = nn.ModelCheckpoint(str(tmp_path / "ckpt-{epoch:02d}.symdl"))
    hist = model.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[ckpt, stop])

    assert isinstance(hist, nn.History) and hist is model.history
    assert hist.interrupted and stop.ended
    assert hist.epoch == [0] and len(hist.history["loss"]) == len(hist.history["accuracy"]) == 1
    assert "interrupted" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-01.symdl"]  # no temporary file left
    loaded = nn.load_model(tmp_path / "ckpt-01.symdl")
    for w, w1 in zip(loaded.get_weights(), stop.weights_after[0], strict=True):
        np.testing.assert_array_equal(w, w1)
    # the file's weights give the predictions a NumPy forward pass gives for them
    np.testing.assert_allclose(loaded.predict(xte), _numpy_forward(loaded, xte), rtol=1e-4, atol=2e-6)
    # the interrupted model trains on afterwards
    assert len(model.fit(x, y, epochs=1, batch_size=32, verbose=0).history["loss"]) == 1


# -- bad data is refused before any training step --------------------------------------------------
@pytest.fixture
def mlp():
    model = nn.Sequential([nn.Input((64,)), nn.Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.build()
    calls = []
    forward = model.forward
    model.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # counts kernel runs
    return model, calls


def _bad(x, y, what):
    x, y = x.copy(), y.copy()
    if what == "label_high":
        y[-1] = 10  # the last sample: a per-batch check would see it only after the other batches' steps
    elif what == "label_negative":
        y[-1] = -1
    elif what == "label_fraction":
        y = y.astype(np.float32)
        y[-1] = 2.5
    elif what == "nan_input":
        x[-1, 5] = np.nan
    elif what == "inf_input":
        x[-1, 5] = np.inf
    elif what == "wide_input":
        x = np.concatenate([x, x[:, :1]], axis=1)
    elif what == "image_input":
        x = x.reshape(-1, 8, 8)
    elif what == "count_mismatch":
        y = y[:-1]
    elif what == "one_hot_labels":
        y = np.eye(10, dtype=np.float32)[y]
    return x, y


@pytest.mark.parametrize("what, message", [
    ("label_high", r"labels must lie in 0\.\.9"), ("label_negative", r"labels must lie in 0\.\.9"),
    ("label_fraction", "integer labels"), ("nan_input", "NaN"), ("inf_input", "NaN or inf"),
    ("wide_input", r"shape \(batch, 64\)"), ("image_input", r"shape \(batch, 64\)"),
    ("count_mismatch", "samples"), ("one_hot_labels", "one integer label per sample"),
])
def test_bad_data_raises_before_any_training_step(mlp, data, what, message):
    model, calls = mlp
    (xtr, ytr), _ = data
    before = model.get_weights()
    x, y = _bad(xtr[:200], ytr[:200], what)
    with pytest.raises(ValueError, match=message):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    with pytest.raises(ValueError, match=message):  # in the validation data too
        model.fit(xtr[:200], ytr[:200], epochs=1, batch_size=32, verbose=0, validation_data=(x, y))
    with pytest.raises(ValueError, match=message):
        model.evaluate(x, y, verbose=0)
    assert not calls
    for w, w0 in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, w0)


def test_target_shapes_are_checked_for_every_builtin_loss(data):
    (xtr, ytr), _ = data
    for loss, good, bad, message in [
        ("categorical_crossentropy", np.eye(10, dtype=np.float32)[ytr[:64]], ytr[:64], "integer labels need sparse"),
        ("mse", np.zeros((64, 10), np.float32), np.zeros((64, 3), np.float32), "one target per output"),
        ("binary_crossentropy", np.zeros((64, 10), np.float32), np.zeros(64, np.float32), "one target per output"),
    ]:
        model = nn.Sequential([nn.Input((64,)), nn.Dense(10, activation="sigmoid")], seed=0)
        model.compile(optimizer="sgd", loss=loss)
        before = model.get_weights()
        with pytest.raises(ValueError, match=message):
            model.fit(xtr[:64], bad, verbose=0)
        for w, w0 in zip(model.get_weights(), before, strict=True):
            np.testing.assert_array_equal(w, w0)
        assert len(model.fit(xtr[:64], good, verbose=0).history["loss"]) == 1


@pytest.mark.parametrize("kwargs, message", [
    ({"loss": "hinge"}, "unknown loss 'hinge'"), ({"metrics": ["f1"]}, "unknown metric 'f1'"),
    ({"optimizer": "adagrad"}, "unknown optimizer 'adagrad'"),
])
def test_unknown_names_raise_at_compile_and_keep_the_previous_settings(mlp, data, kwargs, message):
    model, calls = mlp
    (xtr, ytr), _ = data
    before, loss, optimizer = model.get_weights(), model.loss, model.optimizer
    settings = {"optimizer": "adam", "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"], **kwargs}
    with pytest.raises(ValueError, match=message):
        model.compile(**settings)
    assert not calls and model.loss is loss and model.optimizer is optimizer
    for w, w0 in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, w0)
    model.fit(xtr[:64], ytr[:64], verbose=0)  # still compiled as before
    assert calls


# -- the documents' MNIST models on real MNIST (slow, opt-in) --------------------------------------
@pytest.fixture
def mnist_8000_2000(request):
    """SEEDS.md's protocol on the shared real MNIST test set: first 8,000 train, last 2,000 test.
    Opt-in: `python -m pytest -m slow tests/test_nn_acceptance.py` or SYMDL_SLOW_TESTS=1."""
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("SYMDL_SLOW_TESTS"):
        pytest.skip("slow: run with -m slow or SYMDL_SLOW_TESTS=1")
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"no MNIST files in {SHARED_MNIST}")
    x, y = mnist.read_split(SHARED_MNIST, "t10k")
    x = x.astype(np.float32) / 255
    return (x[:8000], y[:8000].astype(np.int64)), (x[8000:], y[8000:].astype(np.int64))


@pytest.mark.slow
@pytest.mark.parametrize("name, epochs, threshold", [("e2", 5, 0.94), ("e5", 10, 0.96)])
def test_documents_mnist_models_reach_their_accuracy(mnist_8000_2000, name, epochs, threshold):
    (xtr, ytr), (xte, yte) = mnist_8000_2000
    spec = zoo.get(name)
    xtr, xte = zoo.arrange(xtr, spec.layout), zoo.arrange(xte, spec.layout)
    model = spec.build(xtr.shape[1:], dataset="mnist")  # Adam 0.001, the documents' settings
    start = time.perf_counter()
    hist = model.fit(xtr, ytr, epochs=epochs, batch_size=32, verbose=0)
    seconds = time.perf_counter() - start
    loss, acc = model.evaluate(xte, yte, verbose=0)
    print(f"\n{name} on MNIST 8,000/2,000: test accuracy {acc:.4f} after {epochs} epochs, fit {seconds:.1f} s, "
          f"losses {np.round(hist.history['loss'], 4).tolist()}")
    assert acc >= threshold
