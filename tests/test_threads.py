"""Threads: symdl.set_num_threads sets numba's count (OpenBLAS stays single-threaded: large products
split across numba's threads); parallel flavours run only for nests large enough to pay (the
crossover is measured by benchmarks/threads.py, not here);
OpenMP's idle threads spin briefly, then sleep, unless the user chose otherwise."""
import ctypes
import os
import subprocess
import sys
import time

import numba
import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.backends.cpu import backend as cpu, blas, gemm
from symdl.loops import lower
from symdl.runtime import threads

R, C = sp.symbols("R C", integer=True, positive=True)
i, j = sp.Idx("i", R), sp.Idx("j", C)
x, b, y = sp.IndexedBase("x"), sp.IndexedBase("b"), sp.IndexedBase("y")
BIAS = symdl.Formula(sp.Eq(y[i, j], x[i, j] + b[j]), name="threads_bias")


@pytest.fixture
def restore_threads():
    before = numba.get_num_threads()
    yield
    symdl.set_num_threads(before)


def test_set_num_threads_sets_numba_and_keeps_openblas_single_threaded(restore_threads):
    """Products split across numba's threads (backends/cpu/gemm.py); OpenBLAS's own pool stays at one
    thread whatever the count, so that its idle workers never spin beside numba's."""
    if not gemm.available():
        pytest.skip("NumPy's BLAS here is not OpenBLAS: its own environment variables decide")
    getters = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
               "openblas_get_num_threads64_", "openblas_get_num_threads")
    getter = next((getattr(lib, name) for lib in map(ctypes.CDLL, _blas_paths()) for name in getters
                   if hasattr(lib, name)), None)
    assert getter is not None
    for n in (1, numba.config.NUMBA_NUM_THREADS):
        symdl.set_num_threads(n)
        assert symdl.get_num_threads() == numba.get_num_threads() == n
        assert getter() == 1
        assert blas.product_threads() == n  # a large product splits into as many blocks


def _blas_paths():
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line})


@pytest.mark.parametrize("n", [0, -1, 2.0, True, numba.config.NUMBA_NUM_THREADS + 1])
def test_set_num_threads_refuses_what_numba_cannot_do(n, restore_threads):
    with pytest.raises(ValueError, match="set_num_threads: n must be an integer"):
        symdl.set_num_threads(n)


def test_small_nests_run_serial_and_large_ones_parallel(monkeypatch):
    prog, backend = lower(BIAS, row_reductions=True), cpu.CpuBackend()
    monkeypatch.delenv("SYMDL_PARALLEL_WORK", raising=False)
    assert not backend.parallel(prog, {"R": 256, "C": 512})          # 2^17: threads cost more
    assert backend.parallel(prog, {"R": 8192, "C": 512})             # 2^22: PARALLEL_WORK
    monkeypatch.setenv("SYMDL_PARALLEL_WORK", "1000")
    assert backend.parallel(prog, {"R": 256, "C": 512})
    monkeypatch.setenv("SYMDL_PARALLEL_WORK", "many")
    with pytest.raises(ValueError, match="SYMDL_PARALLEL_WORK must be a positive whole number"):
        backend.parallel(prog, {"R": 256, "C": 512})


def test_a_kernel_call_takes_the_flavour_its_plan_chose(monkeypatch):
    monkeypatch.delenv("SYMDL_PARALLEL_WORK", raising=False)
    kern = BIAS.compile()
    xv, bv = np.ones((64, 32), np.float32), np.arange(32, dtype=np.float32)
    shapes = tuple({"x": xv.shape, "b": bv.shape}[n] for n in kern._order)
    assert kern.plan(np.dtype(np.float32), shapes).parallel is False
    np.testing.assert_array_equal(kern(x=xv, b=bv), xv + bv)


@pytest.mark.parametrize("policy, spin", [(None, None), ("ACTIVE", None), ("PASSIVE", None), (None, "0")])
def test_openmp_threads_spin_briefly_unless_the_user_says(policy, spin):
    """Idle OpenMP threads spin 10000 rounds, then sleep; a user's OMP_WAIT_POLICY or
    GOMP_SPINCOUNT is left as it is (and no spin count is added to a wait policy)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update({k: v for k, v in (("OMP_WAIT_POLICY", policy), ("GOMP_SPINCOUNT", spin)) if v})
    code = ("import os, symdl.backends.cpu.backend; "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(policy), "10000" if (policy, spin) == (None, None) else str(spin)]


@pytest.fixture
def following(monkeypatch, restore_threads):
    """A fresh load follower reading a scripted /proc/stat: (wall s, all busy s, own s) per look."""
    load = threads._Load()
    monkeypatch.setattr(threads, "_LOAD", load)
    monkeypatch.setattr(threads, "_cores", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    monkeypatch.delenv("SYMDL_THREADS", raising=False)
    looks = []
    monkeypatch.setattr(load, "sample", lambda: looks.pop(0))
    return load, looks


def test_adapt_leaves_a_core_to_a_competing_process_and_takes_it_back(following):
    load, looks = following
    numba.set_num_threads(2)
    # quiet: this process alone was busy (1.5 of 1.5 busy seconds are its own)
    looks += [(0.0, 10.0, 1.0), (1.0, 11.5, 2.5)]
    threads.adapt()   # the first look only starts the clock
    threads.adapt()
    assert numba.get_num_threads() == 2
    # another process kept one core busy: 1 s of 2 busy seconds were not ours
    looks += [(2.0, 13.5, 3.5)]
    threads.adapt()
    assert numba.get_num_threads() == load.threads == 1
    looks += [(3.0, 14.5, 4.5)]   # it ended
    threads.adapt()
    assert numba.get_num_threads() == 2


def test_adapt_looks_at_most_four_times_a_second(following, monkeypatch):
    load, looks = following
    looks += [(0.0, 0.0, 0.0)]
    threads.adapt()
    monkeypatch.setattr(threads.time, "monotonic", lambda: 0.1)
    threads.adapt()   # too soon: no look (an empty script would raise IndexError)
    assert looks == []


def test_a_fixed_count_is_never_changed_by_the_load(following):
    load, looks = following
    symdl.set_num_threads(2)
    looks += [(0.0, 0.0, 0.0), (1.0, 2.0, 0.0)]   # two other busy cores
    threads.adapt()
    threads.adapt()
    assert numba.get_num_threads() == 2 and len(looks) == 2


def test_symdl_threads_fixes_the_count_or_names_a_bad_value(following, monkeypatch):
    load, looks = following
    monkeypatch.setenv("SYMDL_THREADS", "1")
    threads.adapt()
    assert load.fixed and numba.get_num_threads() == 1
    monkeypatch.setattr(threads, "_LOAD", threads._Load())
    monkeypatch.setenv("SYMDL_THREADS", "lots")
    with pytest.raises(ValueError, match="SYMDL_THREADS must be 'auto' or a thread count"):
        threads.adapt()


def test_the_real_proc_stat_counts_this_processs_work_among_the_machines():
    load = threads._Load()
    first = load.sample()
    if first is None:
        pytest.skip("no /proc/stat here")
    end = time.monotonic() + 0.3   # the counters tick every 10 ms: look over an interval adapt would use
    while time.monotonic() < end:
        pass
    wall, busy, own = (b - a for a, b in zip(first, load.sample()))
    assert own >= 0.2 * wall                          # our spinning, from os.times
    assert busy >= own - 0.05                         # the machine's busy time (idle excluded) holds it
    assert busy <= wall * os.cpu_count() + 0.05       # and no more than every core for the interval
