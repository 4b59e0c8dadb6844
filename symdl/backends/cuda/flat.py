"""Flattened loops: several rectangular loops of the IR as one grid-stride loop over a flat index,
each loop variable recovered from it (innermost fastest, so neighbouring threads touch neighbouring
elements). Shared by every kernel shape codegen.py and split.py print."""
from __future__ import annotations

import sympy as sp

from ...printing import py_name
from ..statements import statements

GRID = ("cuda.grid(1)", "cuda.gridsize(1)")  # a thread's first flat index and its stride


def extent(loop, p) -> str:
    """The loop's trip count as source (never negative)."""
    lo, stop = sp.sympify(loop.lo), sp.sympify(loop.stop)
    return f"max(0, {p.index(stop)})" if lo == 0 else f"max(0, {p.index(stop - lo)})"


def _start(loop, p, offset: str) -> str:
    return offset if sp.sympify(loop.lo) == 0 else f"{p.index(loop.lo)} + {offset}"


def flat_loop(loops, p, pad: str, tag: str = "", walk: tuple = GRID, var: str = "_t_") -> tuple[list[str], str]:
    """A loop over the flattened iteration space of `loops` from walk[0] in steps of walk[1] (by
    default grid-stride), with each loop variable recovered from the flat index `var`; returns the
    lines and the host-side extent. `tag` keeps several flattened loops' names apart."""
    lines, total, host = sizes(loops, p, pad, tag)
    lines.append(f"{pad}for {var} in range({walk[0]}, {total}, {walk[1]}):")
    return lines + recover(loops, p, pad + "    ", tag, var), host


def sizes(loops, p, pad: str, tag: str = "") -> tuple[list[str], str, str]:
    """(lines naming each loop's trip count `_n<tag><k>_`, their product, the same on the host)."""
    lines = [f"{pad}_n{tag}{k}_ = {extent(loop, p)}" for k, loop in enumerate(loops)]
    total = " * ".join(f"_n{tag}{k}_" for k in range(len(loops)))
    return lines, total, " * ".join(extent(loop, p) for loop in loops)


def recover(loops, p, pad: str, tag: str, var: str) -> list[str]:
    """Each loop variable from the flat index `var` (innermost fastest)."""
    if len(loops) == 1:
        return [f"{pad}{py_name(loops[0].var.name)} = {_start(loops[0], p, var)}"]
    rest = "_r_" if var == "_t_" else f"_r{var[1:]}"
    lines = [f"{pad}{rest} = {var}"]
    for k in range(len(loops) - 1, 0, -1):
        lines.append(f"{pad}{py_name(loops[k].var.name)} = {_start(loops[k], p, f'{rest} % _n{tag}{k}_')}")
        lines.append(f"{pad}{rest} //= _n{tag}{k}_")
    return lines + [f"{pad}{py_name(loops[0].var.name)} = {_start(loops[0], p, rest)}"]


def partial_sums(red, slot: dict, p, pad: str, walk: tuple = GRID, var: str = "_t_") -> tuple[list[str], list[str]]:
    """A reduction body up to its last sum (`red`, mapping.Reduction), each sum's loops flattened
    into one loop from walk[0] in steps of walk[1]: each thread adds its share of every sum into the
    sum's scalar. Returns the lines and each flattened loop's host-side length."""
    lines, lengths = [], []
    for n, s in enumerate(red.body[:red.last + 1]):
        if n in red.pairs:
            lines.append(f"{pad}{py_name(s.name.name)} = F(0)")
        elif n - 1 in red.pairs:
            _, loops, inner = red.pairs[n - 1]
            loop, length = flat_loop(loops, p, pad, f"{slot[n - 1]}_", walk, var)
            lines += loop + (statements(inner, p, pad + "    ") or [f"{pad}    pass"])
            lengths.append(length)
        else:
            lines += statements((s,), p, pad)
    return lines, lengths
