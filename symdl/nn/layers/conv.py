"""Conv2D and 2-D pooling, channels last (batch, height, width, channels), from the catalog
builders formulas/conv.py and formulas/pooling.py."""
from __future__ import annotations

import numpy as np

from symdl.formulas.conv import conv2d
from symdl.formulas.pooling import global_average_pool, pool2d

from .. import initializers
from ..graph import FormulaOp
from .base import Layer
from ..device import is_device_array
from .core import (ACTIVATIONS, activation_backward, activation_call, activation_stage, activation_vjp,
                   check_activation, positive)


def _pair(v, what: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, (int, np.integer)) else tuple(v) if isinstance(v, (tuple, list)) else ()
    if len(t) != 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                              for n in t):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return (int(t[0]), int(t[1]))


def _padding(padding, layer: str) -> str:
    name = padding.lower() if isinstance(padding, str) else padding
    if name not in ("valid", "same"):
        raise ValueError(f"{layer}: padding must be 'valid' or 'same', got {padding!r}")
    return name


def _out_len(n: int, k: int, stride: int, dilation: int, padding: str) -> int:
    span = dilation * (k - 1) + 1
    if padding == "same":
        return -(-n // stride)
    return (n - span) // stride + 1


def _check_image(shape, layer: str) -> None:
    if len(shape) != 3:
        raise ValueError(f"{layer} expects inputs (batch, height, width, channels), got input shape "
                         f"{shape} (without the batch axis)")


class Conv2D(Layer):
    """y[b, i, j, o] = activation(Σ x[b, s·i + d·kh - pad, s·j + d·kw - pad, c] kernel[kh, kw, c, o]
    + bias[o]); kernel (kh, kw, in, out) as in Keras."""

    def __init__(self, filters: int, kernel_size, strides=(1, 1), padding: str = "valid",
                 dilation_rate=(1, 1), activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.filters = positive(filters, "Conv2D", "filters")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides, self.dilation_rate = _pair(strides, "strides"), _pair(dilation_rate, "dilation_rate")
        self.padding = _padding(padding, "Conv2D")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"Conv2D: strides {self.strides} and dilation_rate {self.dilation_rate} "
                             f"cannot both exceed 1 (as in Keras); use one of them")
        self.activation = check_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        # the activation is a separate stage (softmax over channels, as Keras), but relu, sigmoid
        # and tanh on host arrays run in the convolution's epilogue (fused_ops), as Dense's do
        self.op = FormulaOp(conv2d(self.kernel_size, self.strides, self.padding, self.dilation_rate,
                                   x="x", kernel="kernel", bias="bias" if use_bias else None, out="y"))
        self.act = activation_stage(self.activation)
        self._fused = None  # y = f(conv(x) + b) in one kernel (host arrays; relu, sigmoid, tanh)
        self._fused_vjp = None  # its backward's first step: grad_z = grad_y f'(z) from y

    def compute_output_shape(self, input_shape):
        _check_image(input_shape, "Conv2D")
        h, w, _ = input_shape
        oh, ow = (_out_len(n, k, s, d, self.padding) for n, k, s, d in
                  zip((h, w), self.kernel_size, self.strides, self.dilation_rate, strict=True))
        if oh < 1 or ow < 1:
            raise ValueError(f"Conv2D {self.name}: input {h}x{w} is smaller than the kernel "
                             f"{self.kernel_size} (dilation {self.dilation_rate})")
        return (oh, ow, self.filters)

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        shape = (*self.kernel_size, input_shape[-1], self.filters)
        self.kernel = self.add_weight("kernel", self.kernel_initializer(shape, rng))
        if self.use_bias:
            self.bias = self.add_weight("bias", self.bias_initializer((self.filters,), rng))

    def _args(self, x):
        args = {"x": x, "kernel": self.kernel.value}
        if self.use_bias:
            args["bias"] = self.bias.value
        return args

    def fused_ops(self):
        """(y = f(conv(x) + b), grad_z = grad_y f'(z) from y): the FormulaOps a step on host arrays
        runs in place of the convolution's forward and the activation's (one pass over the output
        less, E1's two layers ~1.5 ms a step); None for other activations."""
        if self.activation not in ACTIVATIONS:
            return None
        if self._fused is None:
            self._fused = FormulaOp(conv2d(self.kernel_size, self.strides, self.padding, self.dilation_rate,
                                           self.activation, x="x", kernel="kernel",
                                           bias="bias" if self.use_bias else None, out="y", fused=True))
            self._fused_vjp = FormulaOp(activation_vjp(self.activation))
        return self._fused, self._fused_vjp

    def call(self, x, training=False):
        args = self._args(x)
        if self.activation in ACTIVATIONS and not is_device_array(x):
            y = self.fused_ops()[0].forward(**args)["y"]
            return y, (None, (args, y))
        env = self.op.forward(**args)
        y, act_ctx = activation_call(self.act, env["y"])
        return y, (env, act_ctx)

    def backward(self, ctx, grad, need_input_grad=True):
        env, act_ctx = ctx
        if env is None:  # the fused forward: f'(z) from its output (as rows), then the convolution's gradients
            env, y = act_ctx
            rows = (len(y), -1)
            grad = self.fused_ops()[1].forward(y=y.reshape(rows), grad_y=grad.reshape(rows))["grad_z"]
            grad = grad.reshape(y.shape)
        else:
            grad = activation_backward(self.act, act_ctx, grad)
        wrt = (["x"] if need_input_grad else []) + ["kernel"] + (["bias"] if self.use_bias else [])
        g = self.op.backward(env, {"y": grad}, wrt)
        return g.get("x"), [g[n] for n in wrt if n != "x"]

    def get_config(self):
        return {"name": self.name, "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "dilation_rate": list(self.dilation_rate), "activation": self.activation,
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer.get_config(),
                "bias_initializer": self.bias_initializer.get_config()}


class _Pooling2D(Layer):
    kind = "max"

    def __init__(self, pool_size=(2, 2), strides=None, padding: str = "valid", **kwargs):
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = _pair(strides, "strides") if strides is not None else self.pool_size
        self.padding = _padding(padding, type(self).__name__)
        self.op = FormulaOp(pool2d(self.kind, self.pool_size, self.strides, self.padding, x="x", out="y"))

    def compute_output_shape(self, input_shape):
        _check_image(input_shape, type(self).__name__)
        h, w, c = input_shape
        oh, ow = (_out_len(n, p, s, 1, self.padding)
                  for n, p, s in zip((h, w), self.pool_size, self.strides, strict=True))
        if oh < 1 or ow < 1:
            raise ValueError(f"{type(self).__name__} {self.name}: input {h}x{w} is smaller than the "
                             f"window {self.pool_size}")
        return (oh, ow, c)

    def call(self, x, training=False):
        env = self.op.forward(x=x)
        return env["y"], env

    def backward(self, ctx, grad, need_input_grad=True):
        return self.op.backward(ctx, {"y": grad}, ["x"])["x"], []

    def get_config(self):
        return {"name": self.name, "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


class MaxPooling2D(_Pooling2D):
    """Max over each window (gradient to the first arg-max on ties)."""
    kind = "max"


class AveragePooling2D(_Pooling2D):
    """Mean over each window."""
    kind = "average"


class _GlobalAveragePooling(Layer):
    """(batch, *spatial, channels) -> (batch, channels), the mean over the spatial axes."""
    spatial = 1

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.op = FormulaOp(global_average_pool(self.spatial))

    def compute_output_shape(self, input_shape):
        if len(input_shape) != self.spatial + 1:
            axes = "steps, features" if self.spatial == 1 else "height, width, channels"
            raise ValueError(f"{type(self).__name__} {self.name}: expects inputs (batch, {axes}), got "
                             f"input shape {tuple(input_shape)} (without the batch axis)")
        return (input_shape[-1],)

    def call(self, x, training=False):
        env = self.op.forward(x=x)
        return env["y"], env

    def backward(self, ctx, grad, need_input_grad=True):
        return self.op.backward(ctx, {"y": grad}, ["x"])["x"], []


class GlobalAveragePooling1D(_GlobalAveragePooling):
    """Mean over the time axis: (batch, steps, features) -> (batch, features), as Keras."""
    spatial = 1


class GlobalAveragePooling2D(_GlobalAveragePooling):
    """Mean over height and width: (batch, height, width, channels) -> (batch, channels), as Keras."""
    spatial = 2

