"""Issue 15 (and two points of issue 8): what mutation testing found symdl.verify could not see.

Each test drives one blind spot against an independent reference: NumPy written here, exact
values worked out by hand, or the wrong gradient a test injects."""
from __future__ import annotations

import importlib
import time

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.declare.reductions import ArgMax
from symdl.passes.contraction import extract_matmuls
from symdl.reference import evaluate

symbolic_module = importlib.import_module("symdl.verify.symbolic")

B, N, M = sp.symbols("B N M", integer=True, positive=True)


def tanh_layer(name="tanh_layer"):
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, y = sp.IndexedBase("x"), sp.IndexedBase("W"), sp.IndexedBase("y")
    return symdl.Formula(sp.Eq(y[i, j], sp.tanh(sp.Sum(x[i, k] * W[k, j], k))), name=name,
                         sizes={B: 1, N: 2, M: 2})


def wrong_tanh(monkeypatch):
    """The derived gradient with tanh(z) replaced by tanh(2 z) (1 - tanh(2z)^2 instead of 1 - tanh(z)^2)."""
    real = symbolic_module.derived_gradients

    def mutant(*args, **kwargs):
        return {name: {idx: e.replace(sp.tanh, lambda z: sp.tanh(2 * z)) for idx, e in grads.items()}
                for name, grads in real(*args, **kwargs).items()}

    monkeypatch.setattr(symbolic_module, "derived_gradients", mutant)


# -- NaN never verifies ---------------------------------------------------------------------------

