"""The documents' formula catalog (installed as `symdl.formulas`), one module per topic.

Each entry is a zero-argument builder registered under a name with the code of the formula it
implements (F1-F17, explained in docs/catalog.md):

    >>> from symdl import formulas
    >>> formulas.get("dense_relu")          # a Formula or a Program
    >>> formulas.names()                    # every entry, in catalog order

Some modules also hold builders that are not entries: the formulas symdl.nn's layers and losses
build from the entries' builders (each module's docstring names them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Entry:
    name: str
    ref: str  # the formula it implements, e.g. "F3" (docs/catalog.md)
    summary: str
    build: Callable


_CATALOG: dict[str, Entry] = {}
_BUILT: dict = {}


def entry(name: str, ref: str, summary: str):
    """Register a builder in the catalog."""
    def register(build):
        if name in _CATALOG:
            raise ValueError(f"catalog entry {name!r} registered twice")
        _CATALOG[name] = Entry(name, ref, summary, build)
        return build
    return register


def get(name: str):
    """The Formula or Program registered under `name` (built once), after the stability rewrites
    (`symdl.passes.stabilize`; the verifier proves each one, `symdl show NAME` lists them)."""
    _load()
    if name not in _CATALOG:
        raise KeyError(f"no catalog formula {name!r}; known: {', '.join(_CATALOG)}")
    if name not in _BUILT:  # registered stabilized: the builders declare the naive forms
        from symdl.passes import stabilize
        _BUILT[name] = stabilize(_CATALOG[name].build())
    return _BUILT[name]


def names() -> list[str]:
    _load()
    return list(_CATALOG)


def entries() -> list[Entry]:
    _load()
    return list(_CATALOG.values())


def _load():
    from . import (activations, attention, autoencoder, conv, dense, gan, gated, losses,  # noqa: F401
                   optimizers, pooling, regression, regularizers, rnn, tensor_ops)
