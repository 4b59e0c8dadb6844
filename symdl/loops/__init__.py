"""Stage 4, lower: the backend-neutral loop IR and the lowering from formulas to it."""
from .ir import LoopProgram, ScatterAdd, check, format_ir
from .lower import lower
from .trips import trip_count

__all__ = ["LoopProgram", "ScatterAdd", "check", "format_ir", "lower", "trip_count"]
