"""SimpleRNN on the recurrence kernels of formulas/rnn.py: the time loop runs inside one compiled
kernel, and backpropagation through time is that kernel's derived reverse recurrence. `Recurrent`
holds what it shares with LSTM and GRU (gated.py)."""
from __future__ import annotations

import numpy as np

from symdl.formulas.rnn import simple_rnn

from .. import initializers
from ..device import is_device_array, zeros
from ..graph import FormulaOp
from .base import Layer
from .core import positive

RNN_ACTIVATIONS = ("tanh", "relu")


class Recurrent(Layer):
    """What SimpleRNN, LSTM and GRU share: Keras' arguments and weights (kernel (features,
    GATES·units), recurrent_kernel (units, GATES·units), bias), inputs (batch, time, features), the
    last state or every state (`return_sequences`) out of the formula's `op`."""

    GATES, KIND = 1, "Recurrent"

    def __init__(self, units: int, use_bias: bool = True, return_sequences: bool = False,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units = positive(units, self.KIND, "units")
        self.use_bias, self.return_sequences = bool(use_bias), bool(return_sequences)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.out_name = "h" if self.return_sequences else "h_last"

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{self.KIND} expects inputs (batch, time, features), got input shape "
                             f"{tuple(input_shape)} (without the batch axis)")
        return (input_shape[0], self.units) if self.return_sequences else (self.units,)

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        g, u = self.GATES, self.units
        self.kernel = self.add_weight("kernel", self.kernel_initializer((input_shape[-1], g * u), rng))
        self.recurrent_kernel = self.add_weight("recurrent_kernel", self.recurrent_initializer((u, g * u), rng))
        if self.use_bias:
            self.bias = self.add_weight("bias", self._initial_bias(rng))

    def _initial_bias(self, rng):
        return self.bias_initializer(self._bias_shape(), rng)

    def _bias_shape(self) -> tuple:
        return (self.GATES * self.units,)

    def call(self, x, training=False):
        env = self.op.forward(**self._args(x if is_device_array(x) else np.ascontiguousarray(x)))
        return env[self.out_name], env

    def get_config(self):
        return {"name": self.name, "units": self.units, "use_bias": self.use_bias,
                "return_sequences": self.return_sequences,
                "kernel_initializer": self.kernel_initializer.get_config(),
                "recurrent_initializer": self.recurrent_initializer.get_config(),
                "bias_initializer": self.bias_initializer.get_config()}


class SimpleRNN(Recurrent):
    """h_t = activation(x_t @ kernel + h_(t-1) @ recurrent_kernel + bias), h_(-1) = 0, on inputs
    (batch, time, features) as Keras. Returns the last state (batch, units), or every state
    (batch, time, units) with `return_sequences=True`. Weights in Keras order and shapes: kernel
    (features, units), recurrent_kernel (units, units), bias (units,)."""

    KIND = "SimpleRNN"

    def __init__(self, units: int, activation: str = "tanh", **kwargs):
        if activation not in RNN_ACTIVATIONS:
            raise ValueError(f"SimpleRNN activation must be one of {RNN_ACTIVATIONS}, got {activation!r}")
        super().__init__(units, **kwargs)
        self.activation = activation
        self.op = FormulaOp(simple_rnn(activation, self.return_sequences))

    def _args(self, x):
        dtype, on_device = np.dtype(x.dtype), is_device_array(x)
        return {"x": x, "W": self.kernel.value, "R": self.recurrent_kernel.value,
                # no bias: the formula's bias input stays 0 (and gets no gradient)
                "bias": self.bias.value if self.use_bias else zeros((self.units,), dtype, on_device),
                "h0": zeros((len(x), self.units), dtype, on_device)}

    def backward(self, ctx, grad, need_input_grad=True):
        wrt = (["x"] if need_input_grad else []) + ["W", "R"] + (["bias"] if self.use_bias else [])
        g = self.op.backward(ctx, {self.out_name: grad}, wrt)
        return g.get("x"), [g[n] for n in wrt if n != "x"]

    def get_config(self):
        return dict(super().get_config(), activation=self.activation)
