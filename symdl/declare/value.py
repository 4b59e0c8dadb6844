"""What declare hands the later stages: values."""
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
