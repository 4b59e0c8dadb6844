"""What a new user meets first: the compile line, summary(), a missing batch axis, sample weights."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from symdl import nn

ROOT = Path(__file__).resolve().parents[1]
COMPILE_LINE = re.compile(r"compiling (\d+) kernels? \(first use on this machine; cached afterwards\)"
                          r"\.\.\. (\d+)/(\d+), [\d.]+ s")

FIT_TWICE = """
import numpy as np
from symdl import nn
rng = np.random.default_rng(0)
x, y = rng.random((40, 4), np.float32), rng.random((40, 2), np.float32)
model = nn.Sequential([nn.Input((4,)), nn.Dense(2)], seed=0)
model.compile(optimizer="sgd", loss="mse")
MODEL
model.fit(x, y, epochs=2, batch_size=8, verbose=1)
print("== second fit")
model.fit(x, y, epochs=1, batch_size=8, verbose=1)
"""


def _run(script: str, cache: Path) -> str:
    env = dict(os.environ, SYMDL_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# a classifier: its softmax and loss run as chains (one module each way), its tanh Dense as one
# fused kernel; the estimate walks the model as the step runs it (nn/step_kernels.py)
CLASSIFIER = """
y = rng.integers(0, 3, 40)
model = nn.Sequential([nn.Input((4,)), nn.Dense(5, activation="tanh"), nn.Dense(3, activation="softmax")],
                      seed=0)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")"""


# the convolution's kernel-gradient module borrows its only function on the step's path (the patch
# gather) from the forward's module: loaded, it counts as done though it compiles nothing itself
CNN = """
x, y = rng.random((40, 8, 8, 1), np.float32), rng.integers(0, 3, 40)
model = nn.Sequential([nn.Input((8, 8, 1)), nn.Conv2D(16, (3, 3), activation="relu"), nn.MaxPooling2D((2, 2)),
                       nn.Flatten(), nn.Dense(3, activation="softmax")], seed=0)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")"""


@pytest.mark.parametrize("model", ["", CLASSIFIER, CNN], ids=["linear", "classifier", "cnn"])
def test_compiling_shows_one_line_then_nothing_once_cached(tmp_path, model):
    script = FIT_TWICE.replace("MODEL", model)
    cold = _run(script, tmp_path / "cache")               # an empty kernel cache
    first, second = cold.split("== second fit")
    lines = [m for m in COMPILE_LINE.finditer(first)]
    assert len(lines) == 1, first
    expected, done, total = map(int, lines[0].groups())
    assert expected == done == total >= 3, first           # the estimate was exact for this model
    assert first.index("compiling") < first.index("Epoch 1/2"), first
    assert "compiling" not in second, second               # same process: nothing left to compile
    warm = _run(script, tmp_path / "cache")                # a new process, the disk cache warm
    assert "compiling" not in warm and "Epoch 1/2" in warm, warm


def test_summary_prints_keras_table():
    model = nn.Sequential([nn.Input((4,)), nn.Dense(3, activation="relu", name="hidden", trainable=False),
                           nn.Dense(2, name="out")], name="tiny")
    lines = []
    model.summary(print_fn=lines.append)
    hidden, out = 4 * 3 + 3, 3 * 2 + 2                      # kernel + bias per Dense
    total = hidden + out
    assert lines == [
        'Model: "tiny"',
        "_" * 65,
        " Layer (type)                Output Shape              Param #",
        "=" * 65,
        f" hidden (Dense)              (None, 3)                 {hidden}",
        "",
        f" out (Dense)                 (None, 2)                 {out}",
        "=" * 65,
        f"Total params: {total} ({4 * total:.2f} B)",
        f"Trainable params: {out} ({4 * out:.2f} B)",
        f"Non-trainable params: {hidden} ({4 * hidden:.2f} B)",
        "_" * 65,
    ]


def test_summary_counts_with_thousands_separators_and_kilobytes():
    model = nn.Sequential([nn.Input((8, 8, 1)), nn.Conv2D(16, (3, 3), name="conv"), nn.Flatten(name="flat"),
                           nn.Dense(10, name="dense")])
    lines = []
    model.summary(print_fn=lines.append)
    conv, dense = 3 * 3 * 1 * 16 + 16, 6 * 6 * 16 * 10 + 10
    assert f" conv (Conv2D)               (None, 6, 6, 16)          {conv}" in lines
    assert f" flat (Flatten)              (None, {6 * 6 * 16})               0" in lines
    assert f" dense (Dense)               (None, 10)                {dense:,}" in lines
    assert f"Total params: {conv + dense:,} ({4 * (conv + dense) / 1024:.2f} KB)" in lines


