"""What declare hands the later stages: immutable values.

A Formula or Program is built once, by the named steps of canonical.py, and never changes after:
the stages that work on one (autodiff, passes, runtime, verify) keep what they derive from it in
caches of their own, keyed by its `key()`, instead of writing onto it.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tensor:
    """A tensor a formula reads or writes: name, one dimension expression per axis, element kind."""

    name: str
    shape: tuple
    integer: bool = False

    @property
    def rank(self) -> int:
        return len(self.shape)


class Frozen:
    """Fields are set once, while the value is built (`_assign`); setting or deleting one later
    raises AttributeError: a stage that wants to remember something about a value keeps it itself."""

    __slots__ = ()

    def _assign(self, fields: dict) -> None:
        for attr, value in fields.items():
            object.__setattr__(self, attr, value)

    def _refuse(self, attr: str, verb: str):
        kind = type(self).__name__
        return AttributeError(f"{kind} {getattr(self, 'name', '?')!r} is immutable: cannot {verb} {attr!r}; "
                              f"build a new {kind} instead (stages keep what they derive from one in "
                              f"caches keyed by its key())")

    def __setattr__(self, attr, value):
        raise self._refuse(attr, "set")

    def __delattr__(self, attr):
        raise self._refuse(attr, "delete")
