"""symdl.nn: Keras-like models whose every training number comes from symdl's compiled kernels.

    from symdl import nn
    model = nn.Sequential([nn.Input((64,)), nn.Dense(32, activation="relu"),
                           nn.Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, batch_size=32, validation_split=0.1)

Layers run their formulas' forward kernels and, on the tape, the gradient kernels in reverse;
losses are catalog formulas (stabilized on logits); optimizers are the catalog's
update Programs; NumPy only reshapes, batches, shuffles and counts metrics. See docs/nn.md.
"""
from ..backends.cpu.startup import start as _start_numba
from . import callbacks, initializers, losses, metrics, optimizers, utils
from .callbacks import Callback, EarlyStopping, History, ModelCheckpoint, TerminateOnNaN
from .distributed import Distributed
from .layers import (GRU, LSTM, Activation, AdditiveAttention, Attention, AveragePooling2D, Conv2D, Dense,
                     Dropout, Flatten, FormulaLayer, GlobalAveragePooling1D, GlobalAveragePooling2D, Input, Layer,
                     MaxPooling2D, MultiHeadAttention, SimpleRNN)
from .model import Sequential
from .saving import load_model

_start_numba()  # numba's start-up at import, not inside the first training step (backends/cpu/startup.py)

__all__ = ["Activation", "AdditiveAttention", "Attention", "AveragePooling2D", "Callback", "Conv2D", "Dense",
           "Distributed", "Dropout", "EarlyStopping", "Flatten", "FormulaLayer", "GRU", "GlobalAveragePooling1D",
           "GlobalAveragePooling2D", "History", "Input",
           "LSTM", "Layer", "MaxPooling2D", "ModelCheckpoint", "MultiHeadAttention", "Sequential", "SimpleRNN",
           "TerminateOnNaN", "callbacks", "initializers", "load_model", "losses", "metrics", "optimizers",
           "utils"]
