"""The cpu helpers (`_exp`, `_log`, `_sigmoid`, ...) are made once per process and dtype for every
generated module (backends/cpu/shared.py): numba compiles each once, not once per module; their
text's fingerprint is part of every calling module's source, so editing a helper regenerates them."""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import symdl
import symdl.backends.cpu.helpers as cpu_helpers
from symdl.backends.cpu import shared

N = sp.Symbol("N", integer=True, positive=True)
i = sp.Idx("i", N)
x, y = sp.IndexedBase("x"), sp.IndexedBase("y")

BODIES = {  # three modules calling overlapping helpers, and their NumPy meaning
    "exp_plus": (lambda v: sp.exp(v) + 1, lambda v: np.exp(v) + 1),
    "exp_times": (lambda v: 2 * sp.exp(-v), lambda v: 2 * np.exp(-v)),
    "tanh_log": (lambda v: sp.tanh(v) + sp.log(1 + v * v), lambda v: np.tanh(v) + np.log1p(v * v)),
}


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):  # every kernel compiles: the helpers' compiles show
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path / "cache"))


def kernels(tag: str) -> dict:
    return {n: symdl.Formula(sp.Eq(y[i], body(x[i])), name=f"{n}_{tag}").compile()
            for n, (body, _) in BODIES.items()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 17, 1000])
def test_modules_share_one_compiled_helper(dtype, n):
    kerns = kernels(f"{np.dtype(dtype).name}_{n}")
    xs = np.random.default_rng(n).uniform(-3, 3, n).astype(dtype)
    for name, kern in kerns.items():
        tol = 2e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(kern(x=xs), BODIES[name][1](xs.astype(np.float64)), rtol=tol, atol=tol)
    modules = [k._module(np.dtype(dtype)) for k in kerns.values()]
    if dtype == np.float32:  # float64 kernels call libm through math: no helper at all
        (made,) = shared.helpers("float32", cpu_helpers.fingerprint("float32"), "_exp")
        assert all(m._exp is made for m in modules if hasattr(m, "_exp"))
        assert sum(hasattr(m, "_exp") for m in modules) == 3  # tanh's composition calls _exp too
        assert len(made.signatures) == 1  # compiled once for the three modules (and the process)
    for kern in kerns.values():  # no module defines its own copy of a helper
        assert re.search(r"^def _", kern.source(np.dtype(dtype).name), re.M) is None


def test_editing_a_helper_changes_the_generated_source(monkeypatch):
    from symdl.runtime import kept
    monkeypatch.setattr(kept, "STORE", None)  # an edit in this process: the kept source's hash sees files
    f = symdl.Formula(sp.Eq(y[i], sp.exp(x[i])), name="exp_fingerprint")
    before = f.compile().source("float32")
    decorator, text = cpu_helpers.HELPERS_F32["_exp"]
    monkeypatch.setitem(cpu_helpers.HELPERS_F32, "_exp", (decorator, text + "  # edited"))
    after = f.compile().source("float32")
    assert before != after and cpu_helpers.fingerprint("float32") in after
    assert f.compile().source("float64") == symdl.Formula(sp.Eq(y[i], sp.exp(x[i])),
                                                          name="exp_fingerprint").compile().source("float64")


def test_a_module_printed_against_other_helpers_is_refused():
    with pytest.raises(ImportError, match="other float32 helpers"):
        shared.helpers("float32", "0" * 16, "_exp")
