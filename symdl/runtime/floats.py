"""Subnormals flushed to zero while symdl.nn trains or predicts (backends/cpu/subnormals.py says why:
a step slowed 2.5x once Adam's moments decayed into them). Outside, a kernel computes in its
caller's mode, IEEE's by default; `with symdl.flush_subnormals():` flushes in a user's own calls.

JAX flushes on CPU too; PyTorch keeps subnormals unless torch.set_flush_denormal(True). A flushed
value is below 1.18e-38 (float32) or 2.2e-308 (float64): far below anything a loss or a weight
update can resolve.
"""
from __future__ import annotations

import contextlib
import functools


@functools.cache
def _mode_calls():
    from symdl.backends.cpu import subnormals  # loads numba: only once kernels are about to run

    return subnormals.enter_flushing, subnormals.restore


@contextlib.contextmanager
def flush_subnormals():
    """Within the block, the calling thread (and every thread a symdl kernel runs a part on)
    flushes subnormal inputs and results to zero; the thread's mode is restored on exit. Nests."""
    enter, restore = _mode_calls()
    mode = enter()
    try:
        yield
    finally:
        restore(mode)


def flushing(method):
    """`method` runs as inside flush_subnormals() (symdl.nn's public calls). ~0.3 µs a call, the
    two mode switches' own: no context manager's generator (~1 µs, a tenth of a small model's step)."""
    calls = []

    @functools.wraps(method)
    def run(*args, **kwargs):
        if not calls:
            calls.extend(_mode_calls())
        mode = calls[0]()
        try:
            return method(*args, **kwargs)
        finally:
            calls[1](mode)

    return run
