"""Golden tests: the generated kernel source of a few formulas, pinned in tests/golden/.

A change in code generation shows up here as a reviewable diff of the generated module. When the
change is intended, regenerate the files and commit them with it:

    SYMDL_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

(the SymForce "compare or update" pattern).
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import symdl

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SYMDL_UPDATE_GOLDEN") == "1"
DTYPE = "float32"


def dense() -> symdl.Formula:
    """y[i, j] = Σ_k x[i, k] W[k, j] + b[j]."""
    B, N, M = sp.symbols("B N M", integer=True, positive=True)
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, b, y = map(sp.IndexedBase, "x W b y".split())
    return symdl.Formula(sp.Eq(y[i, j], sp.Sum(x[i, k] * W[k, j], k) + b[j]), name="dense")


def conv1d_stride2() -> symdl.Formula:
    """y[i] = Σ_m w[m] x[2i + m]: a valid 1-D convolution with stride 2."""
    L, K = sp.symbols("L K", integer=True, positive=True)
    x, w, y = sp.IndexedBase("x", shape=(L,)), sp.IndexedBase("w"), sp.IndexedBase("y")
    i, m = sp.Idx("i", (L - K) // 2 + 1), sp.Idx("m", K)
    return symdl.Formula(sp.Eq(y[i], sp.Sum(w[m] * x[2 * i + m], m)), name="conv1d_s2")


def coverage() -> symdl.Formula:
    """One term per supported elementwise function, so the golden file shows how each prints."""
    N = sp.symbols("N", integer=True, positive=True)
    i = sp.Idx("i", N)
    x, u, y = sp.IndexedBase("x"), sp.IndexedBase("u"), sp.IndexedBase("y")
    a, c = x[i], u[i]  # u only under log, sqrt and negative powers: its domain is (0.2, 1)
    body = (sp.exp(a) * sp.log(c) + sp.tanh(a) + sp.sqrt(c) + sp.Abs(a) * a**3 + c**-2
            + sp.Max(a, c) + c * sp.Min(a, 0) + sp.Piecewise((a, a > 0), (a / 10, True))
            + symdl.sigmoid(a) + symdl.softplus(a * c))
    return symdl.Formula(sp.Eq(y[i], body), name="coverage")


def _kernels():
    """(golden file stem, formula) for each pinned kernel."""
    d, conv, cov = dense(), conv1d_stride2(), coverage()
    yield "dense", d
    for name, g in d.vjp().items():
        yield f"dense.vjp.{name}", g
    yield "conv1d_s2.vjp.x", conv.vjp(["x"])["x"]
    yield "coverage", cov
    for name, g in cov.vjp().items():
        yield f"coverage.vjp.{name}", g
    yield "sgd_update", symdl.formulas.get("sgd_update")  # a scalar input: a float into each function, cast there


CASES = dict(_kernels())


def compare_or_update(path: Path, actual: str) -> None:
    """Fail with a unified diff when `actual` differs from the file; rewrite it when updating."""
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != actual:
            path.write_text(actual)
        return
    if not path.exists():
        pytest.fail(f"missing golden file {path}; create it with SYMDL_UPDATE_GOLDEN=1")
    expected = path.read_text()
    if expected != actual:
        lines = expected.splitlines(keepends=True), actual.splitlines(keepends=True)
        diff = "".join(difflib.unified_diff(*lines, f"{path.name} (golden)", f"{path.name} (generated)"))
        pytest.fail(f"generated source differs from {path}; if intended, rerun with SYMDL_UPDATE_GOLDEN=1 "
                    f"and commit the new file\n{diff}")


@pytest.mark.parametrize("stem", list(CASES))
def test_generated_source_matches_golden(stem):
    source = CASES[stem].compile().source(DTYPE)
    compare_or_update(GOLDEN / f"{stem}.{DTYPE}.py", source)


def test_shared_helpers_match_golden():
    """The float32 helpers every module imports (backends/cpu/shared.py), pinned as the kernels are."""
    from symdl.backends.cpu import shared
    compare_or_update(GOLDEN / f"helpers.{DTYPE}.py", shared.source(DTYPE))


def test_golden_folder_holds_only_pinned_kernels():
    """A golden file whose kernel was dropped from CASES would never be checked again."""
    expected = {f"{stem}.{DTYPE}.py" for stem in [*CASES, "helpers"]}
    stale = {p for p in GOLDEN.glob("*.py") if p.name not in expected}
    if UPDATE:
        for p in stale:
            p.unlink()
        stale = set()
    assert not stale, f"golden files without a pinned kernel: {sorted(p.name for p in stale)}"


def test_pinned_kernels_compute_what_numpy_computes():
    """A golden file pins text, not meaning: check the pinned kernels' values once as well."""
    rng = np.random.default_rng(0)
    x, W, b = (rng.standard_normal(s).astype(np.float32) for s in ((4, 3), (3, 5), (5,)))
    g = rng.standard_normal((4, 5)).astype(np.float32)
    kern = CASES["dense"].compile()
    np.testing.assert_allclose(kern(x=x, W=W, b=b), x @ W + b, rtol=1e-5, atol=1e-6)
    grads = kern.vjp(g, x=x, W=W, b=b)
    np.testing.assert_allclose(grads["x"], g @ W.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["W"], x.T @ g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["b"], g.sum(0), rtol=1e-5, atol=1e-6)

    L, K = 9, 3  # output length (9 - 3)//2 + 1 = 4; x[8] is read by no window
    w, gy = rng.standard_normal(K), rng.standard_normal((L - K) // 2 + 1)
    want = np.zeros(L)
    for i, gi in enumerate(gy):
        want[2 * i:2 * i + K] += gi * w
    got = CASES["conv1d_s2.vjp.x"].compile()(grad_y=gy, w=w, dims={"L": L})
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
