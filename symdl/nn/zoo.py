"""The source documents' example models (E1-E5 of docs/catalog.md) and the nn examples' models, by name:
one copy for `symdl train` and for examples/nn_*.py.

    from symdl.nn import zoo
    spec = zoo.get("e5")
    (x, y), (xt, yt) = zoo.load_dataset("digits", spec.layout)   # float32 in [0, 1]
    model = spec.build(x.shape[1:])                              # compiled, seed 0
    model.fit(x, spec.targets(y), epochs=spec.epochs, batch_size=spec.batch_size)

Models adapt to the input they get: E1 uses "same" padding on inputs smaller than 16 pixels (the
bundled 8x8 digits), where its two valid convolutions and poolings would leave nothing to pool
(E5's one convolution fits 8x8 as it is); the dense models flatten whatever image comes in; the recurrent and attention
models read images as sequences of rows (colour images: rows of width x channels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import layers as L
from . import optimizers
from .model import Sequential

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
NUM_CLASSES = 10


def _padding(input_shape: tuple) -> str:
    return "same" if min(input_shape[:2]) < 16 else "valid"


def e1_layers(input_shape: tuple) -> list:
    """E1 (document 000, Keras): the CIFAR-10 CNN."""
    pad = _padding(input_shape)
    return [L.Conv2D(32, (3, 3), activation="relu", padding=pad), L.MaxPooling2D((2, 2)),
            L.Conv2D(64, (3, 3), activation="relu", padding=pad), L.MaxPooling2D((2, 2)),
            L.Flatten(), L.Dense(NUM_CLASSES, activation="softmax")]


def e2_layers(input_shape: tuple) -> list:
    """E2 (document 001, tf.keras): MLP 64-64-10 on flattened images."""
    return [*_flatten(input_shape), L.Dense(64, activation="relu"), L.Dense(64, activation="relu"),
            L.Dense(NUM_CLASSES, activation="softmax")]


def e3_layers(input_shape: tuple) -> list:
    """E3 (document 002, PyTorch nn.Linear(2, 1)): linear regression."""
    return [L.Dense(1)]


def e4_layers(input_shape: tuple) -> list:
    """E4 (document 003, Keras): MLP 512-10 on flattened images."""
    return [*_flatten(input_shape), L.Dense(512, activation="relu"), L.Dense(NUM_CLASSES, activation="softmax")]


def e5_layers(input_shape: tuple, filters: int = 32) -> list:
    """E5 (document 004, Keras): one convolution, one pooling, softmax."""
    return [L.Conv2D(filters, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)),
            L.Flatten(), L.Dense(NUM_CLASSES, activation="softmax")]


def logreg_layers(input_shape: tuple) -> list:
    """Softmax regression (F2 for ten classes)."""
    return [*_flatten(input_shape), L.Dense(NUM_CLASSES, activation="softmax")]


def rnn_layers(input_shape: tuple, units: int = 64, activation: str = "tanh") -> list:
    """F6: SimpleRNN over the image rows, then a softmax layer."""
    return [L.SimpleRNN(units, activation=activation), L.Dense(NUM_CLASSES, activation="softmax")]


def attention_layers(input_shape: tuple, kind: str = "mha", causal: bool = False) -> list:
    """F7/F8: a row embedding, self-attention over the rows, then a softmax layer."""
    attention = {"mha": lambda: L.MultiHeadAttention(num_heads=4, key_dim=8, causal=causal),
                 "dot": lambda: L.Attention(use_scale=True, causal=causal),
                 "additive": lambda: L.AdditiveAttention(units=16, causal=causal)}[kind]()
    return [L.Dense(32, activation="relu"), attention, L.Flatten(), L.Dense(NUM_CLASSES, activation="softmax")]


def autoencoder_layers(input_shape: tuple, code: int | None = None) -> list:
    """F9: sigmoid encoder and decoder on flat images (code 32 for <= 64 pixels, else 64)."""
    width = int(np.prod(input_shape))
    return [L.Dense(code or (32 if width <= 64 else 64), activation="sigmoid"),
            L.Dense(width, activation="sigmoid")]


def _flatten(input_shape: tuple) -> list:
    return [L.Flatten()] if len(input_shape) > 1 else []


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its layers, the documents' training settings and the data layout it reads.

    layout: "image" (n, h, w, c), "flat" (n, h*w*c), "sequence" (n, h, w*c) or "regression" (its
    own synthetic data). `digits_lr` replaces `lr` on the bundled digits, whose 1,437 training
    images give few steps per epoch.
    """

    name: str
    summary: str
    layers: Callable[[tuple], list]
    layout: str
    loss: str = "sparse_categorical_crossentropy"
    optimizer: str = "adam"
    lr: float = 0.001
    digits_lr: float | None = None
    epochs: int = 10
    batch_size: int = 32
    metrics: tuple = ("accuracy",)

    def learning_rate(self, dataset: str) -> float:
        return self.digits_lr if dataset == "digits" and self.digits_lr else self.lr

    def build(self, input_shape: tuple, dataset: str = "digits", lr: float | None = None,
              seed: int = 0, device: str = "cpu") -> Sequential:
        """The model for inputs of `input_shape` (no batch axis), compiled with this spec's
        optimizer, loss and metrics."""
        model = Sequential([L.Input(tuple(input_shape)), *self.layers(tuple(input_shape))], name=self.name,
                           seed=seed)
        rate = lr or self.learning_rate(dataset)
        opt = optimizers.SGD(learning_rate=rate) if self.optimizer == "sgd" else optimizers.Adam(learning_rate=rate)
        model.compile(optimizer=opt, loss=self.loss, metrics=list(self.metrics), device=device)
        return model

    def targets(self, y: np.ndarray) -> np.ndarray:
        """Labels as this spec's loss wants them: one-hot for categorical cross-entropy (E1, as
        the document), integer labels (n,) for the sparse loss, as is otherwise."""
        if self.loss == "categorical_crossentropy":
            return np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(y).reshape(-1).astype(np.int64)]
        if self.loss == "sparse_categorical_crossentropy":
            return np.asarray(y).reshape(-1)
        return y


