"""The cuda backend's expression printer: printing.Printer for device code.

Everything about expressions (typed constants `F(c)`, integer index math, conditions, helper
calls, precedence and parentheses) is the shared printer's; this subclass adds only what is the GPU's:

- float32 kernels call `math.exp/log/tanh` rather than the cpu's vectorising polynomial helpers:
  numba-cuda lowers math functions on float32 to libdevice's float versions (`__nv_expf`, ...);
- helpers are `@cuda.jit(device=True)` functions;
- an integer tensor read in float context is converted with F(), so it never promotes a float32
  expression to float64.
"""
from __future__ import annotations

import sympy as sp

from ...printing.expressions import ATOM, Printed, Printer
from ...printing.helpers import SOURCES

DEVICE = "@cuda.jit(device=True)"


class CudaPrinter(Printer):
    # the shared function table (libm names: libdevice has float32 overloads) and the shared
    # helpers, which are written with F() and call no other helper

    def helper_source(self, name: str) -> str:
        return f"{DEVICE}\n{SOURCES[name]}\n"

    def _value(self, e) -> Printed:
        if isinstance(e, sp.Indexed) and e.base.is_integer:
            return f"F({self.read(e)})", ATOM
        return super()._value(e)
