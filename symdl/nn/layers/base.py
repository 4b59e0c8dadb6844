"""Layer and Variable: what every layer shares (weights, build, config, forward/backward)."""
from __future__ import annotations

import re

import numpy as np


def default_name(cls: type) -> str:
    """Keras' base name for a layer class, its name in snake case: Dense -> dense, MaxPooling2D ->
    max_pooling2d, SimpleRNN -> simple_rnn. A model numbers repeats: dense, dense_1, ..."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", cls.__name__.lstrip("_"))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


class Variable:
    """A named float32 weight; optimizers replace `value` with the updated array (a NumPy array,
    or a numba device array while the model is placed on "cuda")."""

    def __init__(self, name: str, value: np.ndarray, trainable: bool = True):
        self.name, self.value, self.trainable = name, value, trainable

    @property
    def shape(self) -> tuple:
        return self.value.shape

    def __repr__(self) -> str:
        return f"Variable({self.name!r}, shape={self.shape})"


class Layer:
    """Base class. Subclasses implement `build`, `call` (-> output, context) and `backward`
    (context, upstream gradient -> input gradient, weight gradients in `weights` order).

    Shapes exclude the batch axis. `input_shape=` lets a first layer declare the model input,
    as in Keras. Without `name=` a layer takes its class's `default_name`, which the model it is
    added to makes unique within the model (dense, dense_1, ...).
    """

    def __init__(self, name: str | None = None, input_shape=None, trainable: bool = True):
        self.name = name or default_name(type(self))
        self.auto_named = not name  # the first model it joins may number it
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.output_shape: tuple | None = None
        self.weights: list[Variable] = []
        self._trainable = bool(trainable)
        self.built = False

    @property
    def trainable(self) -> bool:
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        """Freeze or unfreeze the layer: its weights (made already or later) follow, as in Keras."""
        self._trainable = bool(value)
        for v in self.weights:
            v.trainable = self._trainable

    def build(self, input_shape: tuple, rng: np.random.Generator) -> None:
        self.input_shape = tuple(input_shape)
        self.output_shape = self.compute_output_shape(self.input_shape)
        self.built = True

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return tuple(input_shape)

    def rename(self, name: str) -> None:
        """Take `name` (a model numbering a repeated default name); weights made already follow."""
        for v in self.weights:
            if v.name.startswith(f"{self.name}/"):
                v.name = name + v.name[len(self.name):]
        self.name = name

    def add_weight(self, name: str, value: np.ndarray) -> Variable:
        v = Variable(f"{self.name}/{name}", value, self.trainable)
        self.weights.append(v)
        return v

    def call(self, x: np.ndarray, training: bool = False):
        """(output, context for backward); every layer class defines it."""
        raise TypeError(f"{type(self).__name__} must define call(x, training): Layer is a base class")

    def backward(self, ctx, grad: np.ndarray, need_input_grad: bool = True):
        """(input gradient, weight gradients in self.weights order); every layer class defines it."""
        raise TypeError(f"{type(self).__name__} must define backward(ctx, grad): Layer is a base class")

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> "Layer":
        return cls(**config)

    def count_params(self) -> int:
        return int(sum(v.value.size for v in self.weights))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
