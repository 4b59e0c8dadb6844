"""Input, Dense, Activation, Flatten, Dropout: channels-last layers with Keras' arguments."""
from __future__ import annotations

import numpy as np
import sympy as sp

from symdl.declare import Formula
from symdl.formulas.activations import ACTIVATIONS, activation as activation_formula, stable_softmax
from symdl.formulas.dense import linear as dense_linear

from .. import initializers
from ..device import is_device_array, to_device
from ..graph import FormulaOp, multiply
from .base import Layer

ACTIVATION_NAMES = ("linear", "relu", "sigmoid", "tanh", "softmax")


def positive(value, layer: str, option: str) -> int:
    """`value` as an int, refusing anything but a positive whole number with a message naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{layer}: {option} must be a positive int, got {value!r}")
    return int(value)


def check_activation(activation) -> str:
    name = "linear" if activation is None else activation
    if name not in ACTIVATION_NAMES:
        raise ValueError(f"unknown activation {activation!r}; choose one of {ACTIVATION_NAMES}")
    return name


class Input:
    """The model input's shape without the batch axis: `nn.Input((28, 28, 1))`."""

    def __init__(self, shape, name: str | None = None):
        self.shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        self.name = name or "input"


def _linear(use_bias: bool) -> Formula:
    """y = x W (+ b): the catalog's dense formula, or the same contraction without the bias."""
    if use_bias:
        return dense_linear(x="x", W="W", b="b", out="y", name="y.dense")
    return Formula(sp.Eq(*_product(False)), name="y.dense")


def _linear_then(activation: str, use_bias: bool) -> Formula:
    """y = f(x W (+ b)) as one formula: its kernel applies f in the matrix product's epilogue, in
    place (loops/lower.py), one pass and one launch less than the product and then f."""
    y, z = _product(use_bias)
    return Formula(sp.Eq(y, ACTIVATIONS[activation](z)), name=f"y.dense_{activation}")


def _from_output(activation: str, y):
    """f'(z) written with the output y = f(z): relu's y > 0 exactly where z > 0, sigmoid's
    y (1 - y), tanh's 1 - y^2 (tests/test_fused_dense.py checks each against SymPy's derivative)."""
    if activation == "relu":
        return sp.Piecewise((1, y > 0), (0, True))
    if activation == "sigmoid":
        return y * (1 - y)
    if activation == "tanh":
        return 1 - y ** 2
    raise ValueError(f"no derivative from the output for activation {activation!r}")


def activation_vjp(activation: str) -> Formula:
    """grad_z = grad_y f'(z) from the fused forward's output y alone: the backward of `y = f(x W + b)`
    (or of a fused convolution, its arrays seen as rows) reads no pre-activation (nothing keeps one)."""
    B, M = sp.symbols("B M", integer=True, positive=True)
    i, j = sp.Idx("i", B), sp.Idx("j", M)
    y, grad_y, grad_z = (sp.IndexedBase(n) for n in ("y", "grad_y", "grad_z"))
    return Formula(sp.Eq(grad_z[i, j], grad_y[i, j] * _from_output(activation, y[i, j])),
                   name=f"y.dense_{activation}.vjp.z")


def _product(use_bias: bool) -> tuple:
    """(y[i, j], Σ_k x[i, k] W[k, j] (+ b[j]))."""
    B, N, M = sp.symbols("B N M", integer=True, positive=True)
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, b, y = (sp.IndexedBase(n) for n in ("x", "W", "b", "y"))
    z = sp.Sum(x[i, k] * W[k, j], k)
    return y[i, j], (z + b[j] if use_bias else z)


