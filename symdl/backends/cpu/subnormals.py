"""The floating-point mode a kernel computes in: subnormals (|x| < 1.18e-38 in float32) kept, as IEEE
754 says, or flushed to zero (FTZ: results; DAZ: inputs), on every thread a kernel runs on.

Why it matters: an x86 core takes ~100 cycles for an operation on a subnormal. Training makes them:
Adam's first moment m decays by beta1 for every weight whose gradient is zero (a dead ReLU unit),
and rounding to nearest never takes it below the smallest subnormal, so after ~1,000 steps part of
m is subnormal for good. The E2 MLP's step went from 0.26 to 0.66 ms that way (2-core Xeon, 3,000
steps on one batch; 7,056 of the first layer's 50,176 m values subnormal).

The mode is the caller's: the serial flavour computes in the calling thread's mode, and the
parallel flavour hands the caller's mode to each thread for its part (`fp_mode` / `set_fp_mode`
around every part: codegen.py, gemm.py), since a thread of numba's pool keeps the mode it was started
with. So the two flavours always agree, and `runtime/floats.py flush_subnormals()` (entered by every
symdl.nn call) flushes in a training step and nowhere else.

On x86-64 the mode is MXCSR's FTZ and DAZ bits; elsewhere `fp_mode` is 0 and `set_fp_mode` does
nothing (subnormals are kept).
"""
from __future__ import annotations

import platform

import numba as nb
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

FLUSH = 0x8040  # MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6)
X86_64 = platform.machine().lower() in ("x86_64", "amd64")

_I32 = ir.IntType(32)


def _mxcsr(builder, name: str, slot) -> None:
    """llvm.x86.sse.stmxcsr / ldmxcsr on the 32-bit `slot`."""
    byte_ptr = ir.IntType(8).as_pointer()
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [byte_ptr]), name)
    builder.call(fn, [builder.bitcast(slot, byte_ptr)])


@intrinsic
def fp_mode(typingctx):
    """The calling thread's floating-point mode (MXCSR), as an int64; 0 off x86-64."""
    def codegen(context, builder, signature, args):
        if not X86_64:
            return ir.Constant(ir.IntType(64), 0)
        slot = cgutils.alloca_once(builder, _I32)
        _mxcsr(builder, "llvm.x86.sse.stmxcsr", slot)
        return builder.zext(builder.load(slot), ir.IntType(64))

    return types.int64(), codegen


@intrinsic
def set_fp_mode(typingctx, mode):
    """Make `mode` (from fp_mode) the calling thread's floating-point mode; nothing off x86-64."""
    if mode != types.int64:
        return None

    def codegen(context, builder, signature, args):
        if X86_64:
            slot = cgutils.alloca_once(builder, _I32)
            builder.store(builder.trunc(args[0], _I32), slot)
            _mxcsr(builder, "llvm.x86.sse.ldmxcsr", slot)
        return context.get_dummy_value()

    return types.void(types.int64), codegen


@nb.njit(cache=True)
def enter_flushing() -> int:
    """Flush subnormals in the calling thread from now on; returns the mode to restore."""
    mode = fp_mode()
    set_fp_mode(mode | FLUSH)
    return mode


@nb.njit(cache=True)
def restore(mode: int) -> None:
    """Put back the calling thread's mode `mode` (from enter_flushing)."""
    set_fp_mode(mode)


@nb.njit(cache=True)
def current() -> int:
    """The calling thread's mode (from Python)."""
    return fp_mode()
