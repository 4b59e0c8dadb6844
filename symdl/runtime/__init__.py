"""Stage 6, run: kernels that check their arguments, the program runner, the on-disk cache."""
from .kernel import Kernel
from .program import ProgramKernel


def compile_formula(formula, backend="cpu", **options) -> Kernel:
    return Kernel(formula, backend, **options)


def compile_program(program, backend="cpu", **options) -> ProgramKernel:
    return ProgramKernel(program, backend, **options)


__all__ = ["Kernel", "ProgramKernel", "compile_formula", "compile_program"]
