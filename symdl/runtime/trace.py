"""Recording the kernel launches a stretch of Python makes (symdl.nn replays a training step).

While `recording()` is open, every host-memory launch of a Kernel, a Kernel.vjp gradient, a
FusedKernel and a SystemKernel appends a `Launch`: the generated `run` it called, its output
arrays, its other arguments as passed (arrays and numbers, with their names) and the plan's
parallel choice. Nothing is recorded otherwise (one global read per launch).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

RECORDING: list | None = None


@dataclass(frozen=True)
class Launch:
    run: object        # the generated module's run(outputs..., inputs..., dims..., parallel)
    outputs: tuple     # the arrays `run` writes
    inputs: tuple      # the arrays and numbers it reads, in order (dimension lengths last)
    names: tuple       # the inputs' names (a dimension's name for a length)
    parallel: bool     # the plan's choice; the backend's flavour applies it per call
    gathers: bool      # the kernel reads through integer tensors (its call checks their range)
    what: str          # the kernel's name, for messages and the generated step's comments


@contextmanager
def recording():
    """Collect the launches made inside the block into the yielded list."""
    global RECORDING
    outer, RECORDING = RECORDING, []
    try:
        yield RECORDING
    finally:
        RECORDING = outer


def note(run, outputs, inputs, names, parallel: bool, gathers, what: str) -> None:
    RECORDING.append(Launch(run, tuple(outputs), tuple(inputs), tuple(names), bool(parallel), bool(gathers), what))
