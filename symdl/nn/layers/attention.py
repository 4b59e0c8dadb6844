"""Attention layers (Keras names) on formulas/attention.py's programs, stabilized.

Each layer takes Keras' inputs `[query, value]` or `[query, value, key]` (key defaults to value)
when called on its own, `layer([q, v])`. A Sequential model carries one tensor from layer to
layer, so there the layer is self-attention: query = value = key = the previous layer's output,
and the input gradient is the sum of the three.
"""
from __future__ import annotations

import numpy as np

from symdl.formulas.attention import keras_additive_attention, keras_dot_attention, keras_multi_head_attention

from .. import initializers
from ..device import is_device_array
from ..graph import FormulaOp, add
from ..utils import make_rng
from .base import Layer
from .core import positive

_ROLES = ("query", "value", "key")


def _split(inputs) -> tuple[dict, str]:
    """{"query", "value", "key"} arrays and the call mode: "self", "pair" or "triple"."""
    if isinstance(inputs, (list, tuple)):
        if len(inputs) not in (2, 3):
            raise ValueError(f"attention takes [query, value] or [query, value, key], got {len(inputs)} "
                             f"tensors")
        q, v = inputs[0], inputs[1]
        k = inputs[2] if len(inputs) == 3 else v
        arrays = [a if is_device_array(a) else np.ascontiguousarray(a, dtype=np.float32) for a in (q, v, k)]
        return dict(zip(_ROLES, arrays, strict=True)), "pair" if len(inputs) == 2 else "triple"
    x = inputs if is_device_array(inputs) else np.ascontiguousarray(inputs)
    return {"query": x, "value": x, "key": x}, "self"


def _shapes(input_shape) -> tuple[tuple, tuple, tuple]:
    """(query, value, key) shapes without the batch axis, from one shape or a list of them."""
    if input_shape and isinstance(input_shape[0], (list, tuple)):
        shapes = [tuple(s) for s in input_shape]
        q, v = shapes[0], shapes[1]
        return q, v, shapes[2] if len(shapes) == 3 else v
    s = tuple(input_shape)
    return s, s, s


