"""Loop IR statements as Python source, shared by the backends: loops, lets, accumulations,
stores, scatter-adds and guards print the same way everywhere; a backend decides only which loops
become threads (cpu: `nb.prange` on loops the IR marks parallel; cuda: mapping.py)."""
from __future__ import annotations

from ..loops.ir import Accumulate, If, Let, Loop, LoopProgram, ScatterAdd, Store
from ..printing import Printer, py_name


def driver_args(prog: LoopProgram, dims: list) -> str:
    """The parameters of a generated module's `run`: outputs, inputs, dimensions, `parallel`."""
    return ", ".join([py_name(t.name) for t in (prog.output, *prog.extra_outputs)]
                     + [py_name(t.name) for t in prog.inputs] + dims + ["parallel"])


def statements(stmts, p: Printer, pad: str, parallel: bool = False, atomic: bool = False) -> list[str]:
    """Statements as source; only loops the IR marks parallel become prange (a hoisted reduction
    before the output loop must stay serial: an arg-max update is not a reduction numba knows).
    `atomic`: scatter-adds as `cuda.atomic.add` (the cuda backend, when threads may share a target)."""
    out = []
    for s in stmts:
        if isinstance(s, Loop):
            bounds = f"{p.index(s.lo)}, {p.index(s.stop)}"
            if parallel and s.parallel:  # prange(n), not prange(0, n): with a start numba's outlined
                # body lost its vectorised loop (Adam on 401,408 weights: 650 against 119 µs)
                loop, bounds = "nb.prange", p.index(s.stop) if s.lo == 0 else bounds
            else:
                loop = "range"
            out.append(f"{pad}for {py_name(s.var.name)} in {loop}({bounds}):")
            out += statements(s.body, p, pad + "    ", atomic=atomic) or [pad + "    pass"]
        elif isinstance(s, Let):
            value = p.index(s.value) if s.name.is_integer else p.value(s.value)
            out.append(f"{pad}{py_name(s.name.name)} = {value}")
        elif isinstance(s, Accumulate):
            out.append(f"{pad}{py_name(s.name.name)} += {p.value(s.value)}")
        elif isinstance(s, Store):
            idx = ", ".join(p.index(i) for i in s.index)
            out.append(f"{pad}{py_name(s.tensor)}[{idx}] = {p.value(s.value)}")
        elif isinstance(s, ScatterAdd) and atomic:
            idx = ", ".join(p.index(i) for i in s.index)
            idx = f"({idx})" if len(s.index) > 1 else idx
            out.append(f"{pad}cuda.atomic.add({py_name(s.tensor)}, {idx}, {p.value(s.value)})")
        elif isinstance(s, ScatterAdd):  # parallel only over its own whole indices (ir.ScatterAdd)
            idx = ", ".join(p.index(i) for i in s.index)
            out.append(f"{pad}{py_name(s.tensor)}[{idx}] += {p.value(s.value)}")
        elif isinstance(s, If):
            out.append(f"{pad}if {p.cond(s.cond)}:")
            out += statements(s.then, p, pad + "    ", parallel, atomic) or [pad + "    pass"]
            if s.orelse:
                out.append(f"{pad}else:")
                out += statements(s.orelse, p, pad + "    ", parallel, atomic)
        else:
            raise TypeError(f"unknown loop IR statement {s!r}")
    return out
