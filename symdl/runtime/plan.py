"""CallPlan: what one call signature of a generated module needs, worked out once.

A Kernel call, each gradient of a Kernel.vjp, and a fused program run all make one per signature
(dtype, argument shapes, dims=, out=): after the first call with a signature, a call is the
argument checks, an allocation and `run`.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CallPlan:
    bound: dict       # every dimension's length (the binder's result)
    outputs: tuple    # ((output name, shape), ...) in the generated driver's order
    values: tuple     # the dimensions' lengths in the order `run` takes them
    parallel: bool    # the backend's flavour choice at these dimensions
    run: object       # the checked module's `run`

    @property
    def out_shape(self) -> tuple:
        return self.outputs[0][1]


def signature(dtype, shapes: tuple, dims, extra=None) -> tuple:
    """A plan's cache key: the call's dtype, argument shapes, dims= and one more call option."""
    return dtype, shapes, None if dims is None else tuple(sorted(dims.items())), extra
