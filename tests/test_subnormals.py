"""Subnormal numbers: a kernel computes in its caller's floating-point mode on every thread it runs
on (backends/cpu/subnormals.py), and symdl.nn's calls flush them to zero (runtime/floats.py).

Each check runs in a subprocess with two numba threads, so that the pool's second thread is
started in a known mode (a pool thread keeps the mode it started with): the parallel flavour must
still give every part the caller's mode, whichever mode the pool started in.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import symdl
from symdl import nn

TINY = np.finfo(np.float32).tiny


def subnormal(a: np.ndarray) -> np.ndarray:
    return (a != 0) & (np.abs(a) < TINY)


def child(code: str) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


KERNELS = '''
    import json
    import numpy as np, sympy as sp, symdl
    from symdl.backends.cpu import gemm, subnormals

    R, C = sp.symbols("R C", integer=True, positive=True)
    i, j = sp.Idx("i", R), sp.Idx("j", C)
    x, b, y = sp.IndexedBase("x"), sp.IndexedBase("b"), sp.IndexedBase("y")
    kern = symdl.Formula(sp.Eq(y[i, j], x[i, j] * b[j]), name="subnormal_scale").compile()
    rng = np.random.default_rng(0)
    X = (rng.random((64, 32), dtype=np.float32) + 0.5) * np.float32(1e-20)  # x * b: 1e-40 and so on
    B = (rng.random(32, dtype=np.float32) + 0.5) * np.float32(1e-20)
    arrays = {{"x": X, "b": B}}
    plan = kern.plan(np.dtype(np.float32), tuple(arrays[n].shape for n in kern._order))
    A3 = X.reshape(4, 16, 32)
    B3 = np.ascontiguousarray(A3.transpose(0, 2, 1))

    def results():
        out = {{}}
        for parallel in (False, True):
            y = np.empty(plan.out_shape, np.float32)
            plan.run(y, *(arrays[n] for n in kern._order), *plan.values, parallel)
            out["elementwise " + ("parallel" if parallel else "serial")] = y
        c = np.empty((64, 64), np.float32)
        assert gemm.split_matmul(X, X.T.copy(), c, 2)
        out["split GEMM"] = c
        c3 = np.empty((4, 16, 16), np.float32)
        assert gemm.batched_matmul(A3, B3, c3, True)
        out["batched GEMM"] = c3
        return out  # read outside the scope: in it, DAZ reads a subnormal as 0 (tolist, ==) too

    {start}
    kept = results()
    with symdl.flush_subnormals():
        flushed = results()
    print(json.dumps({{"kept": {{k: v.tolist() for k, v in kept.items()}},
                      "flushed": {{k: v.tolist() for k, v in flushed.items()}}, "mode": subnormals.current()}}))
'''


@pytest.mark.parametrize("pool_starts", ["keeping", "flushing"])
def test_every_thread_computes_in_the_callers_mode(pool_starts):
    start = ("results()" if pool_starts == "keeping" else  # the pool's threads start in either mode
             "with symdl.flush_subnormals():\n        results()")
    got = child(KERNELS.format(start=start))
    rng = np.random.default_rng(0)
    X = ((rng.random((64, 32), dtype=np.float32) + 0.5) * np.float32(1e-20)).astype(np.float64)
    B = ((rng.random(32, dtype=np.float32) + 0.5) * np.float32(1e-20)).astype(np.float64)
    want = {"elementwise": X * B, "split GEMM": X @ X.T,
            "batched GEMM": X.reshape(4, 16, 32) @ X.reshape(4, 16, 32).transpose(0, 2, 1)}
    wrong = []
    for name, value in got["kept"].items():
        exact = want[name.split(" ")[0] if name.startswith("elementwise") else name]
        assert subnormal(exact.astype(np.float32)).all(), "the reference must be subnormal throughout"
        # kept: IEEE results, within a few subnormal steps (each step is 2**-149) of float64's
        if not np.all(np.abs(np.asarray(value, np.float64) - exact) <= 64 * 2.0 ** -149):
            wrong.append(f"{name}: subnormals lost outside the scope")
        if not np.all(np.asarray(got["flushed"][name]) == 0):
            wrong.append(f"{name}: a subnormal survived inside the scope")
    assert not wrong
    assert got["mode"] & 0x8040 == 0, "the caller's mode was not restored"


def test_nn_calls_flush_and_restore_the_callers_mode():
    model = nn.Sequential([nn.Input((4,)), nn.Dense(1, use_bias=False)])
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=1e-3), loss="mse")
    model.set_weights([np.full((4, 1), 1e-20, np.float32)])
    x = np.full((8, 4), 1e-20, np.float32)
    assert subnormal(x @ model.get_weights()[0]).all()  # NumPy outside: IEEE
    assert np.all(model.predict(x) == 0)
    model.train_on_batch(x, np.zeros((8, 1), np.float32))
    # Adam's moments of a zero gradient after subnormal ones decay to zero, not into the subnormals
    _, slots = model.optimizer.get_state()
    for name in slots:
        slots[name] = np.full_like(slots[name], 1e-39)
    model.optimizer.set_state(1, slots)
    model.set_weights([np.zeros((4, 1), np.float32)])  # zero output, zero error, zero gradient
    model.train_on_batch(x, np.zeros((8, 1), np.float32))
    _, slots = model.optimizer.get_state()
    assert all(not subnormal(v).any() for v in slots.values())
    assert subnormal(np.float32(1e-20) * np.float32(1e-20)), "symdl.nn left the caller's thread flushing"
    with symdl.flush_subnormals():
        assert np.float32(1e-20) * np.float32(1e-20) == 0  # NumPy's arithmetic in the scope, for the record
    assert subnormal(np.float32(1e-20) * np.float32(1e-20))


def _ieee() -> bool:
    """Whether the calling thread keeps subnormals (NumPy's arithmetic, read outside any scope)."""
    return bool(subnormal(np.float32(1e-20) * np.float32(1e-20)))


class _Seen(nn.Callback):
    """Records, at every batch of fit, whether NumPy's arithmetic in the callback flushes."""

    def __init__(self):
        super().__init__()
        self.kept = []

    def on_batch_end(self, batch, logs=None):
        self.kept.append(np.float32(1e-20) * np.float32(1e-20) != 0)


ENTRY_POINTS = {
    "train_on_batch": lambda m, x, y: m.train_on_batch(x, y),
    "fit": lambda m, x, y: m.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[m.seen]),
    "evaluate": lambda m, x, y: m.evaluate(x, y, batch_size=4, verbose=0),
    "predict": lambda m, x, y: m.predict(x, batch_size=4),
    "call": lambda m, x, y: m(x),
}


@pytest.mark.parametrize("bad", [False, True], ids=["returns", "raises"])
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_nn_entry_point_restores_the_callers_mode(entry, bad):
    """Each public call, whether it returns or refuses its input: the caller's thread keeps
    subnormals afterwards; fit's callbacks run inside the scope."""
    model = nn.Sequential([nn.Input((4,)), nn.Dense(2, activation="relu"), nn.Dense(1)])
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=1e-3), loss="mse")
    model.seen = _Seen()
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 4), dtype=np.float32), rng.random((8, 1), dtype=np.float32)
    if bad:
        x = x[:, :3]  # a wrong feature axis: every entry point refuses it
        with pytest.raises(ValueError):
            ENTRY_POINTS[entry](model, x, y)
    else:
        ENTRY_POINTS[entry](model, x, y)
    assert _ieee(), f"{entry} left the caller's thread flushing subnormals"
    if entry == "fit" and not bad:
        assert model.seen.kept == [False, False], "fit's callbacks ran outside the flushing scope"
