"""The cuda printer on the random trees of tests/test_printer_fuzz.py: batches of draws printed by
CudaPrinter, run as one kernel (device helpers included), and compared with SymPy at 40 digits;
a few draws through `Formula.compile(backend="cuda")`. Fewer draws than the cpu file: the
simulator runs kernels in Python. SYMDL_FUZZ=<n> multiplies them."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import assume, given, note
from hypothesis import strategies as st
from numba import cuda

import symdl
from symdl.backends.cuda.printer import CudaPrinter

_spec = importlib.util.spec_from_file_location(
    "printer_fuzz_trees", Path(__file__).parents[1] / "tests" / "test_printer_fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)  # the trees, the exact evaluation and the tolerances (not its tests)


def run_batch(exprs: list, dtype: str) -> list[np.ndarray]:
    """Each expression printed by CudaPrinter at `dtype` into out[k] of one kernel, at every point."""
    p = CudaPrinter([fuzz.DIM], dtype=dtype)
    lines = [f"    out[{k}] = {p.value(e)}" for k, e in enumerate(exprs)]
    ns = {"F": np.dtype(dtype).type, "np": np, "math": math, "cuda": cuda}
    for name in sorted(p.helpers):
        exec(p.helper_source(name), ns)  # noqa: S102 (the printer's own helpers)
    exec("def batch(a, b, c, n, i, j, H, t, out):\n" + "\n".join(lines) + "\n", ns)  # noqa: S102
    kernel = cuda.jit(ns["batch"])
    outs = []
    for point in fuzz.POINTS:
        out = np.zeros(len(exprs), dtype=dtype)
        d_out = cuda.to_device(out)
        args = fuzz.arguments(point, dtype)
        args["t"] = cuda.to_device(args["t"])
        kernel[1, 1](*args.values(), d_out)
        outs.append(d_out.copy_to_host())
    return outs


@fuzz.fuzz_settings(3)
@given(st.lists(fuzz.values(), min_size=20, max_size=20))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_printer_batches_match_sympy(dtype, exprs):
    checked = []
    for e in exprs:
        try:
            checked.append((e, [fuzz.exact(e, p) for p in fuzz.POINTS]))
        except fuzz.Skip:
            pass
    assume(checked)
    outs = run_batch([e for e, _ in checked], dtype)
    for k, (e, want) in enumerate(checked):
        for out, (value, magnitude) in zip(outs, want, strict=True):
            assert fuzz.close(float(out[k]), value, magnitude, fuzz.RTOL[dtype]), \
                (e, CudaPrinter([fuzz.DIM], dtype=dtype).value(e), float(out[k]), value)


@fuzz.fuzz_settings(3)
@given(fuzz.smooth(depth=3, reads=False))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_drawn_formula_compiles_for_cuda_and_matches_sympy(dtype, expr):
    assume(expr.free_symbols & {fuzz.A, fuzz.B, fuzz.C})  # a formula needs an input to size it
    want = fuzz.reference(expr)
    N = sp.Symbol("N", integer=True, positive=True)
    k = sp.Idx("k", N)
    x, w, z, y = map(sp.IndexedBase, "x w z y".split())
    f = symdl.Formula(sp.Eq(y[k], expr.xreplace({fuzz.A: x[k], fuzz.B: w[k], fuzz.C: z[k]})),
                      name="printer_fuzz_cuda")
    note(f"formula: {f}")
    arrays = {name: np.array([p[s] for p in fuzz.POINTS], dtype=dtype)
              for name, s in zip("xwz", (fuzz.A, fuzz.B, fuzz.C), strict=True) if name in f.input_names}
    got = f.compile(backend="cuda")(**arrays)
    got = got.copy_to_host() if hasattr(got, "copy_to_host") else got
    for g, (value, magnitude) in zip(np.asarray(got, dtype=np.float64), want, strict=True):
        assert fuzz.close(float(g), value, magnitude, fuzz.RTOL[dtype]), (expr, g, value)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_printer_regressions(dtype):
    """The two reproducers of the precedence bug and the new functions, printed for the device."""
    a, b, c = fuzz.A, fuzz.B, fuzz.C
    exprs = [-3 * a * (b + c), -2 / (1 + sp.exp(-a)), a / 2 * (1 + sp.erf(a / sp.sqrt(2))),
             sp.sinh(b) - sp.cosh(c) * sp.atan(a)]
    outs = run_batch(exprs, dtype)
    for k, e in enumerate(exprs):
        for out, point in zip(outs, fuzz.POINTS, strict=True):
            want = float(sp.N(e.subs({s: point[s] for s in (a, b, c)}), 30))
            assert float(out[k]) == pytest.approx(want, rel=fuzz.RTOL[dtype], abs=fuzz.RTOL[dtype]), e
