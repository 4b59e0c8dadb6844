"""The blocked step schedule of a recurrence (loops/blocked.py) by class: one or two sums over the
earlier state, batch sizes around the block (1, 3, 5, 32, 33), hidden sizes around the reduction
block, tanh/relu/identity, float32/float64; kernels against NumPy loops written here, gradients
against finite differences, and the schedule chosen (its micro-kernel in the generated source)."""
import numba
import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.autodiff.recurrence import adjoint
from symdl.backends.cpu.codegen import generate
from symdl.loops.blocked import BATCH_BLOCK, lower_blocked
from symdl.loops.lower import loop_order, lower

B, T, K, H = sp.symbols("B T K H", integer=True, positive=True)
b, t, k, j, l = sp.Idx("b", B), sp.Idx("t", T), sp.Idx("k", K), sp.Idx("j", H), sp.Idx("l", H)
x, W, R, Q, c, h, h0 = map(sp.IndexedBase, ["x", "W", "R", "Q", "c", "h", "h0"])
ACTS = {"identity": (lambda e: e, lambda a: a),
        "tanh": (sp.tanh, np.tanh),
        "relu": (lambda e: sp.Max(0, e), lambda a: np.maximum(a, 0))}


def _formula(act: str, two_sums: bool) -> symdl.Formula:
    """h[t] = act(W x[t] + R h[t-1] (+ Q (h[t-1] * h[t-1])) + c): one or two sums over h[t-1]."""
    pre = sp.Sum(W[k, j] * x[b, t, k], (k, 0, K - 1)) + c[j] + sp.Sum(R[l, j] * h[b, t - 1, l], (l, 0, H - 1))
    if two_sums:
        pre += sp.Sum(Q[l, j] * h[b, t - 1, l] ** 2, (l, 0, H - 1))
    return symdl.Formula(sp.Eq(h[b, t, j], ACTS[act][0](pre)), name=f"blocked_{act}_{int(two_sums)}",
                         initial={"h": h0})


def _numpy(act, two_sums, a):
    """The recurrence as plain loops over the batch and the steps."""
    f = ACTS[act][1]
    nb, nt, _ = a["x"].shape
    out = np.empty((nb, nt, a["R"].shape[0]))
    for i in range(nb):
        prev = a["h0"][i].astype(np.float64)
        for s in range(nt):
            pre = a["x"][i, s] @ a["W"] + a["c"] + prev @ a["R"]
            if two_sums:
                pre = pre + (prev * prev) @ a["Q"]
            out[i, s] = prev = f(pre)
    return out


def _inputs(batch, hidden, dtype, rng, two_sums):
    shapes = {"x": (batch, 4, 3), "W": (3, hidden), "R": (hidden, hidden), "c": (hidden,),
              "h0": (batch, hidden)}
    if two_sums:
        shapes["Q"] = (hidden, hidden)
    return {n: (rng.standard_normal(s) * 0.4).astype(dtype) for n, s in shapes.items()}


@pytest.mark.parametrize("two_sums", [False, True])
def test_the_blocked_schedule_is_chosen_for_the_step_and_its_adjoint(two_sums):
    f = _formula("tanh", two_sums)
    for g in (f, adjoint(f)):
        assert lower_blocked(g, loop_order(g)) is not None, g.name
        source = generate(lower(g, row_reductions=True), "float64", "test")
        assert f"{BATCH_BLOCK} * ib0" in source, source  # rows of a block share each weight load
        assert "il0" in source, source  # reduction steps blocked too
    assert "R_t" in generate(lower(adjoint(f), row_reductions=True), "float64", "test")  # transposed R


def test_other_backends_keep_their_loops():
    f = _formula("tanh", False)
    assert "ib0" not in str(lower(f, row_reductions=False))


@pytest.mark.parametrize("batch", [1, 3, 5, 32, 33])
@pytest.mark.parametrize("act, two_sums, hidden, dtype", [
    ("tanh", False, 6, "float64"), ("relu", True, 5, "float32"), ("identity", False, 9, "float32"),
    ("tanh", True, 8, "float32"), ("relu", False, 7, "float64"), ("identity", True, 4, "float64")])
