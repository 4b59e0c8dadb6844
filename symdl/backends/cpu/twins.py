"""The warm tier of the parallel flavour: a nest of WARM_WORK to PARALLEL_WORK counted iterations
runs on threads only where its module's parallel functions are compiled already, in this process
or in the kernel cache by an earlier one.

Threads pay from ~2^18 iterations while a step keeps them awake (backend.py: the E5 CNN's step
2.9-3.2 -> 2.0-2.3 ms with every such nest parallel), but numba compiles a parallel flavour several
times slower than a serial one (E5's first step from an empty cache: 4.8 s against 2.6 s, with the
compile-ahead helper). So a cold process runs such nests serially, the other core idle, and the
compile-ahead helper (runtime/ahead.py), after the step's own functions, compiles their parallel
twins into the cache at the lowest priority. The process finds them there (`poll`, from symdl.nn's
steps) and remakes the plans that waited for them (runtime/plan.py `stale`, nn/replay.py); the
next process runs them on threads from its first step. A nest of PARALLEL_WORK or more runs in
parallel at once, as before.
"""
from __future__ import annotations

import os
import sys
import time

WARM_WORK = 1 << 18
POLL_EVERY = 0.5  # seconds between looks at the cache for the modules still pending

pending: set = set()  # names of modules whose nests run serially until their parallel functions compile
generation = 0        # counts the modules that left `pending`: plans made before are remade (runtime, nn)
_last_poll = 0.0


def poll() -> None:
    """Every POLL_EVERY seconds at most (symdl.nn calls it per step): a pending module whose
    parallel functions are now compiled (the helper's work, found in the cache) leaves `pending`,
    and `generation` moves, so that its call plans and a model's replayed steps are made again."""
    global generation, _last_poll
    if not pending:
        return
    now = time.monotonic()
    if now - _last_poll < POLL_EVERY:
        return
    _last_poll = now
    for name in list(pending):
        module = sys.modules.get(name)
        if module is None or ready(module):
            pending.discard(name)
            generation += 1


def _no_helper(module) -> None:
    """Asks for `module`'s parallel functions: runtime/ahead.py installs its own on import."""


request = _no_helper


def pairs(module) -> list:
    """(serial, parallel) numba functions of a generated module, by their names' suffixes."""
    space = vars(module)
    out = []
    for name, fn in space.items():
        if name.endswith("_serial") and isinstance(getattr(fn, "_symdl_key", None), str):
            twin = space.get(name[: -len("_serial")] + "_parallel")
            if isinstance(getattr(twin, "_symdl_key", None), str):
                out.append((fn, twin))
    return out


def ready(module) -> bool:
    """Whether the module's parallel functions are compiled wherever their serial twins are (the
    nests a call ran before), and at least one such pair is. A nest never run (another way of a
    Branch) does not count: its first call compiles whichever flavour it takes."""
    compiled = [(_compiled(serial), _compiled(parallel)) for serial, parallel in pairs(module)]
    return any(s for s, _ in compiled) and all(p for s, p in compiled if s)


def _compiled(fn) -> bool:
    """Compiled in this process, or numba's cache holds machine code for it (its index file)."""
    if getattr(fn, "overloads", None):
        return True
    try:
        return os.path.exists(fn._cache._cache_file._index_path)
    except AttributeError:  # not a caching numba dispatcher (or numba's internals moved): not known
        return False
