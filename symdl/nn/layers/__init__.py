"""Layers: Keras names and arguments, channels-last data, symdl kernels underneath."""
from .base import Layer, Variable
from .conv import AveragePooling2D, Conv2D, MaxPooling2D
from .core import Activation, Dense, Dropout, Flatten, Input
from .custom import FormulaLayer

LAYERS = {c.__name__: c for c in (Dense, Activation, Flatten, Dropout, Conv2D, MaxPooling2D,
                                  AveragePooling2D, FormulaLayer)}

__all__ = ["Activation", "AveragePooling2D", "Conv2D", "Dense", "Dropout", "Flatten", "FormulaLayer",
           "Input", "LAYERS", "Layer", "MaxPooling2D", "Variable"]
