"""The on-disk kernel cache: generated modules named by a content hash, written atomically.

Numba's `cache=True` stores machine code beside the module file and needs the module to be
importable under the same name in every process, so the name derives from the source's hash and
the module is registered in `sys.modules` before it executes (numba finds a function's cached
machine code through its module).

The cache holds code that runs: numba unpickles its `.nbi`/`.nbc` files on a kernel's first call.
So the folder must be private (docs/security.md): owned by this user, writable by no one else, as
ssh asks of `~/.ssh`. A folder that is not is never used: symdl warns and falls back to a private
temporary cache for the rest of the process. Modules run from the source text symdl generated and
checked, compiled here, never from a `.pyc` in `__pycache__`.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib.abc
import importlib.util
import os
import pickle
import shutil
import stat
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from types import ModuleType

import sympy
from sympy.core.parameters import evaluate

from ..files import atomic_write as write_atomically
from . import ahead

PYCACHE = "__pycache__"  # where numba's in-tree cache locator puts its index and data files
_lock = threading.RLock()  # one for all loads: each runs once per kernel and dtype, in ms


class UnsafeCacheWarning(UserWarning):
    """The kernel cache folder, or a file in it, could have been written by another user."""


def _default_dir() -> Path:
    return Path(os.environ.get("SYMDL_CACHE_DIR") or Path.home() / ".cache" / "symdl")


def cache_dir() -> Path:
    """The kernel cache folder, created owner-only (0o700) when missing; a private temporary
    folder, with an UnsafeCacheWarning, when the configured one could be written by others."""
    path = _default_dir()
    with _lock:  # one fallback folder, and one warning, per configured folder
        fallback = _fallbacks.get(str(path))
        if fallback is not None:
            return fallback
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            problem = _unsafe_dir(path, follow=True) or _pycache_problem(path)
        except OSError as e:
            problem = f"it cannot be used ({type(e).__name__}: {e})"
        if problem is None:
            return path
        return _fall_back(path, problem)


# -- trust checks: owner and permission bits (POSIX only: Windows has neither os.getuid nor modes)

def _checks_apply() -> bool:
    return hasattr(os, "getuid")


def _unsafe_mode(st: os.stat_result) -> str | None:
    """Why a file or folder with this status is not trusted, or None."""
    uid = os.getuid()
    if st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):#o})"
    return None


def _unsafe_dir(path: Path, follow: bool) -> str | None:
    """Why the folder `path` is not trusted, or None. `follow`: a symbolic link to a trusted folder
    is accepted when the link itself is ours (the configured root, e.g. ~/.cache on another disk)."""
    if not _checks_apply():
        return None
    lst = path.lstat()
    if stat.S_ISLNK(lst.st_mode):
        if not follow:
            return "it is a symbolic link"
        if lst.st_uid != os.getuid():
            return f"it is a symbolic link owned by uid {lst.st_uid}, not by this user"
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    return _unsafe_mode(st)


def _pycache_problem(root: Path) -> str | None:
    """Create `root/__pycache__` owner-only before numba does (it would use the umask), or check it."""
    pycache = root / PYCACHE
    try:
        pycache.mkdir(mode=0o700)
        return None
    except FileExistsError:
        pass
    problem = _unsafe_dir(pycache, follow=False)
    return None if problem is None else f"its {PYCACHE} folder: {problem}"


def _unsafe_entry(st: os.stat_result, folder_private: bool) -> str | None:
    """Why a cache file is not trusted, or None. Group/other write bits grant nothing inside a
    folder that only we can enter (numba writes its files with the umask: 0o664 under umask 002)."""
    if not _checks_apply():
        return None
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    problem = _unsafe_mode(st)
    if problem is not None and folder_private and st.st_uid == os.getuid():
        return None
    return problem


def _is_private(folder: Path) -> bool:
    """Only the owner may enter, list or write it (the checks above already made it ours)."""
    return stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0


# -- the fallback: one private temporary folder per unusable configured folder, per process

_fallbacks: dict[str, Path] = {}


def _fall_back(path: Path, problem: str) -> Path:
    fallback = Path(tempfile.mkdtemp(prefix="symdl-cache-"))  # 0o700, ours
    (fallback / PYCACHE).mkdir(mode=0o700)
    atexit.register(shutil.rmtree, fallback, ignore_errors=True)
    _fallbacks[str(path)] = fallback
    warnings.warn(
        f"symdl: not using the kernel cache folder {path}: {problem}. Code in that folder runs in "
        f"every symdl process, so it must be owned by you and writable by no one else. Kernels "
        f"compile into the private temporary folder {fallback} for this process instead (and "
        f"compile again in every new process). Fix: `chmod -R go-w {path}` if you own it, or set "
        f"SYMDL_CACHE_DIR to a folder of your own (see docs/security.md).",
        UnsafeCacheWarning, stacklevel=3)
    return fallback


def _warn_entry(path: Path, problem: str) -> None:
    warnings.warn(f"symdl: removed the untrusted kernel cache file {path}: {problem}; it is "
                  f"rebuilt from the generated source", UnsafeCacheWarning, stacklevel=4)


def _remove_untrusted(root: Path, name: str) -> None:
    """Remove the files named for module `name` (numba's index and data in `__pycache__`, any
    `.pyc`, symdl's markers beside the source) that another user could have written, before
    anything reads them."""
    for folder in (root, root / PYCACHE):
        private = not _checks_apply() or _is_private(folder)
        for path in _named(folder, name, private):
            try:
                problem = _unsafe_entry(os.lstat(path), private)
                if problem is not None:
                    os.unlink(path)
                    _warn_entry(Path(path), problem)
            except FileNotFoundError:  # a numba temporary file another process just renamed
                continue


_listings: dict = {}  # private folder -> (its mtime when listed, {module name: [paths]})


def _named(folder: Path, name: str, private: bool) -> list:
    """The paths in `folder` named `name.*`. A folder only this user can write is listed again only
    when its entries changed (its mtime): a warm start loads dozens of modules from a folder of
    thousands of files; any other folder is listed at every call."""
    mtime = os.stat(folder).st_mtime_ns
    seen = _listings.get(folder) if private else None
    if seen is None or seen[0] != mtime:
        by_module: dict = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                by_module.setdefault(entry.name.split(".", 1)[0], []).append(entry.path)
        seen = (mtime, by_module)
        if private:
            _listings[folder] = seen
    return seen[1].get(name, [])


def _write_source(path: Path, data: bytes, folder_private: bool) -> None:
    """Make `path` hold exactly `data` in a file only we can write; leave an intact file untouched
    (rewriting it would change its mtime)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        atomic_write(path, data)
        return
    problem = _unsafe_entry(st, folder_private)
    if problem is None and path.read_bytes() == data:
        return
    atomic_write(path, data)  # replaces a symbolic link itself, never its target
    if problem is not None:
        _warn_entry(path, problem)


def atomic_write(path: Path, data: bytes) -> None:
    """`data` written atomically (files.atomic_write): created 0o600 and owned by this user."""
    write_atomically(path, lambda fh: fh.write(data))


def module_name(source: str) -> str:
    return "symdl_kernel_" + hashlib.sha256(source.encode()).hexdigest()[:24]


def is_cached(source: str) -> bool:
    """Whether loading the module for `source` compiles nothing: its file is in the cache folder
    with numba's machine code for it (an `.nbi` index in `__pycache__`), or it has no numba
    functions (a driver that only calls BLAS). An estimate for progress reports, not a check."""
    if "cache=True" not in source:
        return True
    root, name = cache_dir(), module_name(source)
    if not (root / f"{name}.py").exists():
        return False
    pycache = root / PYCACHE  # listed once while it does not change (a warm start asks per module)
    try:
        return any(p.endswith(".nbi") for p in _named(pycache, name, not _checks_apply() or _is_private(pycache)))
    except FileNotFoundError:
        return False


class _CheckedSourceLoader(importlib.abc.InspectLoader):
    """Runs the source text symdl generated, compiled here: a `.pyc` in `__pycache__` (stale or
    planted, whatever its header says) is never consulted."""

    def __init__(self, path: Path, data: bytes):
        self.path, self.data = path, data

    def get_source(self, fullname: str) -> str:  # tracebacks and inspect show the checked text
        return self.data.decode()

    def exec_module(self, module: ModuleType) -> None:
        code = compile(self.data, str(self.path), "exec", dont_inherit=True)
        exec(code, module.__dict__)


# Modules whose execution finished. sys.modules holds a module while it executes (numba needs it
# there), so other threads must not take it from sys.modules: they wait on the lock instead.
_loaded: dict[str, ModuleType] = {}


def _finished(name: str) -> ModuleType | None:
    module = _loaded.get(name)
    return module if module is not None and sys.modules.get(name) is module else None


def load_module(source: str) -> ModuleType:
    """Import the module for `source`, writing it to the cache first when it is missing, corrupt
    or untrusted. Safe to call from several threads: each sees the module only once it has run."""
    name = module_name(source)
    module = _finished(name)
    if module is not None:
        return module
    if ahead.ARMED is not None:  # a model's first step: the first module to compile forks a helper
        ahead.before_load(source)
    with _lock:
        module = _finished(name)
        if module is not None:
            return module
        root = cache_dir()
        private = not _checks_apply() or _is_private(root)
        path = root / f"{name}.py"
        data = source.encode()
        _write_source(path, data, private)
        _remove_untrusted(root, name)
        loader = _CheckedSourceLoader(path, data)
        spec = importlib.util.spec_from_file_location(name, path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        _loaded[name] = module
    ahead.loaded(module)
    return module


def loaded_modules() -> list:
    """The generated modules this process has loaded."""
    return list(_loaded.values())


def loads(data: bytes):
    """A stored value back. Its expressions were evaluated when they were derived: rebuilt without
    evaluation they are the same trees, ~10x faster (evaluating asks SymPy's assumptions afresh at
    every node; tests/test_derived_store.py compares the two over random formulas' gradients)."""
    with evaluate(False):
        return pickle.loads(data)


class DerivedStore:
    """Values a stage derived (gradient formulas, lowered programs, generated source), pickled into
    the kernel cache folder so that a new process does not derive them again. A file's name hashes
    its key, SymPy's version and the source text of `stages`, the symdl packages (or modules) whose
    code derives the values: editing that code starts afresh. Files get the trust checks of the
    modules beside them (a pickle runs code when loaded, as a module does); a file that fails
    them, or does not load, is removed and the value derived again."""

    STAGES = ("declare", "autodiff", "passes")

    def __init__(self, stages: tuple = STAGES):
        self.stages = stages
        self._code = None

    def _path(self, key) -> Path:
        if self._code is None:
            h = hashlib.sha256(sympy.__version__.encode())
            package = Path(__file__).resolve().parent.parent
            for stage in self.stages:
                where = package / stage
                for f in sorted(where.rglob("*.py")) if where.is_dir() else [where.with_suffix(".py")]:
                    h.update(str(f.relative_to(package)).encode() + f.read_bytes())
            self._code = h.hexdigest()
        digest = hashlib.sha256((self._code + repr(key)).encode()).hexdigest()[:32]
        return cache_dir() / f"symdl_derived_{digest}.pkl"

    def get(self, key):
        path = self._path(key)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        problem = _unsafe_entry(st, not _checks_apply() or _is_private(path.parent))
        try:
            if problem is None:
                return loads(path.read_bytes())
        except Exception as e:  # a torn or foreign file: derive again
            problem = f"it does not load ({type(e).__name__})"
        os.unlink(path)
        _warn_entry(path, problem)
        return None

    def put(self, key, value) -> None:
        try:
            atomic_write(self._path(key), pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        except (OSError, pickle.PicklingError, TypeError, AttributeError):
            pass  # not kept: derived again next time
