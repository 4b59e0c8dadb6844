"""First-contact courtesies: notebook display of formulas and gradients, per-model layer names,
kernel calls that say how to pass tensors and take a number as a scalar loss's upstream gradient,
and verification results that read as reports."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import Formula, Program, nn

B, N, M = sp.symbols("B N M", integer=True, positive=True)
SIZES = {B: 2, N: 3, M: 2}


def dense_formula() -> Formula:
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, b, y = (sp.IndexedBase(n) for n in "x W b y".split())
    return Formula(sp.Eq(y[i, j], sp.Sum(x[i, k] * W[k, j], k) + b[j]), name="dense")


def mse_formula() -> Formula:
    """L = Σ_ij (x[i, j] - t[i, j])² / B: a scalar loss."""
    i, j = sp.Idx("i", B), sp.Idx("j", N)
    x, t = sp.IndexedBase("x"), sp.IndexedBase("t")
    return Formula(sp.Eq(sp.Symbol("L"), sp.Sum((x[i, j] - t[i, j]) ** 2, i, j) / B), name="mse")


# -- notebooks ----------------------------------------------------------------------------------

def test_formula_displays_as_display_math():
    f = dense_formula()
    assert f._repr_latex_() == "$$" + sp.latex(f.eq) + "$$"
    assert f._repr_latex_() == r"$${y}_{i,j} = {b}_{j} + \sum_{k=0}^{N - 1} {W}_{k,j} {x}_{i,k}$$"


def test_gradients_are_a_dict_that_displays_one_line_per_input():
    f = dense_formula()
    grads = f.vjp()
    assert type(grads).__name__ == "Gradients" and isinstance(grads, dict)
    plain = dict(grads)
    assert grads == plain and list(grads) == ["b", "W", "x"]
    assert all(isinstance(g, Formula) for g in grads.values())
    text = grads._repr_latex_()
    rows = [r"\displaystyle " + sp.latex(grads[n].eq) for n in ("b", "W", "x")]
    assert text == "$$\\begin{array}{l}\n" + " \\\\\n".join(rows) + "\n\\end{array}$$"
    assert r"{grad_{b}}_{j} = \sum_{i=0}^{B - 1} {grad_{y}}_{i,j}" in text
    assert f.vjp(["W"])._repr_latex_() == "$$" + sp.latex(grads["W"].eq) + "$$"


def test_program_displays_each_formula_on_its_own_line():
    i, j = sp.Idx("i", B), sp.Idx("j", N)
    z, e, s, p = (sp.IndexedBase(n) for n in "z e s p".split())
    exp_f = Formula(sp.Eq(e[i, j], sp.exp(z[i, j])), name="exp")
    sum_f = Formula(sp.Eq(s[i], sp.Sum(e[i, j], j)), name="rowsum")
    div_f = Formula(sp.Eq(p[i, j], e[i, j] / s[i]), name="div")
    prog = Program([exp_f, sum_f, div_f], name="softmax")
    rows = [r"\displaystyle " + sp.latex(f.eq) for f in (exp_f, sum_f, div_f)]
    assert prog._repr_latex_() == "$$\\begin{array}{l}\n" + " \\\\\n".join(rows) + "\n\\end{array}$$"


# -- layer names ----------------------------------------------------------------------------------

def small_model(**kwargs):
    return nn.Sequential([nn.Input((4,)), nn.Dense(3), nn.Dense(2)], **kwargs)


def test_layer_names_count_per_model_keras_style():
    first, second = small_model(), small_model()
    assert [layer.name for layer in first.layers] == ["dense", "dense_1"]
    assert [layer.name for layer in second.layers] == ["dense", "dense_1"]
    second.build()
    assert [v.name for v in second.weights] == ["dense/kernel", "dense/bias",
                                                "dense_1/kernel", "dense_1/bias"]
    conv = nn.Sequential([nn.Input((6, 6, 1)), nn.Conv2D(2, 3), nn.MaxPooling2D(2), nn.Flatten(),
                          nn.Dense(2), nn.Flatten(), nn.Dropout(0.5)])
    assert [layer.name for layer in conv.layers] == ["conv2d", "max_pooling2d", "flatten", "dense",
                                                     "flatten_1", "dropout"]
    built = nn.Dense(2)
    built.build((3,), np.random.default_rng(0))                # weights made before it joins a model
    assert [v.name for v in built.weights] == ["dense/kernel", "dense/bias"]
    nn.Sequential([nn.Input((3,)), nn.Dense(3), built])
    assert built.name == "dense_1" and [v.name for v in built.weights] == ["dense_1/kernel", "dense_1/bias"]


def test_given_layer_names_are_kept_and_must_be_unique():
    model = nn.Sequential([nn.Input((4,)), nn.Dense(3, name="dense"), nn.Dense(3), nn.Dense(2, name="out")])
    assert [layer.name for layer in model.layers] == ["dense", "dense_1", "out"]
    again = nn.Sequential.from_config(model.get_config())
    assert [layer.name for layer in again.layers] == ["dense", "dense_1", "out"]
    with pytest.raises(ValueError, match=r"model 'sequential' already has a layer named 'out'"):
        nn.Sequential([nn.Input((4,)), nn.Dense(3, name="out"), nn.Dense(2, name="out")])
    with pytest.raises(ValueError, match=r"already has a layer named 'dense'"):
        nn.Sequential([nn.Input((4,)), nn.Dense(3), nn.Dense(2, name="dense")])


def test_formula_layer_is_named_after_its_formula():
    i, j = sp.Idx("i", B), sp.Idx("j", N)
    x, beta, y = sp.IndexedBase("x"), sp.IndexedBase("beta"), sp.IndexedBase("y")
    swish = Formula(sp.Eq(y[i, j], x[i, j] / (1 + sp.exp(-beta[j] * x[i, j]))), name="swish")
    layer = nn.FormulaLayer(swish, params={"beta": (4,)})
    assert layer.name == "swish"
    model = nn.Sequential([nn.Input((4,)), layer, nn.FormulaLayer(swish, params={"beta": (4,)}),
                           nn.FormulaLayer(swish, params={"beta": (4,)}, name="gate")])
    assert [layer.name for layer in model.layers] == ["swish", "swish_1", "gate"]


# -- kernel calls -------------------------------------------------------------------------------------

def test_positional_tensors_are_refused_with_the_names_to_use():
    kern = dense_formula().compile()
    X, W, b = np.ones((2, 3)), np.ones((3, 2)), np.ones(2)
    with pytest.raises(TypeError) as err:
        kern(X, W, b)
    assert str(err.value) == ("formula 'dense': pass tensors by name: kern(b=..., W=..., x=...) "
                              "(got 3 positional arguments)")
    with pytest.raises(TypeError) as err:
        kern.vjp(np.ones((2, 2)), X, W=W, b=b)
    assert str(err.value) == ("formula 'dense': pass tensors by name: kern.vjp(grad, b=..., W=..., x=...) "
                              "(got 1 positional argument after grad)")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_scalar_losss_upstream_gradient_may_be_a_number(dtype):
    kern = mse_formula().compile()
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 3)).astype(dtype), rng.standard_normal((4, 3)).astype(dtype)
    want = {"x": 2 * (x - t) / 4, "t": -2 * (x - t) / 4}               # NumPy, by hand
    reference = kern.vjp(np.ones((), dtype=dtype), x=x, t=t)
    for seed in (1.0, 1, np.float64(1.0), np.ones(()), np.float32(1.0), np.array(1.0, dtype=np.float32)):
        got = kern.vjp(seed, x=x, t=t)
        assert got.keys() == {"x", "t"}
        for n in ("x", "t"):
            assert got[n].dtype == dtype
            np.testing.assert_array_equal(got[n], reference[n])
            np.testing.assert_allclose(got[n], want[n], rtol=1e-6 if dtype == np.float32 else 1e-12)
    half = kern.vjp(0.5, x=x, t=t)
    np.testing.assert_allclose(half["x"], want["x"] / 2, rtol=1e-6 if dtype == np.float32 else 1e-12)
    with pytest.raises(ValueError, match="upstream gradient must be"):
        kern.vjp(True, x=x, t=t)


def test_a_non_scalar_output_still_wants_an_array_of_its_shape():
    kern = dense_formula().compile()
    X, W, b = np.ones((2, 3)), np.ones((3, 2)), np.ones(2)
    with pytest.raises(ValueError, match=r"upstream gradient must be a float64 array of shape \(2, 2\)"):
        kern.vjp(1.0, x=X, W=W, b=b)


CUDA_SCRIPT = textwrap.dedent('''
    import numpy as np, sympy as sp, symdl
    B, N = sp.symbols("B N", integer=True, positive=True)
    i, j = sp.Idx("i", B), sp.Idx("j", N)
    x, t = sp.IndexedBase("x"), sp.IndexedBase("t")
    mse = symdl.Formula(sp.Eq(sp.Symbol("L"), sp.Sum((x[i, j] - t[i, j]) ** 2, i, j) / B), name="mse")
    kern = mse.compile(backend="cuda")
    rng = np.random.default_rng(0)
    xv, tv = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    for call in (lambda: kern(xv, tv), lambda: kern.vjp(1.0, xv, t=tv)):
        try:
            call()
        except TypeError as err:
            print(err)
    reference = kern.vjp(np.ones((), np.float32), x=xv, t=tv)
    np.testing.assert_allclose(reference["x"], 2 * (xv - tv) / 4, rtol=1e-6)
    np.testing.assert_allclose(reference["t"], -2 * (xv - tv) / 4, rtol=1e-6)
    for seed in (1.0, 1, np.float64(1.0), np.ones(())):
        got = kern.vjp(seed, x=xv, t=tv)
        for n in "xt":
            assert got[n].dtype == np.float32
            np.testing.assert_array_equal(got[n], reference[n])
    print("same gradients")
''')


def test_cuda_kernel_calls_have_the_same_courtesies(tmp_path):
    pytest.importorskip("numba_cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", SYMDL_CACHE_DIR=str(tmp_path / "cuda-cache"))
    run = subprocess.run([sys.executable, "-c", CUDA_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "formula 'mse': pass tensors by name: kern(t=..., x=...) (got 2 positional arguments)",
        "formula 'mse': pass tensors by name: kern.vjp(grad, t=..., x=...) "
        "(got 1 positional argument after grad)",
        "same gradients"], run.stdout + run.stderr


# -- verification reports --------------------------------------------------------------------------

def test_numeric_returns_a_report():
    report = symdl.verify.numeric(dense_formula(), sizes=SIZES)
    assert isinstance(report, float) and report < 1e-6 and bool(report)
    assert (report.name, report.gradients, report.sizes, report.rtol) == (
        "dense", ("b", "W", "x"), {"B": 2, "N": 3, "M": 2}, 1e-6)
    assert float(report) == max(report.errors.values()) and report.errors.keys() == {"b", "W", "x"}
    line = (f"numeric: 3 gradients of 'dense' at B=2, N=3, M=2, worst relative error "
            f"{float(report):.1e} (rtol 1e-06)")
    assert str(report) == repr(report) == line


def test_backends_returns_a_report():
    report = symdl.verify.backends(dense_formula(), sizes=SIZES)
    assert isinstance(report, float) and report < 2e-4 and bool(report)
    assert (report.name, report.backend, report.kernels, report.sizes, report.ties) == (
        "dense", "cpu", 4, {"B": 2, "N": 3, "M": 2}, False)
    assert list(report.errors) == ["float64", "float32"] and float(report) == max(report.errors.values())
    assert report.errors["float64"] <= 1e-9
    e64, e32 = report.errors["float64"], report.errors["float32"]
    line = (f"backends: 4 kernels of 'dense' (forward and gradients) on cpu at B=2, N=3, M=2, worst "
            f"relative difference from the NumPy reference {e64:.1e} in float64 (tolerance 1e-09), "
            f"{e32:.1e} in float32 (tolerance 0.0002)")
    assert str(report) == repr(report) == line


def test_verify_all_keeps_the_reports():
    summary = symdl.verify.all(dense_formula(), sizes=SIZES)
    assert summary.numeric.gradients == ("b", "W", "x") and summary.backends.kernels == 4
    sec = summary.seconds
    assert str(summary) == (f"dense: symbolic 14 el ({sec['symbolic']:.1f} s), "      # b: 2, W: 6, x: 6
                            f"numeric {float(summary.numeric):.1e} ({sec['numeric']:.1f} s), "
                            f"backends {float(summary.backends):.1e} ({sec['backends']:.1f} s)")
