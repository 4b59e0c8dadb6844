"""The kernel cache is code that runs (docs/security.md): one test per protection. A folder or file
another user could have written is never used, a planted `.pyc` never runs, and threads making
the first call on a fresh kernel all see the module only once it has finished executing."""
from __future__ import annotations

import importlib.util
import marshal
import os
import pickle
import stat
import sys
import threading
import time
from pathlib import Path

import numba
import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.runtime import cache

posix_only = pytest.mark.skipif(not hasattr(os, "getuid"), reason="owners and modes are POSIX")


def _tiny(name: str, scale: int = 2) -> symdl.Formula:
    """A one-loop formula with a name of its own, so its module is not shared with other tests."""
    N = sp.symbols("N", integer=True, positive=True)
    i = sp.Idx("i", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    return symdl.Formula(sp.Eq(y[i], scale * x[i] + 1), name=name)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(root))
    return root


@pytest.fixture
def forget_modules():
    """Module names to drop from sys.modules afterwards (what a new process would not have)."""
    names: list[str] = []
    yield names
    for name in names:
        sys.modules.pop(name, None)


def _writes_marker(marker: Path) -> str:
    return f"__import__('pathlib').Path({str(marker)!r}).write_text('planted code ran')"


# -- the folder ------------------------------------------------------------------------------------

@posix_only
def test_new_cache_dir_is_created_owner_only(tmp_path, monkeypatch):
    root = tmp_path / "deep" / "symdl"
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(root))
    assert cache.cache_dir() == root
    assert _mode(root) == 0o700
    assert _mode(root / "__pycache__") == 0o700  # made before numba would make it with the umask


@posix_only
@pytest.mark.parametrize("mode", [0o770, 0o757, 0o777, 0o1777])
def test_cache_dir_writable_by_group_or_others_is_not_used(tmp_path, monkeypatch, mode):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(shared))
    with pytest.warns(cache.UnsafeCacheWarning, match="writable by group or others"):
        used = cache.cache_dir()
    assert used != shared and _mode(used) == 0o700 and _mode(used / "__pycache__") == 0o700
    assert list(shared.iterdir()) == []  # not even a __pycache__ was made there
    assert cache.cache_dir() == used  # one warning and one private folder per process


@posix_only
def test_cache_dir_owned_by_another_user_is_not_used(tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    other = theirs.stat().st_uid + 1
    monkeypatch.setattr(cache.os, "getuid", lambda: other)
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(theirs))
    with pytest.warns(cache.UnsafeCacheWarning, match="owned by uid"):
        used = cache.cache_dir()
    assert used != theirs and list(theirs.iterdir()) == []


@posix_only
def test_kernel_computes_in_a_private_folder_when_the_cache_dir_is_shared(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(shared))
    with pytest.warns(cache.UnsafeCacheWarning, match=str(shared)):  # from the build (runtime/kept.py) or the call
        kern = _tiny("cache_security_shared_dir").compile()
        out = kern(x=np.arange(3.0))
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0])
    used = Path(kern._module(np.dtype("float64")).__file__).parent
    assert used != shared and _mode(used) == 0o700
    assert list(shared.iterdir()) == []


@posix_only
def test_symlinked_cache_dir_of_our_own_is_used(tmp_path, monkeypatch):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(target)
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(link))
    assert cache.cache_dir() == link
    assert (target / "__pycache__").is_dir()


@posix_only
def test_symlinked_pycache_is_not_used(cache_dir, tmp_path):
    cache_dir.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (cache_dir / "__pycache__").symlink_to(elsewhere)
    with pytest.warns(cache.UnsafeCacheWarning, match="__pycache__ folder: it is a symbolic link"):
        assert cache.cache_dir() != cache_dir


def test_checks_are_skipped_where_there_is_no_getuid(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # meaningless on Windows, where os.getuid does not exist
    monkeypatch.delattr(os, "getuid", raising=False)
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(shared))
    assert cache.cache_dir() == shared


# -- files in it -----------------------------------------------------------------------------------

def test_planted_pyc_never_runs(cache_dir, tmp_path, forget_modules):
    """A `.pyc` whose header matches the source (mtime and size) is what the standard import
    system would run; symdl compiles the source it generated instead."""
    kern = _tiny("cache_security_pyc").compile()
    source = kern.source("float64")
    name = cache.module_name(source)
    forget_modules.append(name)
    path = cache.cache_dir() / f"{name}.py"
    cache.atomic_write(path, source.encode())
    marker = tmp_path / "marker"
    evil = compile(f"{_writes_marker(marker)}\ndef run(y, x, N, parallel):\n    y[:] = -1.0\n",
                   str(path), "exec")
    st = path.stat()
    header = (importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
              + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
              + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
    pyc = Path(importlib.util.cache_from_source(str(path)))
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(header + marshal.dumps(evil))

    # the standard loader runs the planted file: the attack is real
    spec = importlib.util.spec_from_file_location("symdl_planted_probe", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert marker.exists()
    marker.unlink()

    out = kern(x=np.arange(4.0))
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0, 7.0])
    assert not marker.exists()
    assert pyc.exists()  # still there: it was ignored, not cleaned up


class _Payload:
    """Pickles as a call of eval: what a planted numba index file runs when it is unpickled."""

    def __init__(self, expr: str):
        self.expr = expr

    def __reduce__(self):
        return eval, (self.expr,)


