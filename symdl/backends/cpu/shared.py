"""The helper functions of helpers.py, made once per process and dtype for every generated module.

A generated module that calls `_exp` imports it from here (`helpers("float32", ...)`) instead of
defining its own copy: numba then compiles each helper once per process, not once per module (a
float32 `_exp` took ~0.09 s to compile in each of the three softmax modules of an MLP's first
step). The helpers are not cached on their own: a kernel's cached machine code holds the helpers it
calls, so a warm start compiles none. Their text is in the kernels' cache key all the same: the
generated module names the fingerprint of the helper table it was printed against, so editing a
helper changes every module's source, name and numba cache entry.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from .helpers import HELPERS, HELPERS_F32, fingerprint
from .intrinsics import float32_frexp_exponent, float32_frexp_mantissa, float32_ldexp

_TABLES = {"float32": HELPERS_F32, "float64": HELPERS}
_MADE: dict = {}
_FUNCTIONS: dict = {}  # key -> the first dispatcher made with that text


def shared_function(key: str):
    """A decorator returning, for every module after the first, the dispatcher the first module
    defining a function of the same text made: numba compiles (or loads from its cache) each text
    once per process. A convolution's forward and kernel-gradient modules both gather the same
    patches (0.3 s of compiling each, cold). `key` hashes the text with its dtype and helper table
    (codegen.py); the function itself must match too (its bytecode, constants, names, the
    globals it reads and numba's options), so a module whose text was changed after it was
    generated never borrows another's machine code."""
    def register(dispatcher):
        dispatcher._symdl_key = key  # runtime/ahead.py: what a helper process and its parent call it
        first = _FUNCTIONS.setdefault(key, dispatcher)
        return first if first is dispatcher or _same_function(first, dispatcher) else dispatcher
    return register


def _same_function(a, b) -> bool:
    fa, fb = a.py_func, b.py_func
    ca, cb = fa.__code__, fb.__code__
    if (ca.co_code, ca.co_consts, ca.co_names, ca.co_varnames) != (cb.co_code, cb.co_consts, cb.co_names,
                                                                   cb.co_varnames):
        return False
    ga, gb = fa.__globals__, fb.__globals__
    return a.targetoptions == b.targetoptions and all(ga.get(n) is gb.get(n) for n in ca.co_names)


def helpers(dtype: str, printed_against: str, *names: str) -> tuple:
    """The dispatchers of the helpers `names` for `dtype`, defined in one namespace per dtype on first
    use; `printed_against`: the fingerprint the module was generated with (it must be this table's)."""
    if printed_against != fingerprint(dtype):
        raise ImportError(f"a symdl kernel module was generated against other {dtype} helpers "
                          f"({printed_against}, these are {fingerprint(dtype)}): generate it again")
    space = _MADE.get(dtype)
    if space is None:
        space = {"nb": nb, "np": np, "math": math, "F": np.dtype(dtype).type,
                 "float32_frexp_exponent": float32_frexp_exponent,
                 "float32_frexp_mantissa": float32_frexp_mantissa, "float32_ldexp": float32_ldexp}
        exec(compile(source(dtype), f"<symdl {dtype} helpers>", "exec"), space)  # noqa: S102 (symdl's own text)
        _MADE[dtype] = space
    return tuple(space[n] for n in names)


def source(dtype: str) -> str:
    """The text the helpers of `dtype` are made from (tests/golden pins the float32 one); numba
    cannot cache a function made by exec, so their decorators ask for no cache."""
    return "\n".join(f"{decorator.replace('cache=True, ', '')}\n{text}\n"
                     for decorator, text in _TABLES[dtype].values())
