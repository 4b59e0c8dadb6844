"""LSTM and GRU on the systems of recurrences of formulas/gated.py: one compiled kernel steps every
state (the gates, c and h) through time, and backpropagation through time is the derived adjoint
system, one kernel running backwards over the saved states."""
from __future__ import annotations

import numpy as np

from symdl.formulas.gated import gru, lstm

from ..device import is_device_array, zeros
from ..graph import FormulaOp
from .recurrent import Recurrent


class _Gated(Recurrent):
    """What LSTM and GRU share beyond a recurrent layer: Keras' default activations only, the gate
    blocks of the packed weights passed to the formula as (features, G, units), zero initial states."""

    def __init__(self, units: int, activation: str = "tanh", recurrent_activation: str = "sigmoid", **kwargs):
        if activation != "tanh" or recurrent_activation != "sigmoid":
            raise ValueError(f"{self.KIND} supports Keras' default activations (activation='tanh', "
                             f"recurrent_activation='sigmoid'), got {activation!r}, {recurrent_activation!r}")
        super().__init__(units, **kwargs)

    def _args(self, x) -> dict:
        dtype, on_device = np.dtype(x.dtype), is_device_array(x)
        g, u = self.GATES, self.units
        shape = self._bias_shape()
        bias = self.bias.value if self.use_bias else zeros(shape, dtype, on_device)
        args = {"x": x, "W": self.kernel.value.reshape(-1, g, u), "U": self.recurrent_kernel.value.reshape(u, g, u),
                "bias": bias.reshape(*shape[:-1], g, u), "h0": zeros((len(x), u), dtype, on_device)}
        return args

    def backward(self, ctx, grad, need_input_grad=True):
        wrt = (["x"] if need_input_grad else []) + ["W", "U"] + (["bias"] if self.use_bias else [])
        g = self.op.backward(ctx, {self.out_name: grad}, wrt)
        shapes = {"W": self.kernel.value.shape, "U": self.recurrent_kernel.value.shape, "bias": self._bias_shape()}
        return g.get("x"), [g[n].reshape(shapes[n]) for n in wrt if n != "x"]


class LSTM(_Gated):
    """Keras' LSTM: gates i, f, c, o in the columns of kernel (features, 4·units), recurrent_kernel
    (units, 4·units) and bias (4·units,); c_t = f c_(t-1) + i tanh(·), h_t = o tanh(c_t), h and c
    start at 0. `unit_forget_bias` (Keras' default) starts the forget gate's bias at 1. Returns the
    last state (batch, units), or every state (batch, time, units) with `return_sequences=True`."""

    GATES, KIND = 4, "LSTM"

    def __init__(self, units: int, unit_forget_bias: bool = True, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.op = FormulaOp(lstm(self.return_sequences))

    def _initial_bias(self, rng):
        bias = super()._initial_bias(rng)
        if self.unit_forget_bias:
            bias[self.units:2 * self.units] = 1.0
        return bias

    def _args(self, x) -> dict:
        args = super()._args(x)
        args["c0"] = zeros((len(x), self.units), np.dtype(x.dtype), is_device_array(x))
        return args

    def get_config(self):
        return dict(super().get_config(), unit_forget_bias=self.unit_forget_bias)


class GRU(_Gated):
    """Keras' GRU with reset_after=True (its default): gates z, r, h in the columns of kernel
    (features, 3·units) and recurrent_kernel (units, 3·units); bias (2, 3·units) holds the input
    and the recurrent bias. h_t = z h_(t-1) + (1 - z) tanh(x W_h + b_h + r (h_(t-1) U_h + rb_h))."""

    GATES, KIND = 3, "GRU"

    def __init__(self, units: int, reset_after: bool = True, **kwargs):
        super().__init__(units, **kwargs)
        if not reset_after:
            raise ValueError("GRU supports reset_after=True (Keras' default) only")
        self.op = FormulaOp(gru(self.return_sequences))

    def _bias_shape(self) -> tuple:
        return (2, self.GATES * self.units)
