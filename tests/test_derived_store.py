"""Gradients derived in one process serve the next (runtime/cache.py's DerivedStore), under the
kernel cache's trust checks, and never outlive the code that derived them."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_random_formulas import build_contraction, build_window, contraction_specs, window_specs

import symdl
from symdl.runtime import cache

reverse_mode = sys.modules["symdl.autodiff.vjp"]


def _formula(scale=3):
    N = sp.Symbol("N", integer=True, positive=True)
    i = sp.Idx("i", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    return symdl.Formula(sp.Eq(y[i], sp.tanh(scale * x[i]) ** 2), name="store_probe")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(reverse_mode, "_VJPS", {})  # nothing remembered in this process
    s = cache.DerivedStore()
    monkeypatch.setattr(reverse_mode, "STORE", s)
    return s


def _files(tmp_path):
    return sorted((tmp_path / "cache").glob("symdl_derived_*.pkl"))


def test_a_stored_gradient_is_read_instead_of_derived(store, tmp_path, monkeypatch):
    f = _formula()
    g = f.vjp()["x"]
    assert len(_files(tmp_path)) == 1
    monkeypatch.setattr(reverse_mode, "_VJPS", {})
    monkeypatch.setattr(reverse_mode, "_vjp_one", lambda *a, **k: pytest.fail("derived again"))
    h = _formula().vjp()["x"]
    assert h.key() == g.key()
    x = np.linspace(-1, 1, 7)
    k = h.compile()
    np.testing.assert_allclose(k(grad_y=np.ones(7), x=x), 6 * np.tanh(3 * x) / np.cosh(3 * x) ** 2, rtol=1e-12)


def test_a_new_process_reads_what_this_one_stored(store, tmp_path):
    _formula(5).vjp()
    code = ("import sys, symdl, symdl.autodiff, sympy as sp; m = sys.modules['symdl.autodiff.vjp'];"
            "m._vjp_one = lambda *a, **k: sys.exit('derived again');"
            "N = sp.Symbol('N', integer=True, positive=True); i = sp.Idx('i', N);"
            "x, y = sp.IndexedBase('x'), sp.IndexedBase('y');"
            "f = symdl.Formula(sp.Eq(y[i], sp.tanh(5 * x[i]) ** 2), name='store_probe');"
            "print(f.vjp()['x'].body)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, SYMDL_CACHE_DIR=str(tmp_path / "cache")))
    assert run.returncode == 0, run.stderr
    assert "tanh" in run.stdout


def test_other_code_derives_afresh(store, tmp_path, monkeypatch):
    _formula().vjp()
    monkeypatch.setattr(reverse_mode, "_VJPS", {})
    other = cache.DerivedStore()
    other._code = "edited autodiff"  # what a change to declare/, autodiff/ or passes/ gives
    monkeypatch.setattr(reverse_mode, "STORE", other)
    _formula().vjp()
    assert len(_files(tmp_path)) == 2


@pytest.mark.parametrize("damage", ["group-writable", "torn"])
def test_an_untrusted_or_damaged_file_is_removed_and_derived_again(store, tmp_path, monkeypatch, damage):
    g = _formula().vjp()["x"]
    (path,) = _files(tmp_path)
    if damage == "torn":
        path.write_bytes(path.read_bytes()[:20])
    else:
        path.chmod(0o666)
        (tmp_path / "cache").chmod(0o755)  # a folder others may enter: the file's own bits count
    monkeypatch.setattr(reverse_mode, "_VJPS", {})
    with pytest.warns(cache.UnsafeCacheWarning, match="removed the untrusted"):
        h = _formula().vjp()["x"]
    assert h.key() == g.key()


def _tree(value):
    """Every field of a stored value as text: SymPy objects by srepr (their exact tree)."""
    if isinstance(value, sp.Basic):
        return sp.srepr(value)
    if isinstance(value, dict):
        return sorted((_tree(k), _tree(v)) for k, v in value.items())
    if isinstance(value, (set, frozenset)):
        return sorted(_tree(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_tree(v) for v in value]
    if hasattr(value, "__dict__"):
        return sorted((k, _tree(v)) for k, v in vars(value).items())
    return repr(value)


def _gradients_load_back_unchanged(f):
    grads = symdl.vjp(f)
    assert grads
    for name, g in grads.items():
        back = cache.loads(pickle.dumps(g, protocol=pickle.HIGHEST_PROTOCOL))
        assert _tree(back) == _tree(g), f"{f.name} d/d{name}"
        for a, b in zip(getattr(back, "formulas", [back]), getattr(g, "formulas", [g])):  # a recurrence's: a Program
            assert a.body == b.body and hash(a.body) == hash(b.body)


@settings(max_examples=12, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(st.one_of(contraction_specs().map(build_contraction), window_specs().map(build_window)))
def test_gradients_of_random_formulas_load_back_as_the_same_trees(store, f):
    """The store rebuilds expressions unevaluated (cache.loads): the class check that this gives the
    trees that were derived, over both random families (sums, Max/Min, windows, reversed reads)."""
    _gradients_load_back_unchanged(f)


@pytest.mark.parametrize("name", ["categorical_crossentropy_logits", "conv2d_strided", "max_pool2d", "leaky_relu",
                                  "logsumexp", "dot_product_attention", "adam_update", "rnn_tanh"])
def test_gradients_of_catalog_formulas_load_back_as_the_same_trees(store, name):
    import formulas

    built = formulas.get(name)
    for f in getattr(built, "formulas", None) or [built]:
        _gradients_load_back_unchanged(f)
