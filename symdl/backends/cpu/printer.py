"""The cpu backend's expression printer: printing.Printer with the cpu's helpers.

float32 kernels replace libm's scalar calls (which keep loops from vectorising) by the polynomial
helpers of helpers.py; float64 kernels call libm through `math`, exact to double.
"""
from __future__ import annotations

import sympy as sp

from ...printing.expressions import FLOAT_FUNCTIONS, Printer
from .helpers import HELPER_DEPS, HELPERS, HELPERS_F32

FLOAT32_FUNCTIONS = {**FLOAT_FUNCTIONS, sp.exp: "_exp", sp.log: "_log", sp.tanh: "_tanh"}


class CpuPrinter(Printer):
    """Prints one cpu kernel's expressions; `helpers` collects the helpers (and what they call)."""

    def __init__(self, dims=(), integer_tensors=(), dtype: str = "float64"):
        super().__init__(dims, integer_tensors, dtype)
        self.functions = FLOAT32_FUNCTIONS if dtype == "float32" else FLOAT_FUNCTIONS
        self.helper_table = HELPERS_F32 if dtype == "float32" else HELPERS

    def use(self, name: str) -> str:
        if name not in self.helpers:
            self.helpers.add(name)
            for dep in HELPER_DEPS.get(name, ()) if self.dtype == "float32" else ():
                self.use(dep)
        return name

    def helper_source(self, name: str) -> str:
        decorator, text = self.helper_table[name]
        return f"{decorator}\n{text}\n"
