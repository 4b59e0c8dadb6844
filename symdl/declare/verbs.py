"""The hook table behind `f.vjp()`, `f.compile()`, `f.stabilize()`, `f.verify()` and `f.stability`.

declare knows no transformation: it imports no other symdl stage. The verbs live in symdl/api.py,
which composes the stages and installs itself here when `import symdl` runs; the methods of
Formula and Program are one-line conveniences that call through this table.
"""
from __future__ import annotations

VERBS = ("vjp", "compile", "stabilize", "verify", "stability")

_TABLE: dict = {}


def install(**verbs) -> None:
    """Register the verbs (symdl.api does, on import)."""
    unknown = sorted(set(verbs) - set(VERBS))
    if unknown:
        raise ValueError(f"unknown verbs {unknown}; known: {VERBS}")
    _TABLE.update(verbs)


def call(verb: str, target, *args, **kwargs):
    """Run `verb` on `target`; a clear RuntimeError when symdl.api has not installed it."""
    fn = _TABLE.get(verb)
    if fn is None:
        raise RuntimeError(f"{type(target).__name__}.{verb} is not available: symdl.api, which "
                           f"defines the verbs, has not installed it (it does when `import symdl` "
                           f"runs; run `import symdl.api`)")
    return fn(target, *args, **kwargs)
