"""Stage 5, backends: loop IR -> generated source, and each backend's calling convention.

`get(name)` gives the Backend object for a name; `register` adds one. A backend is made on first
use, so `import symdl` loads neither numba.cuda nor any toolkit.
"""
from __future__ import annotations

from .base import Backend


def _cpu() -> Backend:
    from .cpu.backend import CpuBackend
    return CpuBackend()


def _cuda() -> Backend:
    from .cuda.backend import CudaBackend  # ImportError naming symdl[cuda] without numba-cuda
    return CudaBackend()


_MAKERS = {"cpu": _cpu, "cuda": _cuda}
_MADE: dict[str, Backend] = {}


def register(name: str, make) -> None:
    """Add a backend: `make()` returns its Backend object (called once, on first use)."""
    _MAKERS[name] = make
    _MADE.pop(name, None)


def names() -> tuple[str, ...]:
    return tuple(_MAKERS)


def get(backend) -> Backend:
    """The Backend object for a name (or the object itself); ValueError for an unknown name."""
    if isinstance(backend, Backend):
        return backend
    if backend not in _MAKERS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {names()}")
    if backend not in _MADE:
        _MADE[backend] = _MAKERS[backend]()
    return _MADE[backend]


__all__ = ["Backend", "get", "names", "register"]
