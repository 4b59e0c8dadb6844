"""A function two generated modules define alike is compiled once per process
(backends/cpu/shared.py `shared_function`): both modules call one dispatcher, each module's results
are still its own formula's, and a float64 twin or a function that differs by one character is not
shared. The compile-progress estimate counts such a pair once."""
from __future__ import annotations

import numpy as np
import sympy as sp

import symdl
from symdl.nn.progress import uncached_modules

N = sp.Symbol("N", integer=True, positive=True)
i = sp.Idx("i", N)
x, y = sp.IndexedBase("x"), sp.IndexedBase("y")


def _kernels(*bodies_and_names):
    return [symdl.Formula(sp.Eq(y[i], body), name=name).compile() for body, name in bodies_and_names]


def test_alike_functions_share_one_dispatcher_and_keep_their_results(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path))
    a, b, c = _kernels((x[i] * 3 + 1, "shared_a"), (x[i] * 3 + 1, "shared_b"), (x[i] * 3 + 2, "shared_c"))
    assert a.source() != b.source()  # the modules differ (their headers name their formulas)
    xv = np.linspace(-1, 1, 50, dtype=np.float32)
    for k, add in ((a, 1), (b, 1), (c, 2)):
        np.testing.assert_allclose(k(x=xv), xv * 3 + add, rtol=1e-6, atol=1e-6)
    mod_a, mod_b, mod_c = (k._module("float32") for k in (a, b, c))
    assert mod_a.loops_serial is mod_b.loops_serial  # one compile for both
    assert mod_c.loops_serial is not mod_a.loops_serial  # one character apart: its own
    assert a._module("float64").loops_serial is not mod_a.loops_serial  # F is float64 there
    np.testing.assert_allclose(b(x=xv.astype(np.float64)), xv.astype(np.float64) * 3 + 1, rtol=1e-12)


def test_the_compile_estimate_counts_a_pair_of_alike_modules_once(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path))
    pair = _kernels((x[i] * 5 - 1, "pair_a"), (x[i] * 5 - 1, "pair_b"))
    other = _kernels((x[i] * 7, "pair_c"))
    assert len(uncached_modules(pair + other)) == 2
    pair[1](x=np.ones(4, np.float32))  # the second of the pair compiles; the first's functions are its
    assert len(uncached_modules(pair + other)) == 1


def test_a_module_changed_after_generation_never_borrows_machine_code(tmp_path, monkeypatch):
    """The key names the generated text, but a module edited afterwards (a planted change, a
    mutation test's printer) keeps the key: the function itself is compared before sharing."""
    from symdl.runtime.cache import load_module
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path))
    (kern,) = _kernels((x[i] * 3 + 4, "edited_a"))
    source = kern.source("float64")
    assert "F(4) + F(3) * x[i]" in source, source
    intact = kern._module("float64")
    edited = load_module(source.replace("edited_a", "edited_b").replace("F(4) + F(3)", "F(5) + F(3)"))
    assert edited is not intact and "@shared_function(" in source
    assert edited.loops_serial is not intact.loops_serial
    out = np.empty(6)
    xv = np.arange(6.0)
    edited.run(out, xv, 6, False)  # run(y, x, N, parallel)
    np.testing.assert_allclose(out, xv * 3 + 5)
