"""Split sums: the thread-per-output kernel when outputs are few and their sums long (a bias
gradient Σ_b g[b, j] with 10 columns and 60000 rows would keep 10 threads busy).

Two kernels, and the driver chooses by shape (launch.split_chunks) between them and the plain
thread-per-output kernel. `_split`: thread u takes output t = u % cols and chunk c = u // cols, and
sums the terms c, c + chunks, c + 2 chunks, ... of each sum (neighbouring threads read
neighbouring columns of one row) into `_part_[slot * chunks + c, t]`; `_join`: one thread per
output adds its chunks in a fixed order and runs the statements after the sums (the store). No
atomics: the result does not depend on thread timing, and atomics would need the output zeroed by
a launch of its own anyway.
"""
from __future__ import annotations

from ...printing import py_name
from ..statements import statements
from .flat import flat_loop, partial_sums, recover, sizes
from .mapping import Reduction, ThreadMap

KERNEL = "@cuda.jit(cache=True)"


def split_source(name: str, tm: ThreadMap, red: Reduction, p, params: str,
                 prefix: list[str]) -> tuple[str, list[str], str]:
    """(the two kernels' source, their launch lines (the driver names the outputs' count `_cols_`),
    the host-side length of the longest sum); `prefix`: the lines every thread runs first."""
    order = sorted(red.pairs)
    slot = {n: k for k, n in enumerate(order)}
    body = red.body
    part = [KERNEL, f"def {name}_split(_part_, _nc_, {params}):",
            "    # few outputs, long sums: each thread sums every _nc_-th term of its output's sums"]
    part += prefix
    outer, total, _ = sizes(tm.loops, p, "    ")
    part += outer + [f"    _cols_ = {total}",
                     "    for _u_ in range(cuda.grid(1), _nc_ * _cols_, cuda.gridsize(1)):",
                     "        _c_ = _u_ // _cols_  # the chunk",
                     "        _t_ = _u_ % _cols_   # the output, fastest: neighbouring threads, neighbouring columns"]
    part += recover(tm.loops, p, "        ", "", "_t_")
    sums, lengths = partial_sums(red, slot, p, "        ", ("_c_", "_nc_"), "_k_")
    part += sums
    part += [f"        _part_[{_row(slot[n], '_c_')}, _t_] = {py_name(red.pairs[n][0].name)}" for n in order]
    join = [KERNEL, f"def {name}_join(_part_, _nc_, {params}):",
            "    # one thread per output adds its _nc_ partial sums (in order) and finishes"]
    join += prefix
    loop, _ = flat_loop(tm.loops, p, "    ")
    join += loop
    for n, s in enumerate(body):
        if n in red.pairs:
            acc = py_name(s.name.name)
            join += [f"        {acc} = F(0)", "        for _c_ in range(_nc_):",
                     f"            {acc} += _part_[{_row(slot[n], '_c_')}, _t_]"]
        elif n - 1 not in red.pairs:
            join += statements((s,), p, "        ")
    rows = "_nc_" if len(order) == 1 else f"{len(order)} * _nc_"
    calls = [f"        _part_ = cuda.device_array(({rows}, _cols_), dtype=F)",
             f"        {name}_split[launch_grid(_nc_ * _cols_)](_part_, _nc_, {params})",
             f"        {name}_join[launch_grid(_cols_)](_part_, _nc_, {params})"]
    length = f"max({', '.join(lengths)})" if len(lengths) > 1 else lengths[0]
    return "\n".join(part) + "\n\n" + "\n".join(join) + "\n", calls, length


def _row(slot: int, chunk: str) -> str:
    """The row of `_part_` holding one chunk of one sum (sum `slot`'s chunks are consecutive rows)."""
    return chunk if slot == 0 else f"{slot} * _nc_ + {chunk}"
