"""A small model and data shared by the nn robustness tests."""
import numpy as np

from symdl import nn

RNG = np.random.default_rng(0)
X = RNG.random((48, 6)).astype(np.float32)
Y = np.arange(48) % 3


def small(seed=0, last=3, extra=False):
    layers = [nn.Input((6,)), nn.Dense(4, activation="relu"), *([nn.Dense(4)] if extra else []),
              nn.Dense(last, activation="softmax")]
    return nn.Sequential(layers, seed=seed)
