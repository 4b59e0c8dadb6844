"""A kernel's lowered program and generated source, kept between processes in the kernel cache
(cache.DerivedStore): a warm process builds its kernels' formulas but neither lowers nor prints
them again (E5's first warm step spent ~0.25 s there).

A program is keyed by its formula's key() and the lowering's option, source (a Kernel's, and a
chain's or fused group's) by what the program is made from, the backend, dtype and symdl's version;
the store's file names hash the source of every package that lowers or prints, so an edit there
starts afresh. Source is kept for symdl's own cpu backend only: another backend's printer is code
the hash does not see. Set `STORE = None` to lower and print every time."""
from __future__ import annotations

import dataclasses
import hashlib

import sympy as sp

from ..backends.cpu.backend import CpuBackend
from ..loops.lower import lower
from .cache import DerivedStore

STAGES = ("declare", "autodiff", "passes", "loops", "binding", "backends", "printing", "version")
STORE: DerivedStore | None = DerivedStore(STAGES)


def lowered(formula, row_reductions: bool):
    """lower(formula), or what a process lowered before."""
    key = ("lowered", formula.key(), row_reductions)
    program = STORE.get(key) if STORE is not None else None
    if program is None:
        program = lower(formula, row_reductions=row_reductions)
        if STORE is not None:
            STORE.put(key, program)
    return program


def printed(backend, program, dtype: str, version: str, key: str | None = None) -> str:
    """backend.generate(program, dtype, version), or what a process printed before. `key`: what
    the program is a function of (a Kernel's: its formula's key() and the lowering's option); by
    default the program's own text (`_text`), which equal programs share."""
    if STORE is None or type(backend) is not CpuBackend:
        return backend.generate(program, dtype, version)
    if key is None:
        try:
            key = hashlib.sha256(_text(program).encode()).hexdigest()
        except TypeError:  # a field of a kind _text does not know
            return backend.generate(program, dtype, version)
    stored = ("printed", backend.name, key, dtype, version)
    source = STORE.get(stored)
    if source is None:
        source = backend.generate(program, dtype, version)
        STORE.put(stored, source)
    return source


def _text(value) -> str:
    """A loop program as text that determines it: every field, SymPy expressions by srepr (with
    their assumptions). (A pickle does not do: its bytes follow which equal objects are shared.)"""
    if isinstance(value, sp.Basic):
        return sp.srepr(value)
    if dataclasses.is_dataclass(value):
        return f"{type(value).__name__}({','.join(_text(getattr(value, f.name)) for f in dataclasses.fields(value))})"
    if isinstance(value, tuple):
        return f"{type(value).__name__}({','.join(map(_text, value))})"
    if value is None or isinstance(value, (str, int, float, bool)):
        return repr(value)
    raise TypeError(type(value).__name__)
