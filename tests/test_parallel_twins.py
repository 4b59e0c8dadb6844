"""The warm tier of the parallel flavour (backends/cpu/twins.py): a nest of 2^18 to 2^22 counted
iterations runs on threads only once its module's parallel functions are compiled; the
compile-ahead helper compiles them after a cold step, and the next process runs them in parallel
with the same numbers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.backends import get as get_backend
from symdl.backends.cpu import backend as cpu_backend
from symdl.backends.cpu import twins
from symdl.runtime import ahead  # noqa: F401 (installs twins.request first: the test's own replaces it)


def test_the_warm_tier_follows_what_is_compiled(monkeypatch, tmp_path):
    monkeypatch.delenv("SYMDL_PARALLEL_WORK", raising=False)
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path))  # nothing compiled for it yet
    asked = []
    monkeypatch.setattr(twins, "request", asked.append)
    M, N = sp.symbols("M N", integer=True, positive=True)
    i, j = sp.Idx("i", M), sp.Idx("j", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    # a constant no other test uses: the module's functions are shared with no other module's
    f = symdl.Formula(sp.Eq(y[i, j], sp.tanh(x[i, j]) * sp.Float("1.2345678917")), name="warm_tier")
    kern, cpu = f.compile(), get_backend("cpu")
    module = kern._module("float64")
    pairs = twins.pairs(module)
    assert pairs and not twins.ready(module)
    warm = {"M": 600, "N": 600}  # 360,000 iterations: between WARM_WORK and PARALLEL_WORK
    assert twins.WARM_WORK <= 360_000 < cpu_backend.PARALLEL_WORK
    assert cpu.parallel(kern.program, warm, module) is False and asked == [module]
    assert cpu.parallel(kern.program, {"M": 100, "N": 100}, module) is False and len(asked) == 1  # below the tier
    assert cpu.parallel(kern.program, {"M": 2048, "N": 2048}, module) is True  # PARALLEL_WORK: at once
    assert 2048 * 2048 >= cpu_backend.PARALLEL_WORK
    a = np.random.default_rng(0).standard_normal((600, 600))
    want = np.tanh(a) * 1.2345678917
    np.testing.assert_allclose(kern(x=a), want, rtol=1e-12)  # runs serially: the serial twin compiles
    assert not twins.ready(module)
    for serial, parallel in pairs:
        for signature in serial.overloads:
            parallel.compile(signature)
    assert twins.ready(module)
    assert cpu.parallel(kern.program, warm, module) is True
    monkeypatch.setenv("SYMDL_PARALLEL_WORK", str(cpu_backend.PARALLEL_WORK))  # the user's threshold alone
    assert cpu.parallel(kern.program, warm, module) is False


SCRIPT = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    from symdl import nn
    from symdl.runtime import ahead

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 512), dtype=np.float32), rng.integers(0, 10, 64)
    model = nn.Sequential([nn.Input((512,)), nn.Dense(512, activation="relu"), nn.Dense(10, activation="softmax")],
                          seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

    def update_on_threads():  # the Adam update of the 262,144 weights, in the replayed step's source
        lines = [l.split("#")[0].rstrip() for l in model._replay.source().splitlines() if "262144" in l]
        return bool(lines) and all(l.endswith("P)") for l in lines)  # no lines: being recorded again

    mode, steps = sys.argv[1], int(sys.argv[2])
    losses = [float(model.train_on_batch(x, y)) for _ in range(steps)]
    first = update_on_threads()
    began = time.monotonic()  # a cold process goes on until the helper's parallel functions are in use
    while mode == "cold" and not update_on_threads() and time.monotonic() - began < 120:
        time.sleep(0.1)  # mostly idle: the helper, at the lowest priority, gets a core beside other work
        losses.append(float(model.train_on_batch(x, y)))
    print(json.dumps({"losses": losses, "first": first, "later": update_on_threads(),
                      "asked": sorted(ahead._asked)}))
''')


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="the helper forks: Linux with two cores")
def test_the_helpers_parallel_functions_come_into_use(tmp_path):
    """A cold process's Adam update of 262,144 weights runs serially while its helper compiles the
    parallel functions, then on threads (its plans and replayed step made again); a later process
    (warm) runs it on threads from the start and asks for nothing. The numbers agree with a process
    that never uses the tier."""
    env = dict(os.environ, SYMDL_CACHE_DIR=str(tmp_path / "cache"), NUMBA_NUM_THREADS="2", SYMDL_THREADS="2",
               SYMDL_COMPILE_AHEAD="1")
    env.pop("SYMDL_PARALLEL_WORK", None)

    def run(mode, steps, **extra):
        proc = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(steps)], env={**env, **extra},
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    cold = run("cold", 6)
    assert cold["asked"] and not cold["first"] and cold["later"], cold
    warm = run("warm", 6)
    assert warm["first"] and warm["asked"] == []
    serial = run("serial", len(cold["losses"]), SYMDL_PARALLEL_WORK=str(cpu_backend.PARALLEL_WORK),
                 SYMDL_CACHE_DIR=str(tmp_path / "serial"))
    assert not serial["first"]
    np.testing.assert_allclose(cold["losses"], serial["losses"], rtol=1e-5)
    np.testing.assert_allclose(warm["losses"], serial["losses"][:6], rtol=1e-5)
