"""Numba signatures of a generated module's kernels, from the LoopProgram it was printed from.

`cuda.compile_ptx` needs argument types up front; these are exactly the types the generated
`run` driver launches with (C-contiguous arrays, int64 dimensions, scalars of the kernel's float
dtype), so a PTX check types the same code a GPU runs. Imports numba (not numba.cuda).
"""
from __future__ import annotations

import inspect

from ...loops.ir import LoopProgram
from ...printing import py_name

MATMUL_PARAMS = ("c", "a", "b", "m", "n", "k")


def signatures(prog: LoopProgram, module, dtype: str) -> dict:
    """{kernel name: tuple of numba types} for every kernel in `module` (the generated module of
    `prog` at `dtype`)."""
    from numba import types

    f = getattr(types, dtype)
    arrays = {py_name(t.name): types.Array(types.int64 if t.integer else f, t.rank, "C")
              for t in prog.inputs if t.rank}
    for t in (prog.output, *prog.extra_outputs):  # a system of recurrences writes several
        arrays[py_name(t.name)] = types.Array(f, max(1, t.rank), "C")  # scalars: 1 element
    arrays.update({py_name(t.name): types.Array(f, len(t.shape), "C") for t in prog.temps})
    arrays["_part_"] = types.Array(f, 2, "C")
    arrays["_pre_"] = types.Array(f, 1, "C")  # scalars computed before a parallel loop (mapping.PREFIX)
    scalars = {py_name(t.name) for t in prog.inputs if t.rank == 0}
    out = {}
    for name, obj in vars(module).items():
        if not hasattr(obj, "py_func") or getattr(obj, "targetoptions", {}).get("device"):
            continue
        params = list(inspect.signature(obj.py_func).parameters)
        if tuple(params) == MATMUL_PARAMS:
            out[name] = (types.Array(f, 2, "C"),) * 3 + (types.int64,) * 3
            continue
        out[name] = tuple(arrays[p] if p in arrays else f if p in scalars else types.int64 for p in params)
    return out
