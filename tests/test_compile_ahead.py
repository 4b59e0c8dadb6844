"""runtime/ahead.py: a forked helper compiles a first step's last kernels into the cache.

The class checked: whatever the helper does (helps, dies while compiling, fails in its dry step),
the parent's steps give the same numbers as a process without a helper, the parent never compiles
a module the helper compiled, and it never waits on a helper that has gone. Each case is a fresh
process on a fresh kernel cache, as a user's first step is.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from symdl.runtime import ahead

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or (os.cpu_count() or 1) < 2,
                                reason="the helper forks: Linux with two cores")

SCRIPT = textwrap.dedent('''
    import json, os, struct, sys, time
    import numpy as np
    from numba.core import event
    from symdl import nn
    from symdl.runtime import ahead

    mode = sys.argv[1]
    TABLE, held, waits = [], [], []

    def any_done(table):  # a function the helper finished (its entries: key, then state)
        n = struct.unpack_from("<I", table.mem, table._taken)[0]
        return any(table.mem[table._taken + 4 + i * (ahead.KEY + 1) + ahead.KEY] == ord("d") for i in range(n))

    wait = ahead.Helper._wait
    ahead.Helper._wait = lambda self, key: (waits.append(1), wait(self, key))[1]
    ahead.WAIT_LIMIT = 10_000.0  # a parent that missed the helper's death would hang: the test times out
    if mode == "help":  # the parent's first claim waits for the helper's first finished function
        claim = ahead.Helper.claim
        def first_waits(self, module):
            while not self.exited() and not any_done(self.table):
                time.sleep(0.005)
            ahead.Helper.claim = claim
            claim(self, module)
        ahead.Helper.claim = first_waits
    elif mode == "hold":  # the helper holds its first function until the parent claims it: the parent waits
        compile_one = ahead._compile
        def holding(dispatcher, types):
            key = ahead._key(dispatcher._symdl_key)
            while not held and not (TABLE[0].claimed(key) or TABLE[0].stopped()):
                time.sleep(0.005)
            held.append(key)
            compile_one(dispatcher, types)
        ahead._compile = holding
    elif mode == "dies":  # the helper dies while compiling its first function (left busy)
        ahead._compile = lambda dispatcher, types: os._exit(3)
        claim = ahead.Helper.claim
        def after_death(self, module):
            while not self.exited():
                time.sleep(0.005)
            ahead.Helper.claim = claim
            claim(self, module)
        ahead.Helper.claim = after_death
    elif mode == "dry_fails":  # the helper's dry step raises at once
        main = ahead._helper_main
        def failing(dry_step, table, parent):
            def dry():
                raise RuntimeError("dry step failed")
            main(dry, table, parent)
        ahead._helper_main = failing

    compiled = set()
    class Count(event.Listener):
        def on_start(self, ev): pass
        def on_end(self, ev):
            name = getattr(ev.data["dispatcher"].py_func, "__module__", None) or ""
            if name.startswith("symdl_kernel_"):
                compiled.add(name)
    event.register("numba:compile", Count())

    compile_from_end = ahead._compile_from_end
    def reporting(table, parent):  # the helper writes down what it compiled (a fork: its own `compiled`)
        compiled.clear()
        TABLE.append(table)
        compile_from_end(table, parent)
        with open(f"{sys.argv[2]}.helper{os.getpid()}.json", "w") as f:
            json.dump(sorted(compiled), f)
    ahead._compile_from_end = reporting

    rng = np.random.default_rng(0)
    L = nn.layers
    model = nn.Sequential([nn.Input((12,)), L.Dense(8, activation="tanh"), L.Dense(5, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.standard_normal((6, 12)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    forks = []
    fork = ahead._fork
    ahead._fork = lambda dry_step: (forks.append(1), fork(dry_step))
    if sys.argv[3] == "train":
        losses = [model.train_on_batch(x, y) for _ in range(2)]
        np.savez(sys.argv[2], *[w.value for w in model.weights])
    else:  # a model's first use is inference: predict, then evaluate
        out = model.predict(x, batch_size=4)
        losses = [model.evaluate(x, y, batch_size=4, verbose=0)]
        np.savez(sys.argv[2], out)
    print(json.dumps({"losses": losses, "compiled": sorted(compiled), "helped": sorted(ahead.helped()),
                      "forks": len(forks), "waits": len(waits)}))
''')


def _run(mode: str, tmp_path, ahead_setting: str, action: str = "train") -> tuple[dict, list]:
    cache = tmp_path / f"cache-{mode}"
    weights = tmp_path / f"weights-{mode}.npz"
    env = {**os.environ, "SYMDL_CACHE_DIR": str(cache), "SYMDL_COMPILE_AHEAD": ahead_setting,
           "SYMDL_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(weights), action], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["helper compiled"] = sorted({name for f in tmp_path.glob(weights.name + ".helper*.json")
                                        for name in json.loads(f.read_text())})
    with np.load(weights) as saved:
        return report, [saved[k] for k in sorted(saved.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def without_helper(tmp_path_factory):
    return _run("plain", tmp_path_factory.mktemp("plain"), "0")


@pytest.mark.parametrize("mode", ["help", "hold", "dies", "dry_fails"])
def test_first_steps_agree_with_a_process_without_helper(mode, tmp_path, without_helper):
    report, weights = _run(mode, tmp_path, "1")
    plain, plain_weights = without_helper
    assert plain["forks"] == 0 and report["forks"] == 1
    assert report["losses"] == plain["losses"]
    for got, want in zip(weights, plain_weights, strict=True):
        np.testing.assert_array_equal(got, want)
    # each module compiled once, in one of the two processes; the parent counts the helper's
    parent, helper = set(report["compiled"]), set(report["helper compiled"])
    assert not parent & helper
    assert parent | helper == set(plain["compiled"])
    assert set(report["helped"]) == helper
    if mode == "help":
        assert helper, "the helper compiled nothing the parent used"
    elif mode == "hold":  # only the step's last function, which the parent waited for
        assert len(helper) == 1 and report["waits"] >= 1
    else:
        assert helper == set() and report["compiled"] == plain["compiled"]


def test_inference_first_compiles_with_a_helper_too(tmp_path):
    """predict and evaluate fork a helper for their first batch (the forward pass, then the loss)."""
    plain, (plain_out,) = _run("plain", tmp_path, "0", "infer")
    report, (out,) = _run("help", tmp_path, "1", "infer")
    assert plain["forks"] == 0 and report["forks"] >= 1
    np.testing.assert_array_equal(out, plain_out)
    assert report["losses"] == plain["losses"]
    parent, helper = set(report["compiled"]), set(report["helper compiled"])
    assert helper and not parent & helper and parent | helper == set(plain["compiled"])


def test_a_warm_cache_forks_no_helper(tmp_path):
    first, _ = _run("plain", tmp_path, "1")
    again, _ = _run("plain", tmp_path, "1")  # the same cache folder, now holding every module
    assert first["forks"] == 1 and again["forks"] == 0 and again["compiled"] == []
    assert again["losses"] == first["losses"]


# -- in the process: the table and the switches ------------------------------------------------------

def test_table_keeps_each_side_and_the_stop_flag():
    t = ahead.Table()
    a, b = ahead._key("a" * 16), ahead._key("b" * 16)
    assert t.state(a) is None and not t.claimed(a) and not t.stopped()
    at = t.take(a)
    assert t.state(a) == ahead.BUSY and t.state(b) is None
    t.mark(at, ahead.DONE)
    assert t.state(a) == ahead.DONE
    t.claim(b)
    assert t.claimed(b) and not t.claimed(a)
    t.stop()
    assert t.stopped()


def test_a_full_table_takes_nothing_more(monkeypatch):
    monkeypatch.setattr(ahead, "SLOTS", 2)
    t = ahead.Table()
    assert t.take(ahead._key("1" * 16)) is not None and t.take(ahead._key("2" * 16)) is not None
    assert t.take(ahead._key("3" * 16)) is None
    assert t.state(ahead._key("3" * 16)) is None


@pytest.mark.parametrize("setting, threads, want", [("0", 1, False), ("off", 1, False), ("auto", 1, True),
                                                     ("auto", 3, False), ("1", 3, True)])
def test_switches(monkeypatch, setting, threads, want):
    monkeypatch.setenv("SYMDL_COMPILE_AHEAD", setting)
    monkeypatch.setattr(ahead.threading, "active_count", lambda: threads)
    monkeypatch.setattr(ahead, "_machine_allows", lambda: True)
    assert ahead.enabled() is want


def test_a_dry_step_records_types_and_runs_nothing(monkeypatch, tmp_path):
    """In a helper, a module's numba functions note their argument types instead of running;
    restored, they run again."""
    import sympy as sp

    import symdl
    from symdl.runtime.cache import load_module
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path))
    n = sp.Symbol("N", integer=True, positive=True)
    i = sp.Idx("i", n)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    kern = symdl.Formula(sp.Eq(y[i], 2 * x[i] + 1), name="ahead_probe").compile()
    module = load_module(kern.source("float32"))
    run = module.run
    monkeypatch.setattr(ahead, "_records", [])
    monkeypatch.setattr(ahead, "_stubbed", [])
    ahead._stub(module)
    out, xv = np.full(4, 7.0, np.float32), np.arange(4, dtype=np.float32)
    run(out, xv, 4, False)  # run(y, x, N, parallel)
    assert np.all(out == 7.0), "a dry step ran the kernel"
    (key, dispatcher, types), = ahead._records
    assert key == dispatcher._symdl_key and str(types[0]) == "array(float32, 1d, C)"
    ahead._restore()
    run(out, xv, 4, False)
    np.testing.assert_array_equal(out, 2 * xv + 1)


def test_the_parent_claims_each_function_once_and_counts_what_the_helper_finished(monkeypatch):
    import types
    monkeypatch.setattr(ahead, "_helped", set())
    f, g = types.SimpleNamespace(_symdl_key="f" * 16), types.SimpleNamespace(_symdl_key="9" * 16)
    module = types.ModuleType("symdl_kernel_probe")
    module.f, module.g, module.again = f, g, f
    helper = ahead.Helper(pid=os.getpid(), table=ahead.Table())  # waitpid on itself: "exited"
    helper.table.mark(helper.table.take(ahead._key("9" * 16)), ahead.DONE)  # the helper compiled g
    helper.claim(module)
    helper.claim(module)
    assert helper.table._count(helper.table._claims) == 2
    assert helper.table.claimed(ahead._key("f" * 16)) and helper.table.claimed(ahead._key("9" * 16))
    assert ahead.helped() == {"symdl_kernel_probe"}