@pytest.fixture(scope="module")
def images_model():
    model = nn.Sequential([nn.Input((8, 8, 1)), nn.Flatten(), nn.Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("call", ["predict", "evaluate", "fit", "call", "train_on_batch"])
def test_one_sample_without_batch_axis_is_named(images_model, call):
    x, y = np.zeros((8, 8, 1), np.float32), np.zeros(1, np.int64)
    run = {"predict": lambda: images_model.predict(x), "evaluate": lambda: images_model.evaluate(x, y),
           "fit": lambda: images_model.fit(x, y, verbose=0), "call": lambda: images_model(x),
           "train_on_batch": lambda: images_model.train_on_batch(x, y)}[call]
    with pytest.raises(ValueError) as err:
        run()
    msg = str(err.value)
    assert "the batch axis is missing" in msg and "(batch, 8, 8, 1)" in msg and "(8, 8, 1)" in msg, msg
    assert "x[None]" in msg and "formula" not in msg, msg


@pytest.fixture(scope="module")
def sequence_model():
    model = nn.Sequential([nn.Input((6, 3)), nn.SimpleRNN(4), nn.Dense(2, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("call", ["predict", "evaluate", "fit", "call", "train_on_batch"])
@pytest.mark.parametrize("shape", [(4, 5, 3), (4, 7, 3), (4, 6, 2), (4, 18)])
def test_every_entry_refuses_a_wrong_sample_shape_before_any_kernel(sequence_model, call, shape):
    """A recurrent model runs any sequence length its formulas allow: a wrong length must be refused
    against the declared input shape, not trained on (train_on_batch took (4, 5, 3) silently)."""
    x, y = np.zeros(shape, np.float32), np.zeros(4, np.int64)
    before = [w.copy() for w in sequence_model.get_weights()]
    run = {"predict": lambda: sequence_model.predict(x, verbose=0),
           "evaluate": lambda: sequence_model.evaluate(x, y, verbose=0),
           "fit": lambda: sequence_model.fit(x, y, verbose=0), "call": lambda: sequence_model(x),
           "train_on_batch": lambda: sequence_model.train_on_batch(x, y)}[call]
    with pytest.raises(ValueError, match=re.escape(f"the model takes inputs of shape (batch, 6, 3), got x of shape "
                                                   f"{shape}")):
        run()
    assert all(np.array_equal(a, b) for a, b in zip(before, sequence_model.get_weights()))


def test_train_on_batch_refuses_x_and_y_of_different_lengths(sequence_model):
    with pytest.raises(ValueError, match="train_on_batch: x has 4 samples, y has 3"):  # fit's words
        sequence_model.train_on_batch(np.zeros((4, 6, 3), np.float32), np.zeros(3, np.int64))


# -- sample_weight and class_weight against NumPy -----------------------------------------------------

def _softmax_model(lr: float):
    model = nn.Sequential([nn.Input((5,)), nn.Dense(3, activation="softmax")], seed=1)
    model.compile(optimizer=nn.optimizers.SGD(learning_rate=lr), loss="sparse_categorical_crossentropy")
    return model


def _numpy_weighted(W, b, x, y, w):
    """Keras' weighted loss mean_i(w_i * l_i) and its gradients, in float64."""
    z = x.astype(np.float64) @ W + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(y)
    loss = np.mean(w * -np.log(p[np.arange(n), y]))
    dz = (p - np.eye(3)[y]) * w[:, None] / n
    return loss, x.T @ dz, dz.sum(0)


@pytest.fixture(scope="module")
def weighted_data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5)).astype(np.float32)
    y = np.array([0, 2, 1, 2, 0, 1])
    w = np.array([1.0, 0.5, 2.0, 0.0, 3.0, 1.0])
    return x, y, w


def test_sample_weight_scales_loss_and_gradient_as_keras(weighted_data):
    x, y, w = weighted_data
    lr = 0.5
    model = _softmax_model(lr)
    W, b = (a.astype(np.float64) for a in model.get_weights())
    want_loss, gW, gb = _numpy_weighted(W, b, x, y, w)
    loss = model.train_on_batch(x, y, sample_weight=w)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    W1, b1 = model.get_weights()
    np.testing.assert_allclose(W1, W - lr * gW, atol=1e-6)
    np.testing.assert_allclose(b1, b - lr * gb, atol=1e-6)
    # fit: one full batch, the same step and the same reported loss
    model = _softmax_model(lr)
    hist = model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0, sample_weight=w)
    assert hist.history["loss"][0] == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(model.get_weights()[0], W - lr * gW, atol=1e-6)
    # evaluate with the same weights, at the updated weights
    W1, b1 = (a.astype(np.float64) for a in model.get_weights())
    assert model.evaluate(x, y, sample_weight=w, batch_size=4, verbose=0) == pytest.approx(
        _numpy_weighted(W1, b1, x, y, w)[0], rel=1e-5)


def test_class_weight_is_sample_weight_by_label(weighted_data):
    x, y, _ = weighted_data
    class_weight = {0: 2.0, 2: 0.25}                     # class 1 not named: weight 1
    w = np.array([class_weight.get(int(c), 1.0) for c in y])
    model = _softmax_model(0.5)
    W, b = (a.astype(np.float64) for a in model.get_weights())
    want_loss, gW, _ = _numpy_weighted(W, b, x, y, w)
    hist = model.fit(x, y, batch_size=6, epochs=1, shuffle=False, verbose=0, class_weight=class_weight)
    assert hist.history["loss"][0] == pytest.approx(want_loss, rel=1e-5)
    np.testing.assert_allclose(model.get_weights()[0], W - 0.5 * gW, atol=1e-6)


def test_bad_weights_are_refused_before_training(weighted_data):
    x, y, w = weighted_data
    model = _softmax_model(0.5)
    before = model.get_weights()
    with pytest.raises(ValueError, match="sample_weight must hold one number per sample, shape \\(6,\\)"):
        model.fit(x, y, sample_weight=w[:4], verbose=0)
    with pytest.raises(ValueError, match="not both"):
        model.fit(x, y, sample_weight=w, class_weight={0: 1.0}, verbose=0)
    with pytest.raises(ValueError, match="NaN or inf"):
        model.fit(x, y, sample_weight=np.where(w > 1, np.nan, w), verbose=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
