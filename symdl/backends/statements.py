"""Loop IR statements as Python source, shared by the backends: loops, lets, accumulations,
stores, scatter-adds and guards print the same way everywhere; a backend decides only which loops
become threads (cpu: one `nb.prange` part per thread of loops the IR marks parallel; cuda: mapping.py)."""
from __future__ import annotations

import re

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
        if isinstance(s, Loop) and parallel and s.parallel:
            out += _parts_loop(s, p, pad, atomic)
        elif isinstance(s, Loop):
            out.append(f"{pad}for {py_name(s.var.name)} in range({p.index(s.lo)}, {p.index(s.stop)}):")
            out += statements(s.body, p, pad + "    ", atomic=atomic) or [pad + "    pass"]
        elif isinstance(s, Let):
            value = p.index(s.value) if s.name.is_integer else p.value(s.value)
            out.append(f"{pad}{py_name(s.name.name)} = {value}")
        elif isinstance(s, Accumulate):
            out.append(f"{pad}{py_name(s.name.name)} += {p.value(s.value)}")
        elif isinstance(s, Store):
            idx = ", ".join(p.subscript(i) for i in s.index)
            out.append(f"{pad}{py_name(s.tensor)}[{idx}] = {p.value(s.value)}")
        elif isinstance(s, ScatterAdd) and atomic:
            idx = ", ".join(p.index(i) for i in s.index)
            idx = f"({idx})" if len(s.index) > 1 else idx
            out.append(f"{pad}cuda.atomic.add({py_name(s.tensor)}, {idx}, {p.value(s.value)})")
        elif isinstance(s, ScatterAdd):  # parallel only over its own whole indices (ir.ScatterAdd)
            idx = ", ".join(p.subscript(i) for i in s.index)
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


PARTS = 64  # a parallel loop's parts at most: numba shares them among its threads as a prange's iterations


def _parts_loop(s: Loop, p: Printer, pad: str, atomic: bool) -> list[str]:
    """The cpu's parallel loop as contiguous parts of its range, each computed in the caller's
    floating-point mode, which a thread of numba's pool would not otherwise have (cpu/subnormals.py).

    A part walks its range unsigned where the range starts at 0 or above, and subscripts that are
    the variable itself read the unsigned copy, as numba does for a prange(n)'s own index: a signed
    subscript costs a wrap-around select that keeps the loop from vectorising (Adam on 401,408
    weights: 98 against 171 µs on two threads). The count is fixed, not the thread count:
    `nb.get_num_threads()` inside a function keeps numba from caching it."""
    lo, stop = p.index(s.lo), p.index(s.stop)
    count = stop if s.lo == 0 else f"{stop} - ({lo})"
    count = count if count.isidentifier() or count.isdigit() else f"({count})"  # it is multiplied below
    start = "" if s.lo == 0 else f"({lo}) + "
    first, end = f"{start}{count} * _part // _parts", f"{start}{count} * (_part + 1) // _parts"
    var = py_name(s.var.name)
    head = [f"{pad}_mode = fp_mode()",
            f"{pad}_parts = min({PARTS}, {count})",
            f"{pad}for _part in nb.prange(_parts):",
            f"{pad}    _own = fp_mode()",
            f"{pad}    set_fp_mode(_mode)"]
    unsigned = s.lo == 0 or s.lo.is_nonnegative
    copy = f"_{var}0"  # user names never start with '_' (declare/names.py); no helper ends in 0
    if unsigned:
        p.unsigned[s.var] = copy
    try:
        body = statements(s.body, p, pad + "        ", atomic=atomic) or [pad + "        pass"]
    finally:
        p.unsigned.pop(s.var, None)
    if not unsigned:
        loop, signed = f"for {var} in range({first}, {end}):", []
    else:
        loop = f"for {copy} in range(nb.uint64({first}), nb.uint64({end})):  # {var}, unsigned"
        signed = [f"{pad}        {var} = nb.int64({copy})"] if re.search(rf"\b{var}\b", "\n".join(body)) else []
    return head + [f"{pad}    {loop}", *signed, *body, f"{pad}    set_fp_mode(_own)"]
