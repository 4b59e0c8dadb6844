"""The cost contract: a derived gradient costs at most a constant times its forward pass.

Counted work is the trip count of the lowered loops (loops.trip_count: loop iterations, m·n·k per
matrix product). For every formula and every input x, the gradient's work may exceed four times the
forward's (Griewank's bound for reverse mode) per read of x in the formula (each read contributes
its own term, and trip counts count iterations, not operations) only by the size of grad_x itself
(a sparse cross-entropy's gradient is zero almost everywhere, yet every element is written). And
the ratio may not grow with the sizes: checked at two, 2x apart, so an O(N²) gradient of an O(N)
forward cannot hide behind small numbers. For the catalog and for the random formulas of
tests/test_random_formulas.py (trip counts only: nothing compiles here).
"""
import pytest
import sympy as sp
from hypothesis import example, given, settings
from test_random_formulas import build_contraction, build_window, contraction_specs, window_specs

import symdl
from symdl import formulas
from symdl.loops import lower, trip_count
from symdl.reference.inputs import default_sizes, formulas_of

BOUND = 4


def ratios(f, dims: dict, cpu: bool = False) -> dict:
    """{input: (gradient work - its size) / (forward work x reads of the input)} at `dims`; `cpu`:
    as the cpu lowers (GEMMs of any rank, gathers, branches taken at `dims`)."""
    forward = trip_count(lower(f, row_reductions=cpu), dims)
    out = {}
    for name, g in f.vjp().items():
        size = 1
        for d in g.output.shape:
            d = sp.sympify(d)
            size *= int(d.xreplace({s: sp.Integer(dims[s.name]) for s in d.free_symbols}))
        reads = sum(1 for r in f.body.atoms(sp.Indexed) if str(r.base.label) == name) or 1
        out[name] = (trip_count(lower(g, row_reductions=cpu), dims) - size) / (max(forward, 1) * reads)
    return out


def check(target, sizes: dict, cpu: bool = False) -> None:
    states = {o for s in getattr(target, "systems", ()) for o in s.outputs}  # a system's cost: below
    for f in formulas_of(target):
        if f.recurrence is not None or f.output.name in states:
            continue
        small, large = (ratios(f, {str(k): s * v for k, v in sizes.items()}, cpu) for s in (3, 6))
        for name in small:
            assert large[name] <= BOUND, f"{f.name}: grad_{name} costs {large[name]:.2f} x the forward per read"
            assert large[name] <= 1.25 * max(small[name], 1), \
                f"{f.name}: grad_{name}'s cost grows faster than the forward's ({small[name]:.2f} -> {large[name]:.2f})"


@pytest.mark.parametrize("name", formulas.names())
def test_catalog_gradients_keep_the_forward_cost(name):
    target = formulas.get(name)
    check(target, default_sizes(target))


@pytest.mark.parametrize("name", formulas.names())
def test_catalog_gradients_keep_the_forward_cost_as_the_cpu_lowers(name):
    target = formulas.get(name)
    check(target, default_sizes(target), cpu=True)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(contraction_specs())
def test_random_contractions_keep_the_forward_cost(spec):
    f = build_contraction(spec)
    check(f, default_sizes(f))


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(window_specs())
@example({"stride": 1, "reduce": True, "batch": True, "channel": False, "second": "w", "transpose": False,
          "combine": "mul", "wrap": ["leaky", "leaky"], "body_wrap": "id", "sum_wrap": "exp"})  # 3 region passes
def test_random_windows_keep_the_forward_cost(spec):
    f = build_window(spec)
    check(f, default_sizes(f))


N, M = sp.symbols("N M", integer=True, positive=True)
j, k = sp.Idx("j", N), sp.Idx("k", N)
i = sp.Idx("i", M)
x, A, b, w, X = (sp.IndexedBase(n) for n in ("x", "A", "b", "w", "X"))
L = sp.Symbol("L")
REPRODUCERS = {  # one-formula objectives whose gradients used to recompute a nested reduction
    "logsumexp": sp.log(sp.Sum(sp.exp(x[j]), (j, 0, N - 1))),
    "max_shifted_sum": sp.Sum(sp.exp(x[j] - symdl.ReduceMax(x[k], (k, 0, N - 1))), (j, 0, N - 1)),
    "least_squares": sp.Rational(1, 2) * sp.Sum((sp.Sum(A[i, j] * x[j], (j, 0, N - 1)) - b[i]) ** 2,
                                                (i, 0, M - 1)),
    "logistic_loss": sp.Sum(symdl.softplus(-b[i] * sp.Sum(w[j] * X[i, j], (j, 0, N - 1))), (i, 0, M - 1)),
}


