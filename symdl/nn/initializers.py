"""Weight initialisers with Keras' names and defaults (glorot_uniform kernels, zero biases)."""
from __future__ import annotations

import numpy as np


def _fans(shape: tuple) -> tuple[float, float]:
    """Keras' fan_in/fan_out: a dense kernel (in, out); a conv kernel (kh, kw, in, out)."""
    if len(shape) < 1:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    receptive = float(np.prod(shape[:-2])) if len(shape) > 2 else 1.0
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Callable (shape, rng) -> float32 array; `name` is what the saved architecture records."""

    name = "initializer"

    def __call__(self, shape: tuple, rng: np.random.Generator) -> np.ndarray:
        raise TypeError(f"{type(self).__name__} must define __call__(shape, rng): Initializer is a base class")

    def get_config(self) -> dict:
        return {"name": self.name}


class Zeros(Initializer):
    name = "zeros"

    def __call__(self, shape, rng):
        return np.zeros(shape, dtype=np.float32)


class Ones(Initializer):
    name = "ones"

    def __call__(self, shape, rng):
        return np.ones(shape, dtype=np.float32)


class GlorotUniform(Initializer):
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out))."""
    name = "glorot_uniform"

    def __call__(self, shape, rng):
        fan_in, fan_out = _fans(shape)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape).astype(np.float32)


class HeUniform(Initializer):
    """U(-l, l), l = sqrt(6 / fan_in)."""
    name = "he_uniform"

    def __call__(self, shape, rng):
        limit = np.sqrt(6.0 / _fans(shape)[0])
        return rng.uniform(-limit, limit, size=shape).astype(np.float32)


class RandomNormal(Initializer):
    name = "random_normal"

    def __init__(self, mean: float = 0.0, stddev: float = 0.05):
        self.mean, self.stddev = mean, stddev

    def __call__(self, shape, rng):
        return rng.normal(self.mean, self.stddev, size=shape).astype(np.float32)

    def get_config(self) -> dict:
        return {"name": self.name, "mean": self.mean, "stddev": self.stddev}


class Orthogonal(Initializer):
    """Keras' Orthogonal: Q of the QR decomposition of a normal matrix (rows = prod(shape[:-1])),
    signs fixed by diag(R), times `gain` (SimpleRNN's recurrent kernel)."""
    name = "orthogonal"

    def __init__(self, gain: float = 1.0):
        self.gain = gain

    def __call__(self, shape, rng):
        rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
        a = rng.normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        q = q if rows >= cols else q.T
        return np.ascontiguousarray((self.gain * q).reshape(shape), dtype=np.float32)  # q.T is F-ordered

    def get_config(self) -> dict:
        return {"name": self.name, "gain": self.gain}


_BY_NAME = {c.name: c for c in (Zeros, Ones, GlorotUniform, HeUniform, RandomNormal, Orthogonal)}


def get(spec) -> Initializer:
    """An Initializer from a name ("glorot_uniform"), a config dict, or an Initializer."""
    if isinstance(spec, Initializer):
        return spec
    if isinstance(spec, str) and spec in _BY_NAME:
        return _BY_NAME[spec]()
    if isinstance(spec, dict) and spec.get("name") in _BY_NAME:
        args = {k: v for k, v in spec.items() if k != "name"}
        return _BY_NAME[spec["name"]](**args)
    raise ValueError(f"unknown initializer {spec!r}; known: {sorted(_BY_NAME)}")
