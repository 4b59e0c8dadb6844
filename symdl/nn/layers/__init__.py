"""Layers: Keras names and arguments, channels-last data, symdl kernels underneath."""
from .attention import AdditiveAttention, Attention, MultiHeadAttention
from .base import Layer, Variable
from .conv import AveragePooling2D, Conv2D, GlobalAveragePooling1D, GlobalAveragePooling2D, MaxPooling2D
from .core import Activation, Dense, Dropout, Flatten, Input
from .custom import FormulaLayer
from .gated import GRU, LSTM
from .recurrent import SimpleRNN

LAYERS = {c.__name__: c for c in (Dense, Activation, Flatten, Dropout, Conv2D, MaxPooling2D,
                                  AveragePooling2D, GlobalAveragePooling1D, GlobalAveragePooling2D, FormulaLayer,
                                  SimpleRNN, LSTM, GRU, Attention, MultiHeadAttention, AdditiveAttention)}

__all__ = ["Activation", "AdditiveAttention", "Attention", "AveragePooling2D", "Conv2D", "Dense", "Dropout",
           "Flatten", "FormulaLayer", "GRU", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "Input", "LAYERS",
           "LSTM", "Layer", "MaxPooling2D", "MultiHeadAttention", "SimpleRNN", "Variable"]