@pytest.mark.parametrize("name", REPRODUCERS)
def test_nested_reduction_reproducers_are_linear(name):
    f = symdl.Formula(sp.Eq(L, REPRODUCERS[name]), name=f"cost_{name}")
    check(f, {"N": 40, "M": 30})
    big = {"N": 400, "M": 300}
    work = {n: trip_count(lower(g), big) for n, g in f.vjp().items()}
    forward = trip_count(lower(f), big)
    assert max(work.values()) <= BOUND * forward + 400 * 300, (work, forward)


def test_symdl_show_prints_each_gradients_cost_ratio(capsys):
    from symdl.cli import main

    assert main(["show", "logistic_regression"]) == 0
    section = capsys.readouterr().out.split("=== cost:")[1].split("\n=== ")[0]
    f = formulas.get("logistic_regression")
    dims = {str(k): 8 * v for k, v in default_sizes(f).items()}
    forward = trip_count(lower(f), dims)
    for name, g in f.vjp().items():
        work = trip_count(lower(g), dims)
        assert f"grad_{name} {work} ({work / forward:.2f}x)" in section
        assert work <= BOUND * forward  # the weight gradient no longer recomputes the pre-activation


def test_program_vjp_drops_paths_no_wanted_input_reaches():
    """A k-means-style objective: L = Σ w[n,k] d[n,k] with d[n,k] = (x[n] - c[k])². The gradient
    for w alone needs no grad_d (d does not depend on w); the gradient for c needs it."""
    import numpy as np

    n, kk = sp.Idx("n", N), sp.Idx("k", M)
    c, d = sp.IndexedBase("c"), sp.IndexedBase("d")
    dist = symdl.Formula(sp.Eq(d[n, kk], (x[n] - c[kk]) ** 2), name="cost_kmeans_dist")
    loss = symdl.Formula(sp.Eq(L, sp.Sum(w[n, kk] * d[n, kk], (n, 0, N - 1), (kk, 0, M - 1))), name="cost_kmeans_loss")
    prog = symdl.Program([dist, loss], name="cost_kmeans")
    for wanted, dead in ((["w"], True), (["c"], False)):
        grad_program = prog.vjp(wanted)
        assert any("vjp.L.d" in f.name for f in grad_program.formulas) is not dead, [f.name for f in grad_program.formulas]
    rng = np.random.default_rng(0)
    xv, cv, wv = rng.random(5), rng.random(3), rng.random((5, 3))
    kern = prog.compile()
    np.testing.assert_allclose(kern.vjp(1.0, wrt=["w"], x=xv, c=cv, w=wv)["w"], (xv[:, None] - cv[None, :]) ** 2)
    np.testing.assert_allclose(kern.vjp(1.0, wrt=["c"], x=xv, c=cv, w=wv)["c"],
                               (-2 * wv * (xv[:, None] - cv[None, :])).sum(axis=0))


def _units_work(program, start: int, dims: dict) -> int:
    """Trip counts of a program's kernels from formula `start` on, each system as its one kernel."""
    from symdl.loops.lower import lower_system
    systems = {s.outputs[0]: s for s in program.systems}
    done, work = set(), 0
    for f in program.formulas[start:]:
        if f.output.name in systems:
            s = systems[f.output.name]
            work += trip_count(lower_system([program.producer(o) for o in s.outputs], "s", s.step, s.direction), dims)
            done |= set(s.outputs)
        elif f.output.name not in done:
            work += trip_count(lower(f), dims)
    return work


@pytest.mark.parametrize("name", [n for n in formulas.names() if getattr(formulas.get(n), "systems", ())])
def test_systems_of_recurrences_gradients_keep_the_forward_cost(name):
    """A system's whole gradient (the adjoint system, then every input's gradient) against its
    forward kernel: at most BOUND times, and the ratio does not grow with the sizes (the gates are
    states the gradient reads, not sums it recomputes)."""
    prog = formulas.get(name)
    grad = prog.vjp()
    ratio = {}
    for s in (4, 8):
        dims = {"B": s, "T": 5 * s, "K": 2 * s, "H": 4 * s}
        ratio[s] = _units_work(grad, len(prog.formulas), dims) / _units_work(prog, 0, dims)
    assert ratio[8] <= BOUND, ratio
    assert ratio[8] <= 1.25 * ratio[4], ratio
