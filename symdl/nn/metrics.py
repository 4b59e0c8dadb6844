"""Metrics (NumPy glue on predictions): Keras' "accuracy" picks its form from the loss."""
from __future__ import annotations

import numpy as np


def sparse_categorical_accuracy(y_true, y_pred) -> float:
    return float(np.mean(np.argmax(y_pred, axis=-1) == np.asarray(y_true).reshape(len(y_pred))))


def categorical_accuracy(y_true, y_pred) -> float:
    return float(np.mean(np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)))


def binary_accuracy(y_true, y_pred, threshold: float = 0.5) -> float:
    pred = (np.asarray(y_pred) > threshold).reshape(-1)
    return float(np.mean(pred == (np.asarray(y_true).reshape(-1) > 0.5)))


def mean_absolute_error(y_true, y_pred) -> float:
    p = np.asarray(y_pred)
    return float(np.mean(np.abs(p - np.asarray(y_true, dtype=p.dtype).reshape(p.shape))))


def mean_squared_error(y_true, y_pred) -> float:
    p = np.asarray(y_pred)
    return float(np.mean((p - np.asarray(y_true, dtype=p.dtype).reshape(p.shape)) ** 2))


_FUNCTIONS = {"mae": mean_absolute_error, "mean_absolute_error": mean_absolute_error,
              "mse": mean_squared_error, "mean_squared_error": mean_squared_error,
              "sparse_categorical_accuracy": sparse_categorical_accuracy,
              "categorical_accuracy": categorical_accuracy, "binary_accuracy": binary_accuracy}


def resolve(name: str, loss) -> tuple[str, callable]:
    """(history key, function). "accuracy"/"acc" follow Keras: sparse for sparse categorical
    cross-entropy, categorical for categorical, binary for binary (threshold 0 on logits), and
    otherwise by the shapes at hand."""
    if name in ("accuracy", "acc"):
        loss_name = getattr(loss, "name", "")
        if loss_name == "sparse_categorical_crossentropy":
            return name, sparse_categorical_accuracy
        if loss_name == "categorical_crossentropy":
            return name, categorical_accuracy
        if loss_name == "binary_crossentropy":
            threshold = 0.0 if getattr(loss, "from_logits", False) else 0.5
            return name, lambda t, p: binary_accuracy(t, p, threshold)
        return name, _by_shape
    if name in _FUNCTIONS:
        return name, _FUNCTIONS[name]
    raise ValueError(f"unknown metric {name!r}; known: accuracy, {', '.join(sorted(_FUNCTIONS))}")


def _by_shape(y_true, y_pred) -> float:
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if p.ndim > 1 and p.shape[-1] > 1:
        return categorical_accuracy(t, p) if t.shape == p.shape else sparse_categorical_accuracy(t, p)
    return binary_accuracy(t, p)