MODELS: dict[str, ModelSpec] = {s.name: s for s in [
    ModelSpec("e1", "E1 CIFAR-10 CNN: Conv2D(32)-pool-Conv2D(64)-pool-Dense(10), categorical CE, batch 128",
              e1_layers, "image", loss="categorical_crossentropy", epochs=10, batch_size=128,
              digits_lr=0.003),
    ModelSpec("e2", "E2 MNIST MLP: Dense(64, relu)-Dense(64, relu)-Dense(10, softmax), 5 epochs",
              e2_layers, "flat", epochs=5, batch_size=32, digits_lr=0.005),
    ModelSpec("e3", "E3 linear regression 2 -> 1: MSE, SGD lr 0.01, full batch (synthetic data)",
              e3_layers, "regression", loss="mse", optimizer="sgd", lr=0.01, epochs=1000, batch_size=100,
              metrics=()),
    ModelSpec("e4", "E4 MNIST MLP: Dense(512, relu)-Dense(10, softmax), batch 256",
              e4_layers, "flat", epochs=10, batch_size=256, digits_lr=0.005),
    ModelSpec("e5", "E5 MNIST CNN: Conv2D(32, 3x3, relu)-MaxPool(2)-Dense(10, softmax)",
              e5_layers, "image", epochs=10, batch_size=32, digits_lr=0.003),
    ModelSpec("logreg", "softmax regression: Dense(10, softmax) on flat images",
              logreg_layers, "flat", lr=0.01, epochs=20),
    ModelSpec("rnn", "F6: SimpleRNN(64) over image rows - Dense(10, softmax)",
              rnn_layers, "sequence", lr=0.005, epochs=15),
    ModelSpec("attention", "F7/F8: Dense(32) rows - MultiHeadAttention(4 x 8) - Dense(10, softmax)",
              attention_layers, "sequence", lr=0.003, epochs=15),
    ModelSpec("autoencoder", "F9: Dense(32, sigmoid)-Dense(64, sigmoid) reconstructing its input, MSE",
              autoencoder_layers, "flat", loss="mse", lr=0.005, epochs=30, metrics=()),
]}


def names() -> list[str]:
    return list(MODELS)


def get(name: str) -> ModelSpec:
    """The spec named `name`; ValueError listing the names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown example model {name!r}; choose one of {', '.join(MODELS)}") from None


def regression_data(n_train: int = 100, n_test: int = 20, seed: int = 0):
    """E3's data: y = 2 x1 - 3 x2 + 0.5 + N(0, 0.05²), x uniform in [-1, 1]²; also returns the
    true (w, b)."""
    rng = np.random.default_rng(seed)
    true_w, true_b = np.array([[2.0], [-3.0]]), 0.5
    n = n_train + n_test
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    y = (x @ true_w + true_b + rng.normal(0, 0.05, (n, 1))).astype(np.float32)
    return ((x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])), (true_w, true_b)


def load_dataset(name: str, layout: str = "image"):
    """((x_train, y_train), (x_test, y_test)) of a named data set, pixels scaled to [0, 1] in
    float32 and arranged for `layout`; labels (n,). digits is bundled; mnist, fashion_mnist and
    cifar10 download once (symdl.datasets; offline they raise datasets.DownloadError)."""
    from symdl import datasets
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    (xtr, ytr), (xte, yte) = getattr(datasets, name).load_data()  # looked up per call: tests patch it
    scale = float(datasets.digits.MAX_PIXEL) if name == "digits" else 255.0
    return (arrange(xtr, layout, scale), np.asarray(ytr).reshape(-1)), \
        (arrange(xte, layout, scale), np.asarray(yte).reshape(-1))


def arrange(x: np.ndarray, layout: str, scale: float = 1.0) -> np.ndarray:
    """Images (n, h, w) or (n, h, w, c) as float32 / scale in `layout`."""
    x = np.asarray(x).astype(np.float32) / np.float32(scale)
    if x.ndim == 3:
        x = x[..., None]
    if layout == "image":
        return x
    if layout == "flat":
        return x.reshape(len(x), -1)
    if layout == "sequence":
        return x.reshape(len(x), x.shape[1], -1)
    raise ValueError(f"unknown layout {layout!r}")
