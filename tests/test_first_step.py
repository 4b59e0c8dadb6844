"""The first training step of a new process: what it derives and compiles, from an empty kernel cache
and from a warm one (the issue's cold/warm start; the seconds are measured by hand, not here).

Counted in a child process: gradients derived (autodiff's `_vjp_one`), self-check cases built,
numba functions compiled (cache misses) or loaded (cache hits), and the helpers compiled.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent('''
    import json, sys
    import numpy as np
    import symdl
    from symdl import nn
    import symdl.autodiff
    from symdl.runtime import selfcheck

    counts = {"derived": 0, "cases": 0, "lowered": 0, "stored": 0}
    def counting(module, name, key):
        real = getattr(module, name)
        def wrapper(*args, **kwargs):
            counts[key] += 1
            return real(*args, **kwargs)
        setattr(module, name, wrapper)
    counting(sys.modules["symdl.autodiff.vjp"], "_vjp_one", "derived")  # the module, not its vjp
    counting(selfcheck, "_build_case", "cases")
    from symdl.runtime import kept
    counting(kept, "lower", "lowered")  # a kernel's formula lowered, not read back (runtime/kept.py)
    counting(type(kept.STORE), "put", "stored")  # anything derived and stored: gradients, programs, source

    L = nn.layers
    rng = np.random.default_rng(0)
    if sys.argv[1] == "mlp":
        model = nn.Sequential([nn.Input((20,)), L.Dense(8, activation="relu"), L.Dense(8, activation="relu"),
                               L.Dense(4, activation="softmax")], seed=0)
        x = rng.random((8, 20), dtype=np.float32)
    else:  # 16 filters: the convolution gathers its patches (contraction.MIN_REUSE)
        model = nn.Sequential([nn.Input((8, 8, 1)), L.Conv2D(16, (3, 3), activation="relu"),
                               L.MaxPooling2D((2, 2)), L.Flatten(), L.Dense(4, activation="softmax")], seed=0)
        x = rng.random((8, 8, 8, 1), dtype=np.float32)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(x, rng.integers(0, 4, 8))

    import numba
    from symdl.backends.cpu import shared
    dispatchers = {id(d): (name, d) for m, mod in list(sys.modules.items()) if m.startswith("symdl_kernel_")
                   for name, d in vars(mod).items() if isinstance(d, numba.core.dispatcher.Dispatcher)}
    kernels = [(n, d) for n, d in dispatchers.values() if not n.startswith("_")]
    helpers = [d for space in shared._MADE.values() for d in space.values()
               if isinstance(d, numba.core.dispatcher.Dispatcher)]
    print("REPORT" + json.dumps(dict(counts, loss=float(loss),
        misses=sum(sum(d.stats.cache_misses.values()) for _, d in kernels),
        hits=sum(sum(d.stats.cache_hits.values()) for _, d in kernels),
        compiled=sorted(n for n, d in kernels if d.signatures),
        helper_compiles=[len(d.signatures) for d in helpers if d.signatures])))
''')


def run(model: str, cache) -> dict:
    # no compile-ahead helper (runtime/ahead.py): the counts are one process's work, and a helper
    # would derive gradients and compile functions for it (tests/test_compile_ahead.py)
    env = dict(os.environ, SYMDL_CACHE_DIR=str(cache), SYMDL_THREADS="1", SYMDL_COMPILE_AHEAD="0")
    res = subprocess.run([sys.executable, "-c", CHILD, model], env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("REPORT")][-1]
    return json.loads(line[len("REPORT"):])


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_a_warm_start_derives_checks_and_compiles_nothing(model, tmp_path):
    cold = run(model, tmp_path / "cache")
    assert cold["derived"] > 0 and cold["cases"] > 0 and cold["misses"] > 0  # the counters count
    assert all(n == 1 for n in cold["helper_compiles"])  # each helper once, for every module
    warm = run(model, tmp_path / "cache")
    print("COLD", cold, "\nWARM", warm)
    assert cold["lowered"] > 0 and cold["stored"] > 0
    assert warm["derived"] == 0 and warm["cases"] == 0, warm  # gradients from the cache, checks passed
    assert warm["lowered"] == 0 and warm["stored"] == 0, warm  # kernels' programs and source from the cache too
    assert warm["misses"] == 0 and warm["hits"] >= len(warm["compiled"]) > 0, warm  # numba loads, compiles nothing
    assert warm["helper_compiles"] == []  # the helpers are inside the cached kernels
    assert warm["compiled"] == cold["compiled"] and warm["loss"] == cold["loss"]


def test_a_cold_step_compiles_only_the_nests_it_runs(tmp_path):
    """The convolution's module also holds loops for narrow outputs (a Branch): the step runs the
    gathered GEMM, so the loops are neither compiled nor checked (the self-check takes the call's path)."""
    cold = run("cnn", tmp_path / "cache")
    assert "gather_T1_serial" in cold["compiled"], cold
    assert not [n for n in cold["compiled"] if n.startswith("plain_") or n.endswith("_parallel")], cold


def test_consecutive_nests_merge_only_when_their_locals_are_apart():
    """Two nests in a row compile as one function (one numba compile) unless a name one assigns is
    assigned or looped over in the other: numba would then type the two uses as one variable."""
    import sympy as sp

    from symdl.backends.cpu.codegen import _merged
    from symdl.loops.ir import Let, Loop, Nest, Store

    i, j, n = sp.Symbol("i", integer=True), sp.Symbol("j", integer=True), sp.Symbol("N", integer=True)
    acc, t = sp.Symbol("acc0"), sp.Symbol("t", integer=True)

    def nest(name, *body, var=i):
        return Nest(name, (Loop(var, 0, n, tuple(body)),), ("y",), n)

    zero = nest("zero", Store("y", (i,), sp.Integer(0)))
    sums = nest("rows", Let(acc, sp.Integer(1)), Store("y", (i,), acc))
    (merged,) = _merged([zero, sums])
    assert merged.name == "zero_rows" and merged.body == zero.body + sums.body and merged.tensors == ("y",)
    assert len(_merged([sums, nest("again", Let(acc, sp.Integer(2)), Store("y", (i,), acc))])) == 2
    assert len(_merged([sums, nest("loop_t", Store("y", (t,), sp.Integer(0)), var=t),
                        nest("let_t", Let(t, i), Store("y", (t,), sp.Integer(0)))])) == 2
    assert len(_merged([zero, nest("inner", Loop(j, 0, n, (Store("y", (j,), sp.Integer(1)),)))])) == 1
