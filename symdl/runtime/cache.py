"""The on-disk kernel cache: generated modules named by a content hash, written atomically.

Numba's `cache=True` stores machine code beside the module file and needs the module to be
importable under the same name in every process, so the name derives from the source's hash and
the module is registered in `sys.modules` before it executes (NOTES.md).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    path = Path(os.environ.get("SYMDL_CACHE_DIR") or Path.home() / ".cache" / "symdl")
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def module_name(source: str) -> str:
    return "symdl_kernel_" + hashlib.sha256(source.encode()).hexdigest()[:24]


def load_module(source: str):
    """Import the module for `source`, writing it to the cache first when it is missing or corrupt."""
    name = module_name(source)
    if name in sys.modules:
        return sys.modules[name]
    path = cache_dir() / f"{name}.py"
    data = source.encode()
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current != data:  # rewriting an intact file would change its mtime and void numba's cache
        atomic_write(path, data)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
