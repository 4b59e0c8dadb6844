"""Exponent-field operations on float32 for generated float32 kernels (`_exp`, `_log`).

Each is a few 32-bit LLVM instructions (bit casts, shifts, adds), which vectorise 8 lanes wide
on AVX2. Written in numba Python they would not: numba widens int32 arithmetic to int64, and
int64 <-> float32 conversions have no AVX2 instruction, so the loop falls back to 4 lanes or
scalar code. Integral values travel as float32 for the same reason.

The helpers that use these (`_exp`, `_log`) are made once per process in shared.py, and every
generated module calling them names their text's fingerprint, so numba's cache (keyed on that
file's content) sees every change to them; these live here, in an importable module, because
numba's cache pickles references to the functions a kernel calls and re-imports them in the next
process.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_I32 = ir.IntType(32)
_F32 = ir.FloatType()


def _exponent_bits(builder, n):
    """2**n as float32 bits for an int32 n in [-126, 127]: the biased exponent, shifted in place."""
    return builder.bitcast(builder.shl(builder.add(n, _I32(127)), _I32(23)), _F32)


@intrinsic
def float32_ldexp(typingctx, p, n):
    """p * 2**n for float32 p and an integral float32 n in [-252, 254] (NaN n: unspecified).

    2**n is applied as two factors 2**(n//2) and 2**(n - n//2), each a normal float32, so a result
    in the subnormal range or near overflow is rounded once, like a true ldexp."""
    if p != types.float32 or n != types.float32:
        return None

    def codegen(context, builder, signature, args):
        value, count = args
        k = builder.fptosi(count, _I32)
        half = builder.ashr(k, _I32(1))
        scaled = builder.fmul(value, _exponent_bits(builder, half))
        return builder.fmul(scaled, _exponent_bits(builder, builder.sub(k, half)))

    return types.float32(types.float32, types.float32), codegen


@intrinsic
def float32_frexp_mantissa(typingctx, x):
    """m in [0.5, 1) with x = m * 2**e, for a positive normal float32 x (its mantissa bits with the
    exponent of 0.5)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], _I32)
        bits = builder.or_(builder.and_(bits, _I32(0x007FFFFF)), _I32(0x3F000000))
        return builder.bitcast(bits, _F32)

    return types.float32(types.float32), codegen


@intrinsic
def float32_frexp_exponent(typingctx, x):
    """e with x = m * 2**e and m in [0.5, 1), as a float32, for a positive normal float32 x."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], _I32)
        field = builder.and_(builder.lshr(bits, _I32(23)), _I32(0xFF))
        return builder.sitofp(builder.sub(field, _I32(126)), _F32)

    return types.float32(types.float32), codegen