def test_numeric_fails_on_a_nan_gradient():
    # log of a negative argument everywhere: forward and gradient are NaN; `err > rtol` was False for NaN
    i = sp.Idx("i", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    f = symdl.Formula(sp.Eq(y[i], sp.log(x[i])), name="log_of_negatives", domains={"x": (-1.0, -0.5)})
    with pytest.raises(AssertionError, match="log_of_negatives"):
        symdl.verify.numeric(f, sizes={N: 3})
    with pytest.raises(AssertionError, match="differs from the NumPy reference by nan"):
        symdl.verify.backends(f, sizes={N: 3}, dtypes=(np.float64,))


def test_backends_fails_on_a_nan_in_the_kernel_only(monkeypatch):
    i = sp.Idx("i", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    f = symdl.Formula(sp.Eq(y[i], 2 * x[i]), name="twice_for_nan")
    kernel_class = type(f.compile())
    real = kernel_class.__call__

    def nan_at_0(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        out[0] = np.nan
        return out

    monkeypatch.setattr(kernel_class, "__call__", nan_at_0)
    with pytest.raises(AssertionError, match="by nan"):
        symdl.verify.backends(f, sizes={N: 3}, dtypes=(np.float64,))


# -- a wrong gradient fails fast, with a counterexample --------------------------------------------

def test_symbolic_reports_a_wrong_tanh_gradient_fast_with_the_point(monkeypatch):
    f = tanh_layer()
    assert symdl.verify.symbolic(f) == 6  # the true gradient: 2 elements of x, 4 of W
    wrong_tanh(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(AssertionError, match=r"differs from sympy\.diff at the point \{") as err:
        symdl.verify.symbolic(f)
    assert time.perf_counter() - start < 5.0  # a few random points, no simplify: well under a second
    assert "sympy.diff = " in str(err.value) and "derived    = " in str(err.value)


def test_symdl_verify_cli_fails_a_wrong_tanh_gradient_in_under_5_s(monkeypatch, capsys):
    from symdl.cli import main
    wrong_tanh(monkeypatch)
    start = time.perf_counter()
    assert main(["verify", "tanh"]) == 1
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "symbolic: AssertionError" in out and "at the point {" in out
    assert elapsed < 5.0, f"symdl verify took {elapsed:.1f} s on a wrong gradient"


def test_symbolic_is_undecided_rather_than_hanging():
    f = tanh_layer("tanh_undecided")
    with pytest.warns(UserWarning, match="6 of 6 gradient elements undecided"):
        result = symdl.verify.symbolic(f, time_limit=0)  # no time for any exact proof
    assert int(result) == 6 and result.proven == 0 and len(result.undecided) == 6
    with pytest.raises(symdl.verify.Undecided, match="undecided"):
        symdl.verify.symbolic(f, time_limit=0, strict=True)
    full = symdl.verify.symbolic(f)
    assert full == 6 and full.undecided == ()


def test_symbolic_compares_float_constants_exactly():
    # layer-norm style: eps = 1e-5 under a square root (issue 8)
    b, i, k, n = sp.Idx("b", B), sp.Idx("i", N), sp.Idx("k", N), sp.Idx("n", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    var = sp.Sum((x[b, n] - sp.Sum(x[b, k], k) / N) ** 2, n) / N
    f = symdl.Formula(sp.Eq(y[b, i], (x[b, i] - sp.Sum(x[b, k], k) / N) / sp.sqrt(var + 1e-5)),
                      name="layer_norm_eps")
    result = symdl.verify.symbolic(f, sizes={B: 1, N: 3})  # the Float version failed here after 20 s
    assert result == 3 and result.undecided == ()


# -- reads below 0 -----------------------------------------------------------------------------------

def pool1d_gradient(lo_clamp: bool = True, hi_clamp: bool = True):
    """The gradient of 1-D max pooling, window 3, stride 1 (y[i] = max(x[i], x[i+1], x[i+2])),
    written by hand: grad_x[p] = Σ_{i in window range} grad_y[i] [i + argmax_u x[i+u] = p]."""
    p, i, u = (sp.Symbol(s, integer=True) for s in "piu")
    x, gy = sp.IndexedBase("x", real=True), sp.IndexedBase("grad_y", real=True)
    lo = sp.Max(0, p - 2) if lo_clamp else p - 2
    hi = sp.Min(N - 3, p) if hi_clamp else p
    body = sp.Sum(sp.Piecewise((gy[i], sp.Eq(i + ArgMax(x[i + u], [(u, 0, 2)]), p)), (0, True)), (i, lo, hi))
    return symdl.Formula.from_parts(f"pool1d_grad_{lo_clamp}_{hi_clamp}", "grad_x", (p,), {p: (0, N - 1)},
                                    body, shapes={"x": (N,), "grad_y": (N - 2,)})


def numpy_pool1d_gradient(x, g):
    out = np.zeros_like(x)
    for i in range(len(x) - 2):
        out[i + int(np.argmax(x[i:i + 3]))] += g[i]
    return out


def test_a_valid_nested_range_is_not_refused():
    rng = np.random.default_rng(0)
    kern = pool1d_gradient().compile()
    for n in (3, 4, 7):
        x, g = rng.standard_normal(n), rng.standard_normal(n - 2)
        np.testing.assert_allclose(kern(x=x, grad_y=g), numpy_pool1d_gradient(x, g), atol=1e-12)


@pytest.mark.parametrize("lo_clamp,hi_clamp,where", [(False, True, "below 0"), (True, False, "past the end")])
def test_a_read_outside_the_tensor_through_a_nested_range_raises(lo_clamp, hi_clamp, where):
    # Max(0, p - 2) replaced by p - 2 reads grad_y[-1] (numba would wrap to the end); Min(N - 3, p)
    # replaced by p reads grad_y[N - 2]
    kern = pool1d_gradient(lo_clamp, hi_clamp).compile()
    x = np.array([0.0, 5.0, 1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=f"tensor 'grad_y' is read at axis 0 .* allow reads {where}"):
        kern(x=x, grad_y=np.ones(4))


def test_the_catalog_max_pooling_gradients_bind_at_every_size():
    from symdl.formulas.pooling import pool2d
    from symdl.binding import Binder
    g = pool2d("max", (3, 3), (2, 2), name="nested_pool").vjp()["x"]  # overlapping windows
    binder = Binder(g)
    assert any(r.tensor == "x" for r in binder.nested)  # its nested reads are checked, and pass
    for n in range(3, 14):
        out = (n - 3) // 2 + 1
        assert binder.bind({"x": (1, n, n, 1), "grad_y": (1, out, out, 1)}, None, None)["H"] == n


# -- contraction detection matches the whole range ---------------------------------------------------

@pytest.mark.parametrize("hi,n", [(N - 2, 4), (N - 1, 5)])
def test_a_sum_over_part_of_an_axis_is_not_a_matrix_product(hi, n):
    i, j, k = (sp.Symbol(s, integer=True) for s in "ijk")
    x, W = sp.IndexedBase("x", real=True), sp.IndexedBase("W", real=True)
    f = symdl.Formula.from_parts(f"partial_matmul_{n}", "y", (i, j), {i: (0, B - 1), j: (0, M - 1)},
                                 sp.Sum(x[i, k] * W[k, j], (k, 0, hi)), shapes={"x": (B, N), "W": (N, M)})
    assert len(extract_matmuls(f)[1]) == (1 if n == 5 else 0)
    rng = np.random.default_rng(1)
    X, Wv = rng.standard_normal((4, 5)), rng.standard_normal((5, 3))
    want = X[:, :n] @ Wv[:n]
    np.testing.assert_allclose(evaluate(f, {"x": X, "W": Wv}), want, atol=1e-12)
    np.testing.assert_allclose(f.compile()(x=X, W=Wv), want, atol=1e-12)


# -- verify.all ---------------------------------------------------------------------------------------

def test_verify_all_runs_the_three_checks_and_names_the_failing_one(monkeypatch):
    f = tanh_layer("tanh_all")
    summary = symdl.verify.all(f)
    assert int(summary.symbolic) == 6 and summary.numeric < 1e-6 and summary.backends < 1e-6
    assert set(summary.seconds) == {"symbolic", "numeric", "backends"}
    wrong_tanh(monkeypatch)
    with pytest.raises(symdl.verify.VerificationFailed, match="the symbolic check failed") as err:
        symdl.verify.all(f)
    assert err.value.check == "symbolic" and err.value.summary.numeric is None


# -- ties: the conventions the README promises, with exact ties -----------------------------------

def tie_cases():
    """(formula, inputs, upstream gradient, {input: expected gradient}) with exact ties, expected
    values worked out by hand from the README's conventions."""
    i, b = sp.Idx("i", N), sp.Idx("b", B)
    m = sp.Symbol("m", integer=True)
    x, a, c, y = (sp.IndexedBase(s) for s in ("x", "a", "c", "y"))
    xs = np.array([-1.0, 0.0, 2.0, 0.0])
    g = np.array([1.0, 2.0, 3.0, 4.0])
    from symdl.formulas.pooling import pool2d
    window = np.full((1, 2, 2, 1), 0.5)  # one 2x2 window, all four cells tie
    yield (symdl.Formula(sp.Eq(y[i], symdl.relu(x[i])), name="tie_relu"), {"x": xs}, g,
           {"x": [0.0, 0.0, 3.0, 0.0]})                                   # relu'(0) = 0
    yield (symdl.Formula(sp.Eq(y[i], sp.Abs(x[i])), name="tie_abs"), {"x": xs}, g,
           {"x": [-1.0, 0.0, 3.0, 0.0]})                                  # |x|'(0) = 0
    yield (symdl.Formula(sp.Eq(y[i], sp.Max(a[i], c[i])), name="tie_max2"),
           {"a": np.array([1.0, 0.0, -2.0, 5.0]), "c": np.array([1.0, 0.0, -3.0, 6.0])}, g,
           {"a": [1.0, 2.0, 3.0, 0.0], "c": [0.0, 0.0, 0.0, 4.0]})       # ties to the first argument
    yield (symdl.Formula(sp.Eq(y[b], symdl.Max(x[b, m], (m, 0, N - 1))), name="tie_row_max"),
           {"x": np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])}, np.array([5.0, 7.0]),
           {"x": [[0.0, 5.0, 0.0, 0.0], [7.0, 0.0, 0.0, 0.0]]})           # the first maximiser
    yield (pool2d("max", name="tie_max_pool"), {"x": window}, np.full((1, 1, 1, 1), 3.0),
           {"x": [[[[3.0], [0.0]], [[0.0], [0.0]]]]})                      # row-major first


@pytest.mark.parametrize("case", list(tie_cases()), ids=lambda c: c[0].name)
def test_ties_follow_the_conventions_in_the_reference_and_the_cpu_kernel(case):
    f, inputs, g, want = case
    grads = f.vjp()
    kern = f.compile()
    got_cpu = kern.vjp(g, **inputs)
    for name, expected in want.items():
        ref = evaluate(grads[name], {**inputs, f"grad_{f.output.name}": g})
        np.testing.assert_array_equal(ref, expected, err_msg=f"reference, {name}")
        np.testing.assert_array_equal(got_cpu[name], expected, err_msg=f"cpu kernel, {name}")


def test_backends_draws_ties_where_a_formula_has_kinks():
    from symdl.reference.inputs import has_kinks, random_inputs
    f = next(c[0] for c in tie_cases() if c[0].name == "tie_relu")
    assert has_kinks(f) and not has_kinks(tanh_layer("no_kinks"))
    x = random_inputs(f, {"N": 400}, np.random.default_rng(0), ties=True)["x"]
    assert np.sum(x == 0.0) > 50 and len(np.unique(x)) < 300


def test_symbolic_probe_evaluates_arg_max_conditions(monkeypatch):
    # the random-point probe walks Piecewise/ITE conditions of arg-max expansions exactly
    from symdl.verify.symbolic import mp_value
    a, c = sp.symbols("a c", real=True)
    ite = sp.ITE(sp.Ge(a, c), a, c)  # SymPy builds these from arg-max comparisons
    env = {a: sp.Rational(1, 3), c: sp.Rational(1, 2)}
    assert mp_value(ite, {k: float(v) for k, v in env.items()}, {}) == 0.5
    u = sp.Symbol("u", integer=True)
    i = sp.Idx("i", N - 2)
    x, y = sp.IndexedBase("x", shape=(N,)), sp.IndexedBase("y")
    f = symdl.Formula(sp.Eq(y[i], symdl.Max(x[i + u], (u, 0, 2))), name="pool1d_symbolic", sizes={N: 5})
    assert symdl.verify.symbolic(f) == 5
    real = symbolic_module.derived_gradients
    g0 = sp.Symbol("grad_y[0]", real=True)
    monkeypatch.setattr(symbolic_module, "derived_gradients", lambda *a, **k: {
        n: {ix: e.subs(g0, 2 * g0) for ix, e in g.items()} for n, g in real(*a, **k).items()})
    with pytest.raises(AssertionError, match="at the point"):
        symdl.verify.symbolic(f)


def test_the_self_check_fails_a_driver_reading_an_unwritten_temporary(monkeypatch, tmp_path):
    """A driver that reads a temporary before writing it (a gather dropped: lower.py once did so
    for a GEMM into a permuted output) passed the self-check at its small sizes, where the
    temporary was carved from memory the reference had just freed. The check now runs with the
    temporaries NaN-filled (backends/cpu/buffers.py), so the kernel is refused before its use."""
    from symdl.errors import CompileError
    lowering = importlib.import_module("symdl.loops.lower")

    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path))
    library_steps = lowering._library_steps

    def without_gathers(contractions, writes):
        temps, steps = library_steps(contractions, writes)
        return temps, [s for s in steps if not getattr(s, "name", "").startswith("gather_")]
    monkeypatch.setattr(lowering, "_library_steps", without_gathers)
    Bn, Nn, On = sp.symbols("B N O", integer=True, positive=True)
    b, i, o, m = sp.Idx("b", Bn), sp.Idx("i", Nn - 2), sp.Idx("o", On), sp.Idx("m", 3)
    x, w, y = sp.IndexedBase("x", shape=(Bn, Nn)), sp.IndexedBase("w"), sp.IndexedBase("y")
    f = symdl.Formula(sp.Eq(y[b, i, o], sp.Sum(x[b, i + m] * w[m, o], m)), name="unfilled_gather")
    rng = np.random.default_rng(0)
    with pytest.raises(CompileError, match="unfilled_gather"):
        f.compile()(x=rng.standard_normal((5, 30)), w=rng.standard_normal((3, 20)))
