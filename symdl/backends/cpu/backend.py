"""The cpu backend as the runtime sees it: numba.njit source, one serial and one parallel
function per loop nest, chosen per call from the counted work.

Threads pay only for large nests: waking numba's pool costs about 35 us (2 cores, OpenMP with
passive waiting), the time a vectorised loop (elementwise, or a row reduction) takes for ~2^20
iterations; parallel wins from ~2^21 on (benchmarks/threads.py measures the crossover). With
the brief spinning below a step's threads are awake and parallel would pay from ~2^18 (the E5
CNN's step 3.1 -> ~2.0 ms, E4's Adam update of 401,408 weights 267 -> 119 µs), but numba compiles
a parallel flavour far more slowly than a serial one: E5's first step from an empty cache took
8.8 s against 4.5 s at 2^21. So from 2^22 (PARALLEL_WORK) a nest runs in parallel at once, and
from 2^18 once its parallel flavour is compiled, by the compile-ahead helper (twins.py).

OpenMP's idle threads spin briefly, then sleep: GOMP_SPINCOUNT=10000 (~0.4 ms of spinning per
thread measured here), unless the user set it or OMP_WAIT_POLICY. A step's parallel regions and
split products (blas.py) come closer together than that, so its threads are awake for each (the
E2 MLP at batch 128 0.42 -> 0.35 ms, inference at batch 1024 0.78 -> 0.68 ms against passive
waiting); a process that stops computing frees its cores at once. libgomp's default (~8 ms) and
OMP_WAIT_POLICY=ACTIVE (for good) keep spinning workers competing with other processes for the
same cores, which made small kernels 5-20x slower on a busy two-core machine; under load the
thread count drops instead (runtime/threads.py).
"""
from __future__ import annotations

import os

import sympy as sp

from ...loops.ir import Nest
from ...loops.trips import nest_work
from ..base import Backend
from . import twins
from .codegen import generate

if "OMP_WAIT_POLICY" not in os.environ:  # read when numba first loads its OpenMP pool
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# counted loop iterations from which a nest runs on threads from its first call, its parallel
# flavour compiled there and then (SYMDL_PARALLEL_WORK); below, from twins.WARM_WORK once the
# compile-ahead helper has compiled it. Not 2^21: numba compiles a parallel flavour in 1-2 s, and
# E5's max-pool gradient (2.2M iterations, ~0.4 ms serial) made its first step 2.6 -> 5.3 s
PARALLEL_WORK = 1 << 22
# a product's multiply-adds (m·n·k) from which splitting it across the threads pays (blas.py,
# gemm.py): from 2^22 where every side is at least SPLIT_SIDE (E2 batch 128's 128x784x64 products:
# step 0.42 -> 0.35 ms), from 2^24 for any shape (E5's convolution, 21632x9x32 with its thin
# sums, ran 10% slower split at 6.2M; E1's 115200x27x32 25% faster at 100M)
SPLIT_WORK, SPLIT_WORK_ANY, SPLIT_SIDE = 1 << 22, 1 << 24, 64
# and from 2^20 for a long sum into a small output, cut along the sum (gemm.py; E5's weight
# gradient, 9x21632x32: 0.39 -> 0.27 ms; 9x5408x32: 0.081 -> 0.042 ms)
SPLIT_WORK_SUM = 1 << 20


class CpuBackend(Backend):
    name = "cpu"
    row_reductions = True
    fuses = True

    def generate(self, program, dtype: str, version: str) -> str:
        return generate(program, dtype, version)

    def parallel(self, program, dims: dict, module=None) -> bool:
        """Counted iterations of the nests a parallel flavour changes, against PARALLEL_WORK or the
        SYMDL_PARALLEL_WORK environment variable (numba's thread count is checked per call on top,
        in `flavour`); from WARM_WORK where `module`'s parallel functions are compiled already
        (twins.py; not where SYMDL_PARALLEL_WORK sets the threshold)."""
        limit = parallel_work()
        try:
            work = nest_work(program, dims, limit)
        except (KeyError, TypeError):  # a bound the counter cannot evaluate: the lowering's estimate
            est = sp.sympify(next((s.parallel_work for s in program.steps if isinstance(s, Nest)), 0))
            work = int(est.xreplace({d: sp.Integer(int(dims[d.name])) for d in est.free_symbols}))
        if work >= limit:
            return True
        if module is None or work < twins.WARM_WORK or os.environ.get("SYMDL_PARALLEL_WORK", "").strip():
            return False
        if twins.ready(module):
            return True
        twins.pending.add(module.__name__)
        twins.request(module)  # the compile-ahead helper, if one works, compiles them for later
        return False

    def flavour(self, parallel: bool) -> bool:
        return parallel and threads() > 1


def threads() -> int:
    """numba's thread count, without starting its thread pool just to ask (a process that forks
    after the GNU OpenMP pool has started may not survive the fork)."""
    import numba
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", True):
        return numba.get_num_threads()
    return numba.config.NUMBA_NUM_THREADS



def parallel_work() -> int:
    text = os.environ.get("SYMDL_PARALLEL_WORK", "").strip()
    if not text:
        return PARALLEL_WORK
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise ValueError(f"SYMDL_PARALLEL_WORK must be a positive whole number of loop iterations, got {text!r}")
    return value
