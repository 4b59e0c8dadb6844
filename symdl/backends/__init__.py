"""Stage 5, backends: loop IR -> generated source, and each backend's calling convention.

`get(name)` gives the Backend object for a name; `register` adds one. A backend object is made
when a kernel asks for it (cheap: it checks its toolkit imports), so `import symdl` loads neither
numba.cuda nor any toolkit, and a missing toolkit is reported at every compile that needs it.
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


def register(name: str, make) -> None:
    """Add a backend: `make()` returns its Backend object."""
    _MAKERS[name] = make


def names() -> tuple[str, ...]:
    return tuple(_MAKERS)


def get(backend) -> Backend:
    """The Backend object for a name (or the object itself); ValueError for an unknown name."""
    if isinstance(backend, Backend):
        return backend
    if backend not in _MAKERS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {names()}")
    return _MAKERS[backend]()


__all__ = ["Backend", "get", "names", "register"]
