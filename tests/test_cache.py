"""The on-disk kernel cache: a second process loads compiled kernels instead of compiling them;
module files are named by a content hash, rebuilt when corrupt, and written atomically."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.runtime import cache

# Compiles the dense formula and its VJPs, checks their values against NumPy, and prints, for the
# modules it used, numba's cache statistics summed over every dispatcher in them.
SCRIPT = textwrap.dedent('''
    import json
    import numba
    import numpy as np
    import sympy as sp
    import symdl

    B, N, M = sp.symbols("B N M", integer=True, positive=True)
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, b, y = map(sp.IndexedBase, "x W b y".split())
    dense = symdl.Formula(sp.Eq(y[i, j], sp.Sum(x[i, k] * W[k, j], k) + b[j]), name="dense")
    kern = dense.compile()
    rng = np.random.default_rng(0)
    X, Wv, bv = (rng.standard_normal(s).astype(np.float32) for s in ((4, 3), (3, 5), (5,)))
    G = rng.standard_normal((4, 5)).astype(np.float32)
    np.testing.assert_allclose(kern(x=X, W=Wv, b=bv), X @ Wv + bv, rtol=1e-5, atol=1e-6)
    grads = kern.vjp(G, x=X, W=Wv, b=bv)
    np.testing.assert_allclose(grads["x"], G @ Wv.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["W"], X.T @ G, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["b"], G.sum(0), rtol=1e-5, atol=1e-6)

    report = {}
    kernels = [kern] + [kern.grad_kernel(n) for n in ("x", "W", "b")]
    for kn in kernels:
        module = kn._module(np.dtype("float32"))
        dispatchers = {n: d for n, d in vars(module).items()
                       if isinstance(d, numba.core.dispatcher.Dispatcher)}
        report[module.__name__] = {
            "file": module.__file__,
            "hits": sum(sum(d.stats.cache_hits.values()) for d in dispatchers.values()),
            "misses": sum(sum(d.stats.cache_misses.values()) for d in dispatchers.values()),
            "dispatchers": sorted(dispatchers),
            "cache_paths": sorted({d.stats.cache_path for d in dispatchers.values()}),
        }
    print("REPORT" + json.dumps(report))
''')


def _run(cache_dir) -> dict:
    env = dict(os.environ, SYMDL_CACHE_DIR=str(cache_dir))
    env.pop("NUMBA_CACHE_DIR", None)  # numba's cache then lives beside the module, in cache_dir
    env.pop("NUMBA_DISABLE_JIT", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT"))
    return json.loads(line[len("REPORT"):])


def _totals(report: dict) -> tuple[int, int]:
    return sum(r["hits"] for r in report.values()), sum(r["misses"] for r in report.values())


def test_second_process_loads_kernels_from_the_cache(tmp_path):
    first = _run(tmp_path)
    assert any(r["dispatchers"] for r in first.values()), "no numba function to observe"
    hits, misses = _totals(first)
    assert (hits, misses) != (0, 0) and hits == 0, f"a fresh cache cannot hit: {first}"
    numba_files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "__pycache__").iterdir()}
    assert any(n.endswith(".nbi") for n in numba_files), numba_files
    assert not [n for n in numba_files if n.endswith(".pyc")], "modules run from source, not bytecode"
    second = _run(tmp_path)
    assert second.keys() == first.keys(), "the same formulas must map to the same module names"
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "__pycache__").iterdir()} == numba_files
    hits, misses = _totals(second)
    assert misses == 0 and hits > 0, f"the second process compiled again: {second}"
    for name, r in second.items():  # each module that compiled before now loads everything
        assert r["hits"] == first[name]["misses"], (name, first[name], r)
        assert r["file"] == str(tmp_path / f"{name}.py")
        assert all(p.startswith(str(tmp_path)) for p in r["cache_paths"]), r  # numba's files too


def _tiny(name: str) -> symdl.Formula:
    """A one-loop formula with a name of its own, so its module is not shared with other tests."""
    N = sp.symbols("N", integer=True, positive=True)
    i = sp.Idx("i", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    return symdl.Formula(sp.Eq(y[i], 2 * x[i] + 1), name=name)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_module_file_is_named_by_the_hash_of_its_source(cache_dir):
    kern = _tiny("cache_hash_name").compile()
    out = kern(x=np.arange(3.0))
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0])
    source = kern.source("float64")
    digest = hashlib.sha256(source.encode()).hexdigest()
    path = cache_dir / f"symdl_kernel_{digest[:24]}.py"
    assert path.read_text() == source
    assert [p.name for p in cache_dir.glob("*.py")] == [path.name]
    assert kern._module(np.dtype("float64")).__file__ == str(path)
    other = _tiny("cache_hash_other").compile().source("float64")
    assert cache.module_name(other) != cache.module_name(source)


def test_corrupted_module_file_is_rebuilt(cache_dir):
    kern = _tiny("cache_corrupt").compile()
    source = kern.source("float64")
    name = cache.module_name(source)
    path = cache_dir / f"{name}.py"
    cache.load_module(source)
    assert path.read_text() == source
    sys.modules.pop(name)  # what a new process sees: only the file
    with open(path, "r+b") as fh:
        fh.truncate(len(source) // 2)  # a half-written file, as a crash mid-write would leave
    try:
        module = cache.load_module(source)
        assert path.read_text() == source
        out = np.empty(3)
        module.run(out, np.arange(3.0), 3, False)
        np.testing.assert_array_equal(out, [1.0, 3.0, 5.0])
    finally:
        sys.modules.pop(name, None)


def test_kernel_cache_leaves_no_temporary_files(cache_dir):
    kern = _tiny("cache_no_temp").compile()
    kern(x=np.arange(3.0))
    kern(x=np.arange(3.0, dtype=np.float32))
    names = sorted(p.name for p in cache_dir.iterdir() if p.is_file())
    assert len([n for n in names if n.endswith(".py")]) == 2, names  # float64 and float32
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "module.py"
    path.write_text("old = 1\n")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(cache.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.atomic_write(path, b"new = 2\n")
    assert path.read_text() == "old = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["module.py"]


def test_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "module.py"
    path.write_text("x" * 1000)
    cache.atomic_write(path, b"short\n")
    assert path.read_bytes() == b"short\n"
    assert [p.name for p in tmp_path.iterdir()] == ["module.py"]