@posix_only
def test_planted_numba_index_with_bad_permissions_is_removed(cache_dir, tmp_path, forget_modules):
    formula = _tiny("cache_security_nbi")
    source = formula.compile().source("float64")
    name = cache.module_name(source)
    forget_modules.append(name)
    module = cache.load_module(source)  # runs no compiler: just finds numba's file names
    pycache = cache_dir / "__pycache__"
    py = sys.version_info
    indexes = [pycache / (f"{name}.{d.py_func.__qualname__}-{d.py_func.__code__.co_firstlineno}"
                          f".py{py.major}{py.minor}{sys.abiflags}.nbi")
               for d in vars(module).values() if isinstance(d, numba.core.dispatcher.Dispatcher)]
    assert indexes
    sys.modules.pop(name)  # what a new process sees: only the files

    marker = tmp_path / "marker"
    planted = (pickle.dumps(numba.__version__)
               + pickle.dumps(_Payload(f"({_writes_marker(marker)}, {{}})")))
    for index in indexes:
        index.write_bytes(planted)
        index.chmod(0o666)
    pycache.chmod(0o755)  # others may enter: a file's own write bits now matter
    with pytest.warns(cache.UnsafeCacheWarning, match="removed the untrusted kernel cache file"):
        out = formula.compile()(x=np.arange(3.0))
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0])
    assert not marker.exists()
    serial = [p for p in indexes if p.exists()]  # numba wrote its own index for the one it ran
    assert serial and all(p.read_bytes() != planted for p in serial)


@posix_only
def test_numba_files_of_ours_in_a_private_pycache_are_kept(cache_dir):
    """numba writes with the umask (0o664 under umask 002); nobody else can enter a 0o700 folder,
    so such files are trusted there and removed only where the folder lets others in."""
    root = cache.cache_dir()
    entry = root / "__pycache__" / "symdl_kernel_x.run-1.py311.nbi"
    entry.write_bytes(b"index")
    entry.chmod(0o664)
    cache._remove_untrusted(root, "symdl_kernel_x")
    assert entry.exists()
    (root / "__pycache__").chmod(0o750)
    with pytest.warns(cache.UnsafeCacheWarning, match="writable by group or others"):
        cache._remove_untrusted(root, "symdl_kernel_x")
    assert not entry.exists()


@posix_only
def test_entry_owned_by_another_user_is_removed(cache_dir, monkeypatch):
    root = cache.cache_dir()
    entry = root / "__pycache__" / "symdl_kernel_y.run-1.py311.nbi"
    entry.write_bytes(b"index")
    entry.chmod(0o600)
    other = entry.stat().st_uid + 1
    monkeypatch.setattr(cache.os, "getuid", lambda: other)
    with pytest.warns(cache.UnsafeCacheWarning, match="owned by uid"):
        cache._remove_untrusted(root, "symdl_kernel_y")
    assert not entry.exists()


@posix_only
def test_symlinked_entries_are_replaced_or_removed(cache_dir, tmp_path, forget_modules):
    source = "def run():\n    return 'checked source'\n"
    name = cache.module_name(source)
    forget_modules.append(name)
    root = cache.cache_dir()
    outside = tmp_path / "outside.py"
    outside.write_text(source)  # the right text, but anyone who owns the link's target could edit it
    (root / f"{name}.py").symlink_to(outside)
    index = root / "__pycache__" / f"{name}.run-1.py311.nbi"
    index.symlink_to(tmp_path / "outside.nbi")
    with pytest.warns(cache.UnsafeCacheWarning, match="symbolic link"):
        module = cache.load_module(source)
    assert module.run() == "checked source"
    path = root / f"{name}.py"
    assert not path.is_symlink() and path.read_text() == source and _mode(path) == 0o600
    assert not os.path.lexists(index)
    assert outside.read_text() == source  # the link was replaced, its target left alone


# -- threads ---------------------------------------------------------------------------------------

def test_threads_see_a_module_only_once_it_has_run(cache_dir, tmp_path, forget_modules):
    """Deterministic: the module takes 0.3 s to execute while seven other threads ask for it."""
    log = tmp_path / "executions"
    source = (f"import time\nwith open({str(log)!r}, 'a') as fh:\n    fh.write('x')\n"
              f"time.sleep(0.3)\ndef run():\n    return 7\n")
    forget_modules.append(cache.module_name(source))
    barrier = threading.Barrier(8)
    results: list = [None] * 8

    def first_call(n: int) -> None:
        barrier.wait()
        try:
            results[n] = cache.load_module(source).run()
        except Exception as e:  # noqa: BLE001 - reported below
            results[n] = e

    threads = [threading.Thread(target=first_call, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [7] * 8
    assert log.read_text() == "x"  # executed once


def test_first_calls_from_many_threads_all_succeed(cache_dir, monkeypatch):
    """Eight threads make the first call on a fresh kernel, released together by a barrier. Its
    module takes a while to execute (each numba decorator waits 0.1 s) and the threads arrive 20 ms
    apart, so most ask for the module while the first one's still runs (had they all arrived at
    once, each would have missed sys.modules and run a copy of its own, hiding the race)."""
    njit = numba.njit

    def slow_njit(*args, **kwargs):
        time.sleep(0.1)
        return njit(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", slow_njit)  # the generated module calls nb.njit
    kern = _tiny("cache_security_threads", scale=3).compile()
    inputs = [np.arange(5.0) + n for n in range(8)]
    barrier = threading.Barrier(len(inputs))
    results: list = [None] * len(inputs)

    def first_call(n: int) -> None:
        barrier.wait()
        time.sleep(0.02 * n)
        try:
            results[n] = kern(x=inputs[n])
        except Exception as e:  # noqa: BLE001 - reported below
            results[n] = e

    threads = [threading.Thread(target=first_call, args=(n,)) for n in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n, out in enumerate(results):
        assert not isinstance(out, Exception), f"thread {n}: {out!r}"
        np.testing.assert_allclose(out, 3 * inputs[n] + 1)
