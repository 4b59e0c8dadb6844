"""Losses with Keras' names: the catalog's loss formulas on probabilities (with Keras' clipping to
[1e-7, 1 - 1e-7] as a formula in front), and the catalog's stabilized `*_crossentropy_logits`
entries on logits (`from_logits=True`: softplus(z) - t z; log-softmax with the row max
subtracted), which stay finite for any logits.
"""
from __future__ import annotations

import numpy as np

from symdl.declare import Program
from symdl import formulas
from symdl.formulas.losses import clip

from .graph import FormulaOp


class Loss:
    """`value_and_grad(y_true, y_pred)` -> (batch-mean loss, d loss / d y_pred); `__call__` -> loss."""

    name = "loss"
    pred_name, true_name = "p", "t"

    def __init__(self, from_logits: bool = False):
        self.from_logits = bool(from_logits)
        self.op = FormulaOp(self.program())

    def program(self):
        """The catalog Program this loss runs; every loss class defines it."""
        raise TypeError(f"{type(self).__name__} must define program(): Loss is a base class")

    def _cross_entropy(self, rank: int):
        """The catalog entry named like the loss: its stable `_logits` form on logits, else the
        probability form behind Keras' clip to [1e-7, 1 - 1e-7] (a `rank`-dimensional clip)."""
        if self.from_logits:
            self.pred_name = "z"
            return formulas.get(f"{self.name}_logits")
        self.pred_name = "probs"
        return Program([clip("probs", "p", rank), formulas.get(self.name)], name=f"{self.name}_clipped")

    def prepare(self, y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(targets, predictions) in the formula's layout."""
        return np.ascontiguousarray(y_true, dtype=y_pred.dtype).reshape(y_pred.shape), y_pred

    def feed(self, y_true, y_pred) -> dict:
        """The loss formula's inputs: the targets checked and converted (an array of their own,
        never a view of the caller's, so that a recorded step can be fed new targets) and y_pred."""
        t, p = self.prepare(np.asarray(y_true), y_pred)
        return {self.pred_name: p, self.true_name: t if t.base is None else t.copy()}

    def __call__(self, y_true, y_pred) -> float:
        return float(self.op.forward(**self.feed(y_true, y_pred))["L"])

    def value_and_grad(self, y_true, y_pred) -> tuple[float, np.ndarray]:
        loss, g = self.on_feed(self.feed(y_true, y_pred), np.shape(y_pred))
        return float(loss), g

    def on_feed(self, feed: dict, pred_shape: tuple) -> tuple:
        """(the batch loss as a 0-d array the next call overwrites, d loss / d y_pred) for a `feed`."""
        env, g = self.op.value_and_grad(feed, {"L": 1.0}, [self.pred_name])  # one module on the cpu
        return env["L"], g[self.pred_name].reshape(pred_shape)

    def get_config(self) -> dict:
        return {"name": self.name, "from_logits": self.from_logits}


class MeanSquaredError(Loss):
    """mean((y_pred - y_true)²), the catalog's `mse`."""
    name = "mean_squared_error"
    pred_name, true_name = "yhat", "y"

    def __init__(self):
        super().__init__(False)

    def program(self):
        return formulas.get("mse")

    def prepare(self, y_true, y_pred):
        p = y_pred.reshape(len(y_pred), -1)
        return np.ascontiguousarray(y_true, dtype=p.dtype).reshape(p.shape), p

    def get_config(self):
        return {"name": self.name}


class BinaryCrossentropy(Loss):
    """-mean(t log p + (1 - t) log(1 - p)), per output unit, on probabilities or logits."""
    name = "binary_crossentropy"

    def program(self):
        return self._cross_entropy(1)

    def prepare(self, y_true, y_pred):
        p = y_pred.reshape(-1)
        return np.ascontiguousarray(y_true, dtype=p.dtype).reshape(p.shape), p


class CategoricalCrossentropy(Loss):
    """-mean_b Σ_c t log p with one-hot targets, on probabilities or logits."""
    name = "categorical_crossentropy"

    def program(self):
        return self._cross_entropy(2)

    def prepare(self, y_true, y_pred):
        t = np.ascontiguousarray(y_true, dtype=y_pred.dtype)
        if t.shape != y_pred.shape:
            raise ValueError(f"categorical_crossentropy: targets of shape {t.shape} do not match the "
                             f"predictions {y_pred.shape}; integer labels need "
                             f"sparse_categorical_crossentropy")
        return t, y_pred


class SparseCategoricalCrossentropy(Loss):
    """-mean_b log p[b, t[b]] with integer labels, on probabilities or logits."""
    name = "sparse_categorical_crossentropy"

    def program(self):
        return self._cross_entropy(2)

    def prepare(self, y_true, y_pred):
        t = np.asarray(y_true).reshape(len(y_pred))
        if t.dtype.kind == "f":
            t = t.astype(np.int64)
        classes = tuple(y_pred.shape)[-1]  # a plain tuple: the CUDA simulator's shapes refuse index -1
        if t.size and (t.min() < 0 or t.max() >= classes):
            raise ValueError(f"sparse_categorical_crossentropy: labels must lie in 0..{classes - 1}, "
                             f"got {t.min()}..{t.max()}")
        return np.ascontiguousarray(t, dtype=np.int64), y_pred


_ALIASES = {
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "binary_crossentropy": BinaryCrossentropy, "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def get(spec) -> Loss:
    """A Loss from a Keras name, a config dict, or a Loss."""
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, dict):
        cls = _ALIASES.get(spec.get("name"))
        if cls is MeanSquaredError:
            return cls()
        if cls is not None:
            return cls(from_logits=spec.get("from_logits", False))
    if isinstance(spec, str) and spec in _ALIASES:
        return _ALIASES[spec]()
    raise ValueError(f"unknown loss {spec!r}; known: {sorted(_ALIASES)} or a symdl.nn.losses.Loss")
