"""Argument and data checks of compile/fit/evaluate/predict: a ValueError naming the argument,
before any kernel runs."""
from __future__ import annotations

import numbers

import numpy as np

from .callbacks import Callback


def check_count(where: str, name: str, value, minimum: int) -> int:
    """An integer (not a bool, not a float such as 3.0) of at least `minimum`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value}")
    return int(value)


def check_batch_size(where: str, batch_size) -> int:
    """Keras: None means 32."""
    return 32 if batch_size is None else check_count(where, "batch_size", batch_size, 1)


def check_fraction(where: str, name: str, value) -> float:
    """A real number in [0, 1)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{where}: {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_verbose(where: str, verbose) -> int:
    """0 (silent), 1 (bar), 2 (a line per epoch) or "auto" (1); True/False as 1/0."""
    if verbose == "auto":
        return 1
    if isinstance(verbose, (bool, np.bool_, numbers.Integral)) and verbose in (0, 1, 2):
        return int(verbose)
    raise ValueError(f"{where}: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")


def check_callbacks(callbacks) -> list:
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"fit: callbacks must be a list of nn.Callback, got {type(callbacks).__name__}")
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise ValueError(f"fit: callbacks must be nn.Callback instances, got {type(cb).__name__} "
                             f"(subclass nn.Callback and override its on_* methods)")
    return list(callbacks)


def check_batch_axis(where: str, x: np.ndarray, input_shape) -> None:
    """x must be (batch, *input_shape); one sample without its batch axis gets its own advice."""
    shape = tuple(input_shape)
    if tuple(x.shape[1:]) == shape:
        return
    expected = f"(batch, {', '.join(map(str, shape))})" if shape else "(batch,)"
    if tuple(x.shape) == shape:
        raise ValueError(f"{where}: the batch axis is missing: the model takes inputs of shape {expected}, "
                         f"got x of shape {x.shape}: add a batch axis, e.g. x[None] for one sample")
    raise ValueError(f"{where}: the model takes inputs of shape {expected}, got x of shape {x.shape}")


def check_shapes(where: str, x: np.ndarray, y: np.ndarray, input_shape) -> None:
    """x of the model's input shape (when known) and one y per sample: every entry point's shape
    checks, cheap enough for each train_on_batch."""
    if input_shape is not None:
        check_batch_axis(where, x, input_shape)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{where}: x and y need a batch axis, got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"{where}: x has {len(x)} samples, y has {len(y)}")


def check_targets(loss, y: np.ndarray, output_shape: tuple, where: str) -> None:
    """Targets that the built-in losses can use with outputs of `output_shape` (per sample):
    integer labels in range for sparse categorical cross-entropy, one value per output otherwise."""
    name = getattr(loss, "name", None)
    n, per_sample = len(y), int(np.prod(output_shape))
    if name == "sparse_categorical_crossentropy":
        classes = output_shape[-1] if output_shape else 1
        if y.size != n * per_sample // classes:
            raise ValueError(f"{where}: sparse_categorical_crossentropy takes one integer label per "
                             f"sample, got y of shape {y.shape} for outputs {output_shape}")
        if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
            raise ValueError(f"{where}: sparse_categorical_crossentropy takes integer labels, got "
                             f"non-integer values (one-hot targets need categorical_crossentropy)")
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= classes:
            raise ValueError(f"{where}: labels must lie in 0..{classes - 1} (the model has {classes} "
                             f"outputs), got labels {lo:g}..{hi:g}")
    elif name in ("categorical_crossentropy", "binary_crossentropy", "mean_squared_error"):
        if y.size != n * per_sample:
            hint = ("; integer labels need sparse_categorical_crossentropy"
                    if name == "categorical_crossentropy" and y.size == n else "")
            raise ValueError(f"{where}: {name} needs one target per output, {output_shape} per sample, "
                             f"got y of shape {y.shape}{hint}")