class _Attention(Layer):
    """Shared call/backward: subclasses set `self.op` and `_weights()` {formula input: Variable}."""

    def __init__(self, causal: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.causal = bool(causal)

    def compute_output_shape(self, input_shape):
        q, v, k = _shapes(input_shape)
        for s in (q, v, k):
            if len(s) != 2:
                raise ValueError(f"{type(self).__name__} expects inputs (batch, time, features), got "
                                 f"input shape {s} (without the batch axis)")
        return self._output_shape(q, v, k)

    def _output_shape(self, q, v, k) -> tuple:
        return (q[0], v[1])

    def _weights(self) -> dict:
        return {}

    def __call__(self, inputs, training: bool = False) -> np.ndarray:
        """Keras-style use outside a model: builds on the first call, returns a new array."""
        arrays, mode = _split(inputs)
        if not self.built:
            shapes = [arrays[r].shape[1:] for r in _ROLES]
            self.build(shapes[0] if mode == "self" else shapes, make_rng(None))
        return self.call(inputs, training)[0].copy()

    def call(self, inputs, training=False):
        arrays, mode = _split(inputs)
        args = {**arrays, **{n: v.value for n, v in self._weights().items()}}
        env = self.op.forward(**args)
        return env["y"], (env, mode)

    def backward(self, ctx, grad, need_input_grad=True):
        env, mode = ctx
        names = list(self._weights())
        wrt = (list(_ROLES) if need_input_grad else []) + names
        g = self.op.backward(env, {"y": grad}, wrt)
        wgrads = [g[n] for n in names]
        if not need_input_grad:
            return None, wgrads
        q, v, k = (g[r] for r in _ROLES)
        if mode == "self":
            return add(add(q, v), k), wgrads
        if mode == "pair":
            return [q, add(v, k)], wgrads
        return [q, v, k], wgrads

    def get_config(self):
        return {"name": self.name, "causal": self.causal}


class Attention(_Attention):
    """Keras Attention (dot-product scores, no projections): scores = [scale ·] query · keyᵀ,
    weights = softmax over the keys (key position s <= query position t when `causal`), output =
    weights · value. `use_scale` adds Keras' trainable scalar `scale` (initially 1)."""

    def __init__(self, use_scale: bool = False, causal: bool = False, score_mode: str = "dot", **kwargs):
        super().__init__(causal, **kwargs)
        if score_mode != "dot":
            raise ValueError(f"Attention supports score_mode='dot' (use nn.AdditiveAttention for additive "
                             f"scores), got {score_mode!r}")
        self.use_scale = bool(use_scale)
        self.op = FormulaOp(keras_dot_attention(self.causal, self.use_scale))

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        q, v, k = _shapes(input_shape)
        if q[-1] != k[-1]:
            raise ValueError(f"Attention: query width {q[-1]} differs from key width {k[-1]}")
        if self.use_scale:
            self.scale = self.add_weight("scale", np.ones((), dtype=np.float32))

    def _weights(self):
        return {"scale": self.scale} if self.use_scale else {}

    def get_config(self):
        return {**super().get_config(), "use_scale": self.use_scale}


class MultiHeadAttention(_Attention):
    """Keras MultiHeadAttention: per head h, q = query Wq[:, h] + bq[h], k, v likewise from key
    and value; softmax(q·kᵀ / sqrt(key_dim)) (causal: s <= t); the heads' outputs projected back
    to the query's width by Wo (num_heads, key_dim, width) + bo. Weights in Keras order: query,
    key, value, output (kernel, bias each). Query and value must have the same length here
    (formulas/attention.py's program); value_dim is key_dim."""

    def __init__(self, num_heads: int, key_dim: int, value_dim: int | None = None, use_bias: bool = True,
                 causal: bool = False, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 **kwargs):
        super().__init__(causal, **kwargs)
        if value_dim not in (None, key_dim):
            raise ValueError(f"MultiHeadAttention: value_dim must equal key_dim here, got {value_dim} "
                             f"and {key_dim}")
        self.num_heads = positive(num_heads, "MultiHeadAttention", "num_heads")
        self.key_dim, self.use_bias = positive(key_dim, "MultiHeadAttention", "key_dim"), bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.op = FormulaOp(keras_multi_head_attention(self.causal, self.use_bias))

    def _output_shape(self, q, v, k):
        if q[0] != v[0] or k[0] != v[0]:
            raise ValueError(f"MultiHeadAttention: query, value and key need the same length here, got "
                             f"{q[0]}, {v[0]}, {k[0]}")
        return q

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        q, v, k = _shapes(input_shape)
        heads, dim = self.num_heads, self.key_dim
        self._w = {}
        for role, width, w, b in (("query", q[-1], "Wq", "bq"), ("key", k[-1], "Wk", "bk"),
                                  ("value", v[-1], "Wv", "bv")):
            self._w[w] = self.add_weight(f"{role}/kernel", self.kernel_initializer((width, heads, dim), rng))
            if self.use_bias:
                self._w[b] = self.add_weight(f"{role}/bias", self.bias_initializer((heads, dim), rng))
        self._w["Wo"] = self.add_weight("output/kernel", self.kernel_initializer((heads, dim, q[-1]), rng))
        if self.use_bias:
            self._w["bo"] = self.add_weight("output/bias", self.bias_initializer((q[-1],), rng))

    def _weights(self):
        return self._w

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "key_dim": self.key_dim,
                "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer.get_config(),
                "bias_initializer": self.bias_initializer.get_config()}


class AdditiveAttention(_Attention):
    """Additive (Bahdanau, F7 of docs/catalog.md) attention: scores[t, s] = Σ_u v[u] tanh((query W)[t, u] +
    (key R)[s, u] + bias[u]), weights = softmax over s (s <= t when `causal`), output = weights ·
    value. Weights: query_kernel W (width, units), key_kernel R (width, units), bias (units,),
    score_vector v (units,); units defaults to the width. Keras' AdditiveAttention (no
    projections, a scale vector) is the case W = R = identity, bias = 0, v = scale."""

    def __init__(self, units: int | None = None, causal: bool = False, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(causal, **kwargs)
        self.units = None if units is None else positive(units, "AdditiveAttention", "units")
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.op = FormulaOp(keras_additive_attention(self.causal))

    def build(self, input_shape, rng):
        super().build(input_shape, rng)
        q, v, k = _shapes(input_shape)
        if not q[-1] == k[-1] == v[-1]:
            raise ValueError(f"AdditiveAttention: query, value and key need the same width, got "
                             f"{q[-1]}, {v[-1]}, {k[-1]}")
        width, units = q[-1], self.units or q[-1]
        self._w = {"W": self.add_weight("query_kernel", self.kernel_initializer((width, units), rng)),
                   "R": self.add_weight("key_kernel", self.kernel_initializer((width, units), rng)),
                   "bias": self.add_weight("bias", self.bias_initializer((units,), rng)),
                   "v": self.add_weight("score_vector", self.kernel_initializer((units,), rng))}

    def _weights(self):
        return self._w

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "kernel_initializer": self.kernel_initializer.get_config(),
                "bias_initializer": self.bias_initializer.get_config()}
