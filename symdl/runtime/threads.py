"""How many threads symdl's kernels use: numba's parallel loops, and large matrix products split
across the same threads (backends/cpu/gemm.py: OpenBLAS itself runs single-threaded in a symdl
process, so that its idle workers never spin beside numba's; where NumPy's BLAS is another library,
its own settings decide).

By default the count follows the load (`adapt`, called by symdl.nn once per training or inference
batch): every core numba sees (NUMBA_NUM_THREADS) on a quiet machine, fewer while other processes
keep cores busy, since a thread waiting for a core stalls every thread of a parallel loop or a
matrix product. A parallel flavour runs only for nests large enough to pay for waking the threads
(backends/cpu/backend.py). `symdl.set_num_threads(n)`, or SYMDL_THREADS=n, fixes the count.
"""
from __future__ import annotations

import os
import time

def set_num_threads(n: int) -> None:
    """Use `n` threads in numba's parallel loops and in large matrix products (ValueError outside
    1..NUMBA_NUM_THREADS). The count stays fixed: `adapt` no longer follows the load."""
    _LOAD.fixed = True
    _apply(_checked(n, "set_num_threads"))


def _checked(n, where: str) -> int:
    import numba

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"{where}: n must be an integer from 1 to {numba.config.NUMBA_NUM_THREADS} "
                         f"(NUMBA_NUM_THREADS), got {n!r}")
    return n


def _apply(n: int) -> None:
    import numba

    _follow_in_products()
    numba.set_num_threads(n)


def _follow_in_products() -> None:
    """Large products split across numba's threads (backends/cpu/blas.py) take the count from here,
    looking at the load first as a step does; OpenBLAS itself stays single-threaded."""
    from symdl.backends.cpu import blas  # loads numba: only once kernels are about to run

    blas.product_threads = _product_threads


def _product_threads() -> int:
    adapt()
    return get_num_threads()


class _Load:
    """The cores other processes kept busy since the last look, from /proc/stat (all CPU time)
    less this process's own CPU time (its spinning threads included)."""

    INTERVAL = 0.25  # seconds between looks: reading two small files costs ~20 µs

    def __init__(self):
        self.fixed = False
        self.threads = None
        self.last = None  # (wall, all busy seconds, own seconds)

    def sample(self):
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):  # not Linux: the count stays as it is
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / ticks  # all but idle and iowait
        own = sum(os.times()[:2])
        return time.monotonic(), busy, own

    def others(self) -> float | None:
        """Cores busy with other processes over the last interval (None: too soon to tell)."""
        now = self.sample()
        if now is None:
            return None
        last, self.last = self.last, now
        if last is None or now[0] - last[0] <= 0:
            return None
        others = ((now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0])
        return min(max(0.0, others), float(os.cpu_count() or 1))  # counters tick every 10 ms: clamp the noise


_LOAD = _Load()


def _cores() -> int:
    """The cores this process may run on (its affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def adapt() -> None:
    """Follow the load: as many threads as cores other processes leave free (at least 1, at most
    NUMBA_NUM_THREADS), looked at every quarter second; nothing when the count was fixed by
    set_num_threads or SYMDL_THREADS=n (SYMDL_THREADS=auto, the default, follows)."""
    load = _LOAD
    if load.fixed:
        return
    if load.threads is None:  # first call: the environment decides whether to follow
        _follow_in_products()
        setting = os.environ.get("SYMDL_THREADS", "auto").strip().lower()
        if setting != "auto":
            load.fixed = True
            try:
                _apply(_checked(int(setting), "SYMDL_THREADS"))
            except ValueError as e:
                raise ValueError(f"SYMDL_THREADS must be 'auto' or a thread count: {e}") from None
            return
        load.threads = get_num_threads()
    if load.last is not None and time.monotonic() - load.last[0] < load.INTERVAL:
        return
    others = load.others()
    if others is None:
        return
    import numba

    free = round((os.cpu_count() or 1) - others)  # /proc/stat counts every core of the machine
    want = max(1, min(numba.config.NUMBA_NUM_THREADS, _cores(), free))
    if want != load.threads:
        load.threads = want
        _apply(want)


def get_num_threads() -> int:
    """The thread count of numba's parallel loops (the one set_num_threads sets)."""
    import numba

    return numba.get_num_threads()