def test_kernels_equal_numpy_loops(batch, act, two_sums, hidden, dtype):
    rng = np.random.default_rng(batch * 31 + hidden)
    f = _formula(act, two_sums)
    a = _inputs(batch, hidden, dtype, rng, two_sums)
    got = np.asarray(f.compile()(**a))
    tol = 1e-4 if dtype == "float32" else 1e-10
    np.testing.assert_allclose(got, _numpy(act, two_sums, {n: v.astype(np.float64) for n, v in a.items()}),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("batch, hidden, act, two_sums", [
    (5, 6, "tanh", False), (3, 5, "tanh", True), (33, 3, "identity", False), (1, 9, "relu", True)])
def test_gradients_equal_finite_differences(batch, hidden, act, two_sums):
    rng = np.random.default_rng(batch + 7 * hidden)
    f = _formula(act, two_sums)
    a = {n: v.astype(np.float64) for n, v in _inputs(batch, hidden, "float64", rng, two_sums).items()}
    if act == "relu":  # keep pre-activations away from the kink
        a["c"] = np.abs(a["c"]) + 0.5
    seed = rng.standard_normal((batch, 4, hidden))
    grads = f.compile().vjp(seed, **a)
    eps = 1e-6
    for name in ("R", "h0", "W", "c") + (("Q",) if two_sums else ()):
        flat = a[name].reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            up = float((_numpy(act, two_sums, a) * seed).sum())
            flat[i] = old - eps
            down = float((_numpy(act, two_sums, a) * seed).sum())
            flat[i] = old
            want = (up - down) / (2 * eps)
            got = np.asarray(grads[name]).reshape(-1)[i]
            assert abs(got - want) <= 1e-6 * max(1.0, abs(want)), (name, i, got, want)


def _function(source: str, start: str) -> str:
    """The text of the generated function whose definition contains `start`, up to the next one."""
    at = source.index(start)
    ends = [source.find(mark, at) for mark in ("\n@shared_function", "\ndef run(")]
    return source[at:min(e for e in ends if e >= 0)]


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_sums_guarded_alike_give_only_the_cases_a_step_reaches(act):
    """The adjoint's two sums over the later step are guarded alike (t <= T - 2): of the cases
    'both', 'the first', 'the second', 'neither' only the first and the last can run, and only they
    are generated (the two dead ones made the module 3x larger and its compile 10 s longer)."""
    g = adjoint(_formula(act, True))
    source = generate(lower(g, row_reductions=True), "float64", "test")
    serial = _function(source, "_loops_serial(")
    guards = [line.strip() for line in serial.splitlines() if line.strip().startswith("if ")]
    assert len(guards) == 1 and "T >= 2 + t" in guards[0], guards  # one guard per step: 'both', else 'neither'
    assert serial.count("else:") == 1, serial


def test_a_state_with_two_batch_indices_blocks_the_inner_one():
    """h[b, a, t, j]: the blocks run over a (the index just outside the row), b loops around."""
    A = sp.Symbol("A", integer=True, positive=True)
    a_ = sp.Idx("a", A)
    body = sp.tanh(x[b, a_, t, j] + sp.Sum(R[l, j] * h[b, a_, t - 1, l], (l, 0, H - 1)))
    f = symdl.Formula(sp.Eq(h[b, a_, t, j], body), name="blocked_two_batch", initial={"h": h0})
    assert lower_blocked(f, loop_order(f)) is not None
    rng = np.random.default_rng(3)
    args = {"x": rng.standard_normal((2, 5, 3, 7)), "R": rng.standard_normal((7, 7)) * 0.4,
            "h0": rng.standard_normal((2, 5, 7))}
    want, prev = np.empty((2, 5, 3, 7)), args["h0"]
    for s in range(3):
        want[:, :, s] = prev = np.tanh(args["x"][:, :, s] + prev @ args["R"])
    np.testing.assert_allclose(np.asarray(f.compile()(**args)), want, rtol=1e-12, atol=1e-12)


def test_a_guard_on_the_step_is_decided_once_per_step():
    """h[t] = tanh(x[t] + (R h[t-1] where t >= 1, else 0)): each case its own code, no guard per element."""
    body = sp.tanh(x[b, t, j] + sp.Piecewise((sp.Sum(R[l, j] * h[b, t - 1, l], (l, 0, H - 1)), t >= 1), (0, True)))
    f = symdl.Formula(sp.Eq(h[b, t, j], body), name="blocked_guarded")
    source = generate(lower(f, row_reductions=True), "float64", "test")
    loops = _function(source, "def loops_serial")
    assert "ib0" in loops and "        if t >= 1:" in loops, loops  # an if statement per step
    assert not any(" if " in line for line in loops.splitlines() if " = " in line), loops  # no guard per element
    rng = np.random.default_rng(4)
    args = {"x": rng.standard_normal((5, 4, 6)), "R": rng.standard_normal((6, 6)) * 0.4}
    want, prev = np.empty((5, 4, 6)), np.zeros((5, 6))
    for s in range(4):
        want[:, s] = prev = np.tanh(args["x"][:, s] + prev @ args["R"])
    np.testing.assert_allclose(np.asarray(f.compile()(**args)), want, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="the parallel flavour needs two threads")
def test_the_parallel_flavour_equals_numpy_loops(monkeypatch):
    """The kernel as it runs when a call takes the parallel flavour. A step's block loops are marked
    parallel but sit inside the step loop, which runs serially, so the nest has no parallel twin
    (backends/cpu/codegen.py) and its serial function runs."""
    monkeypatch.setenv("SYMDL_PARALLEL_WORK", "1")  # every nest takes its parallel flavour
    before = numba.get_num_threads()
    symdl.set_num_threads(2)
    try:
        f = _formula("tanh", True)
        a = _inputs(9, 6, "float64", np.random.default_rng(5), True)
        np.testing.assert_allclose(np.asarray(f.compile()(**a)), _numpy("tanh", True, a), rtol=1e-12, atol=1e-12)
    finally:
        symdl.set_num_threads(before)