class Dense(Layer):
    """y = activation(x @ kernel + bias), kernel (in, out) as in Keras; acts on the last axis."""

    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.units, self.activation, self.use_bias = positive(units, "Dense", "units"), \
            check_activation(activation), bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.op = FormulaOp(_linear(self.use_bias))
        self.act = activation_stage(self.activation)
        self._fused = None  # y = f(x W + b) in one kernel (host arrays; relu, sigmoid, tanh)
        self._fused_vjp = None  # its backward's first step: grad_z = grad_y f'(z) from y

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        fan_in = input_shape[-1]
        self.kernel = self.add_weight("kernel", self.kernel_initializer((fan_in, self.units), rng))
        if self.use_bias:
            self.bias = self.add_weight("bias", self.bias_initializer((self.units,), rng))

    def fused_ops(self):
        """(y = f(x W + b), grad_z = grad_y f'(z) from y): the FormulaOps a step on host arrays runs
        in place of the product's forward and the activation's; None for other activations."""
        if self.activation not in ACTIVATIONS:
            return None
        if self._fused is None:
            self._fused = FormulaOp(_linear_then(self.activation, self.use_bias))
            self._fused_vjp = FormulaOp(activation_vjp(self.activation))
        return self._fused, self._fused_vjp

    def call(self, x, training=False):
        shape = tuple(x.shape)  # a plain tuple: the CUDA simulator's shapes refuse negative indices
        lead = shape[:-1]
        x2 = x.reshape(-1, shape[-1])
        args = {"x": x2, "W": self.kernel.value}
        if self.use_bias:
            args["b"] = self.bias.value
        if self.activation in ACTIVATIONS and not is_device_array(x2):
            y = self.fused_ops()[0].forward(**args)["y"]
            return y.reshape(*lead, self.units), (None, lead, (args, y))
        env = self.op.forward(**args)
        y, act_ctx = activation_call(self.act, env["y"])
        return y.reshape(*lead, self.units), (env, lead, act_ctx)

    def backward(self, ctx, grad, need_input_grad=True):
        env, lead, act_ctx = ctx
        grad = grad.reshape(-1, self.units)
        if env is None:  # the fused forward: f'(z) from its output, then the product's gradients
            env, y = act_ctx
            grad = self.fused_ops()[1].forward(y=y, grad_y=grad)["grad_z"]
        else:
            grad = activation_backward(self.act, act_ctx, grad)
        wrt = (["x"] if need_input_grad else []) + ["W"] + (["b"] if self.use_bias else [])
        g = self.op.backward(env, {"y": grad}, wrt)
        gx = g["x"].reshape(*lead, -1) if need_input_grad else None
        return gx, [g[n] for n in wrt if n != "x"]

    def get_config(self):
        return {"name": self.name, "units": self.units, "activation": self.activation,
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer.get_config(),
                "bias_initializer": self.bias_initializer.get_config()}


class Activation(Layer):
    """An activation applied elementwise (softmax: over the last axis)."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = check_activation(activation)
        if self.activation == "softmax":
            self.op = FormulaOp(stable_softmax("x", "y"))
        elif self.activation != "linear":
            self.op = FormulaOp(activation_formula(self.activation, "x", "y"))

    def call(self, x, training=False):
        if self.activation == "linear":
            return x, None
        x2 = x.reshape(-1, tuple(x.shape)[-1]) if self.activation == "softmax" else x.reshape(len(x), -1)
        env = self.op.forward(x=x2)
        return env["y"].reshape(x.shape), (env, x.shape)

    def backward(self, ctx, grad, need_input_grad=True):
        if self.activation == "linear":
            return grad, []
        env, shape = ctx
        g = self.op.backward(env, {"y": grad.reshape(env["y"].shape)}, ["x"])
        return g["x"].reshape(shape), []

    def get_config(self):
        return {"name": self.name, "activation": self.activation}


def activation_stage(name: str) -> "Activation | None":
    """The activation after a layer's linear part, as an Activation layer (None for linear): its
    kernels are the same for every layer and shape (Dense, Conv2D, Activation share them)."""
    return None if name == "linear" else Activation(name, name="activation")


def activation_call(act: "Activation | None", z):
    return (z, None) if act is None else act.call(z)


def activation_backward(act: "Activation | None", ctx, grad):
    return grad if act is None else act.backward(ctx, grad)[0]


class Flatten(Layer):
    """(batch, ...) -> (batch, prod(...)); a reshape, no arithmetic."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def call(self, x, training=False):
        return x.reshape(len(x), -1), x.shape

    def backward(self, ctx, grad, need_input_grad=True):
        return grad.reshape(ctx), []


class Dropout(Layer):
    """Zeroes a fraction `rate` of the inputs while training and scales the rest by 1/(1 - rate)
    (inverted dropout, as Keras); the identity at inference. The mask is drawn with NumPy (and
    copied to the device for a model on "cuda"), the product is a compiled kernel."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1), got {rate!r}")
        self.rate, self.seed = float(rate), seed
        self.rng: np.random.Generator | None = None

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        self.rng = np.random.default_rng(self.seed) if self.seed is not None else rng

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x, None
        keep = self.rng.random(x.shape) >= self.rate  # drawn on the host: cpu and cuda runs match
        dtype = np.dtype(x.dtype)
        mask = keep.astype(dtype) / dtype.type(1.0 - self.rate)
        if is_device_array(x):
            mask = to_device(mask)  # one copy per batch; kept on the device for the backward pass
        return multiply(x, mask), mask

    def backward(self, ctx, grad, need_input_grad=True):
        return (grad if ctx is None else multiply(grad, ctx)), []

    def get_config(self):
        return {"name": self.name, "rate": self.rate, "seed": self.seed}
