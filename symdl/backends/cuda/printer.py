"""The cpu backend's expression printer, for device code.

Everything about expressions (typed constants `F(c)`, integer index math, conditions, helper
calls, precedence and parentheses) is the cpu printer's; this subclass changes only what differs on a GPU:

- float32 kernels call `math.exp/log/tanh` rather than the cpu's vectorising polynomial helpers:
  numba-cuda lowers math functions on float32 to libdevice's float versions (`__nv_expf`, ...);
- helpers are `@cuda.jit(device=True)` functions;
- an integer tensor read in float context is converted with F(), so it never promotes a float32
  expression to float64.
"""
from __future__ import annotations

import sympy as sp

from ..cpu.printer import ATOM, FLOAT_FUNCTIONS, HELPERS, Printed, Printer

DEVICE = "@cuda.jit(device=True)"


class CudaPrinter(Printer):
    def __init__(self, dims=(), integer_tensors=(), dtype: str = "float64"):
        super().__init__(dims, integer_tensors, dtype)
        self.functions = FLOAT_FUNCTIONS  # libm names: libdevice has float32 overloads
        self.helper_table = HELPERS       # the float64 helpers are written with F(), so serve both

    def use(self, name: str) -> str:
        self.helpers.add(name)  # the libm-based helpers call no other helper
        return name

    def helper_source(self, name: str) -> str:
        _, text = self.helper_table[name]
        return f"{DEVICE}\n{text}\n"

    @property
    def imports(self) -> list[str]:
        return []

    def _value(self, e) -> Printed:
        if isinstance(e, sp.Indexed) and e.base.is_integer:
            return f"F({self.read(e)})", ATOM
        return super()._value(e)
