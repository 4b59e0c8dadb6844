"""CallPlan: what one call signature of a generated module needs, worked out once.

A Kernel call, each gradient of a Kernel.vjp, and a fused program run all make one per signature
(dtype, argument shapes, dims=, out=): after the first call with a signature, a call is the
argument checks, an allocation and `run`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backends.cpu import twins


@dataclass(frozen=True)
class CallPlan:
    bound: dict       # every dimension's length (the binder's result)
    outputs: tuple    # ((output name, shape), ...) in the generated driver's order
    values: tuple     # the dimensions' lengths in the order `run` takes them
    parallel: bool    # the backend's flavour choice at these dimensions
    run: object       # the checked module's `run`
    waiting: str | None = None  # serial until this module's parallel functions compile (twins.py)

    @property
    def out_shape(self) -> tuple:
        return self.outputs[0][1]


def waiting(module, parallel: bool) -> str | None:
    """The module's name where its call runs serially only until its parallel functions compile."""
    name = getattr(module, "__name__", None)
    return name if not parallel and name in twins.pending else None


def stale(plan) -> bool:
    """A plan made while its module waited for parallel functions that have compiled since."""
    name = getattr(plan, "waiting", None)
    return name is not None and name not in twins.pending


def signature(dtype, shapes: tuple, dims, extra=None) -> tuple:
    """A plan's cache key: the call's dtype, argument shapes, dims= and one more call option."""
    return dtype, shapes, None if dims is None else tuple(sorted(dims.items())), extra
