"""What a backend is to the rest of symdl: lowering options, source generation, where arguments
live, how a generated module's `run` is launched and when it runs parallel.

The runtime (runtime/kernel.py) checks arguments, binds dimensions and plans each call the same way
for every backend; everything that differs goes through one of these methods. docs/backends.md
walks through the cpu backend as the example.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np


def parallel_for(backend, program, dims: dict, module) -> bool:
    """`backend.parallel(program, dims, module)`, or without the module where its `parallel` takes
    none (a backend that overrides it as documented before the module was passed: its choice stands)."""
    if _takes_module(type(backend)):
        return backend.parallel(program, dims, module)
    return backend.parallel(program, dims)


@functools.cache
def _takes_module(cls) -> bool:
    try:
        return "module" in inspect.signature(cls.parallel).parameters
    except (TypeError, ValueError):
        return False


class Backend:
    """A code generator and its calling convention. Subclasses set `name` and define `generate`;
    the defaults below are the host's (NumPy arrays in and out, nothing to copy)."""

    name = ""
    arrays = "a numpy array"  # what a call's out= may be, in error messages
    row_reductions = False  # lowering option: row-by-row sums and GEMMs of any rank (loops.lower)
    fuses = False           # prints fused programs (several outputs per loop nest: runtime/fused.py)
    host_memory = True      # `run` takes NumPy arrays (a host out= is written in place)
    checks_layout = True    # the self-check reuses the call's argument layouts (numba compiles per layout)

    def __repr__(self) -> str:
        return f"<backend {self.name}>"

    # -- code -------------------------------------------------------------------------------------
    def generate(self, program, dtype: str, version: str) -> str:
        """The generated module's source for one LoopProgram at one float dtype; it defines
        `run(outputs..., inputs..., dims..., parallel)`."""
        raise NotImplementedError(f"backend {self.name!r} defines generate(program, dtype, version)")

    def parallel(self, program, dims: dict, module=None) -> bool:
        """Whether a call at these dimensions runs the parallel flavour (of `module`, loaded)."""
        return False

    # -- arguments --------------------------------------------------------------------------------
    def is_native(self, a) -> bool:
        """An array in this backend's own memory (a device array); NumPy arrays are the host's."""
        return False

    def split(self, arrays: dict, needs_values) -> tuple[dict, dict]:
        """(host stand-ins the argument checks read, native arrays by name). A native array's
        stand-in has its shape and dtype; `needs_values(name)` says where the checks read values."""
        return arrays, {}

    def native(self, a):
        """A native array as `run` takes it."""
        return a

    def to_host(self, a):
        """A NumPy array of a native or host array's values."""
        return a

    def place(self, names, args, native: dict) -> list:
        """The arguments as `run` takes them (native arrays where given, host arrays copied in)."""
        return args

    def upstream(self, grad):
        """An upstream gradient as `run` takes it (a host array copied in where needed)."""
        return grad

    def empty(self, shape: tuple, dtype):
        """An output buffer; a scalar output is one element."""
        return np.empty(shape, dtype=dtype)

    def flavour(self, parallel: bool) -> bool:
        """The `parallel` argument `run` gets for a plan's choice (checked per call: a thread count
        may change between calls)."""
        return parallel

    def launch(self, run, out, args, values, parallel: bool) -> None:
        run(out if out.ndim else out.reshape(1), *args, *values, self.flavour(parallel))

    def result(self, out, shape: tuple, keep_native: bool):
        """What the caller gets: the output itself, or (native outputs of host inputs) a host copy."""
        return out
