"""The cpu backend as the runtime sees it: numba.njit source, one serial and one parallel
function per loop nest, chosen per call from the counted work."""
from __future__ import annotations

import sympy as sp

from ...loops.ir import Nest
from ...loops.trips import nest_work
from ..base import Backend
from .codegen import generate

PARALLEL_WORK = 1 << 16  # below this many loop iterations the threads' start-up costs more than it saves


class CpuBackend(Backend):
    name = "cpu"
    row_reductions = True
    fuses = True

    def generate(self, program, dtype: str, version: str) -> str:
        return generate(program, dtype, version)

    def parallel(self, program, dims: dict) -> bool:
        """Counted iterations of the nests a parallel flavour changes, against PARALLEL_WORK (numba's
        thread count is checked per call on top, in `flavour`)."""
        try:
            work = nest_work(program, dims, PARALLEL_WORK)
        except (KeyError, TypeError):  # a bound the counter cannot evaluate: the lowering's estimate
            est = sp.sympify(next((s.parallel_work for s in program.steps if isinstance(s, Nest)), 0))
            work = int(est.xreplace({d: sp.Integer(int(dims[d.name])) for d in est.free_symbols}))
        return work >= PARALLEL_WORK

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
