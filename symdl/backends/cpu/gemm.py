"""Large matrix products split across numba's threads, each block one single-threaded OpenBLAS GEMM.

Why not OpenBLAS's own threads: NumPy's OpenBLAS keeps a thread pool of its own whose idle worker
spins for a long while (~0.1 s) after every threaded call. Beside numba's pool (the parallel loops)
that made two pools on the same cores, and in some processes a step ran 1.5-2x slower throughout
(measured on the 2-core machine, one process at a time, quiet: E1's CIFAR step 44-76 ms with
OpenBLAS's threads, 34-42 ms split here; the E2 MLP 0.18 or 0.40 ms by process while OpenBLAS's
worker spun, always 0.18 ms without it). So OpenBLAS runs single-threaded in a symdl process
(`single_threaded_blas`, called where symdl sets its thread count: runtime/threads.py) and a large
product is cut here into one block per numba thread: rows where op(a) is the larger operand to
repack, columns otherwise (each block repacks the whole other operand).

The GEMM is called from numba code through its address (`_cblas_gemm`, an intrinsic), so the split
function takes no ctypes object and numba caches it like any other. `available()` is False where
NumPy's BLAS is not OpenBLAS (MKL, Accelerate): products then go to NumPy as before.
"""
from __future__ import annotations

import ctypes
import functools
import os

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .subnormals import fp_mode, set_fp_mode

# CBLAS constants
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
SUM_SPLIT = 16  # a product is cut along its sum where that is this many times its output's longer side


def long_sum(m: int, k: int, n: int) -> bool:
    """Whether an m x k by k x n product is cut along its sum (SUM_SPLIT) when it is split."""
    return k >= SUM_SPLIT * max(m, n)

# OpenBLAS's symbols: (single, double, thread setter, 64-bit integers) as NumPy's wheels
# (scipy-openblas, ILP64) and system builds (LP64) name them
_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "scipy_openblas_set_num_threads64_", True),
            ("cblas_sgemm64_", "cblas_dgemm64_", "openblas_set_num_threads64_", True),
            ("scipy_cblas_sgemm", "scipy_cblas_dgemm", "scipy_openblas_set_num_threads", False),
            ("cblas_sgemm", "cblas_dgemm", "openblas_set_num_threads", False))


class Library:
    """NumPy's OpenBLAS: the GEMMs' addresses, whether they take 64-bit integers, its thread setter."""

    def __init__(self, sgemm: int, dgemm: int, wide: bool, set_threads, path: str = ""):
        self.sgemm, self.dgemm, self.wide, self.set_threads = sgemm, dgemm, wide, set_threads
        self.path = path


@functools.cache
def library() -> Library | None:
    """NumPy's OpenBLAS, found among the libraries this process loaded (None: another BLAS)."""
    np.dot(np.ones((2, 2)), np.ones((2, 2)))  # NumPy loads its BLAS on first use
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line}
    except OSError:  # not Linux
        return None
    for path in sorted(paths, key=lambda p: (_rank(p, os.path.dirname(np.__file__)), p)):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for single, double, setter, wide in _SYMBOLS:
            if all(hasattr(lib, s) for s in (single, double, setter)):
                set_threads = getattr(lib, setter)
                set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
                address = lambda name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value  # noqa: E731
                return Library(address(single), address(double), wide, set_threads, path)
    return None


def _rank(path: str, numpy_package: str) -> int:
    """0 for NumPy's own BLAS (in its package, or the `numpy.libs` folder a wheel vendors it in),
    2 for another package's vendored copy (SciPy's `scipy.libs`, loaded by numba's BLAS check: its
    threads are not the ones NumPy's products start), 1 for a system library."""
    if path.startswith((numpy_package + os.sep, numpy_package + ".libs" + os.sep)):
        return 0
    return 2 if ".libs" + os.sep in path else 1


def available() -> bool:
    return library() is not None


def single_threaded_blas() -> bool:
    """OpenBLAS to one thread (its worker then sleeps for good); False where the split is not
    available (the BLAS keeps its own threads)."""
    lib = library()
    if lib is None:
        return False
    lib.set_threads(1)
    return True


def _call(builder, address, int_type, float_type, args):
    """Emit cblas_?gemm(args) through `address`, with CBLAS's enums as int and the rest converted."""
    i32, ptr = ir.IntType(32), ir.IntType(8).as_pointer()
    kinds = (i32, i32, i32, int_type, int_type, int_type, float_type, ptr, int_type, ptr, int_type, float_type,
             ptr, int_type)
    values = []
    for kind, value in zip(kinds, args, strict=True):
        if kind is ptr:
            value = builder.inttoptr(value, ptr)
        elif isinstance(kind, ir.IntType) and kind.width < 64:
            value = builder.trunc(value, kind)
        elif isinstance(kind, ir.FloatType):  # float32 GEMM: alpha, beta from float64
            value = builder.fptrunc(value, kind)
        values.append(value)
    fn = builder.inttoptr(address, ir.FunctionType(ir.VoidType(), kinds).as_pointer())
    builder.call(fn, values)


@intrinsic
def _cblas_gemm(typingctx, address, single, wide, order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                c, ldc):
    """cblas_sgemm (single != 0) or cblas_dgemm at `address`, with 64-bit (wide != 0) or 32-bit
    integers: pointers and sizes arrive as int64, alpha and beta as float64."""
    ints = (address, single, wide, order, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
    if any(t != types.int64 for t in ints) or alpha != types.float64 or beta != types.float64:
        return None
    sig = types.void(address, single, wide, order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        address, single, wide, *rest = args
        zero = ir.Constant(ir.IntType(64), 0)
        for is_single, float_type in ((True, ir.FloatType()), (False, ir.DoubleType())):
            take = builder.icmp_signed("!=" if is_single else "==", single, zero)
            with builder.if_then(take):
                with builder.if_else(builder.icmp_signed("!=", wide, zero)) as (wide_ints, narrow_ints):
                    with wide_ints:
                        _call(builder, address, ir.IntType(64), float_type, rest)
                    with narrow_ints:
                        _call(builder, address, ir.IntType(32), float_type, rest)
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(cache=True, parallel=True)
def _split(address, single, wide, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, item, parts, by_rows):
    """c = op(a) @ op(b) (row-major, leading dimensions lda, ldb, ldc; pointers as integers), one
    block of rows or of columns per part, each in the caller's floating-point mode (subnormals.py)."""
    mode = fp_mode()
    for p in nb.prange(parts):
        own = fp_mode()
        set_fp_mode(mode)
        if by_rows:
            lo, hi = m * p // parts, m * (p + 1) // parts
            a_at = a + lo * (1 if trans_a == TRANS else lda) * item
            _cblas_gemm(address, single, wide, ROW_MAJOR, trans_a, trans_b, hi - lo, n, k, 1.0, a_at, lda, b, ldb,
                        0.0, c + lo * ldc * item, ldc)
        else:
            lo, hi = n * p // parts, n * (p + 1) // parts
            b_at = b + lo * (ldb if trans_b == TRANS else 1) * item
            _cblas_gemm(address, single, wide, ROW_MAJOR, trans_a, trans_b, m, hi - lo, k, 1.0, a, lda, b_at, ldb,
                        0.0, c + lo * item, ldc)
        set_fp_mode(own)


@nb.njit(cache=True, parallel=True)
def _split_sum(address, single, wide, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, item, parts):
    """c[p] = the product over the p-th stretch of the sum (c: `parts` contiguous m x n blocks),
    each in the caller's floating-point mode."""
    mode = fp_mode()
    for p in nb.prange(parts):
        own = fp_mode()
        set_fp_mode(mode)
        lo, hi = k * p // parts, k * (p + 1) // parts
        a_at = a + lo * (lda if trans_a == TRANS else 1) * item
        b_at = b + lo * (1 if trans_b == TRANS else ldb) * item
        _cblas_gemm(address, single, wide, ROW_MAJOR, trans_a, trans_b, m, n, hi - lo, 1.0, a_at, lda, b_at, ldb,
                    0.0, c + p * m * n * item, n)
        set_fp_mode(own)


@nb.njit(cache=True)
def _batched_serial(address, single, wide, trans_a, trans_b, m, n, k, a, lda, step_a, b, ldb, step_b, c, ldc, step_c,
                    count):
    """c[p] = op(a[p]) @ op(b[p]) for p < count, the matrices `step_*` bytes apart."""
    for p in range(count):
        _cblas_gemm(address, single, wide, ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a + p * step_a, lda,
                    b + p * step_b, ldb, 0.0, c + p * step_c, ldc)


@nb.njit(cache=True, parallel=True)
def _batched_parallel(address, single, wide, trans_a, trans_b, m, n, k, a, lda, step_a, b, ldb, step_b, c, ldc,
                      step_c, count):
    """As _batched_serial, the products shared among numba's threads, each computed in the caller's
    floating-point mode (subnormals.py)."""
    mode = fp_mode()
    for p in nb.prange(count):
        own = fp_mode()
        set_fp_mode(mode)
        _cblas_gemm(address, single, wide, ROW_MAJOR, trans_a, trans_b, m, n, k, 1.0, a + p * step_a, lda,
                    b + p * step_b, ldb, 0.0, c + p * step_c, ldc)
        set_fp_mode(own)


def batched_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, parallel: bool) -> bool:
    """out[p] = a[p] @ b[p] for every p (3-D arrays), one single-threaded GEMM each, on numba's
    threads when `parallel`; False (nothing done) where the layouts, dtypes or library do not allow it."""
    lib = library()
    if lib is None or not (a.dtype == b.dtype == out.dtype and a.dtype.char in "fd") or 0 in a.shape + b.shape:
        return False
    op_a, op_b = _operand(a[0]), _operand(b[0])
    item = out.itemsize
    if (op_a is None or op_b is None or out.strides[2] != item or out.strides[1] % item
            or any(x.strides[0] % item for x in (a, b, out))):
        return False
    (count, m, k), n = a.shape, b.shape[2]
    single = a.dtype.char == "f"
    pointer = lambda x: x.__array_interface__["data"][0]  # noqa: E731
    run = _batched_parallel if parallel else _batched_serial
    run(lib.sgemm if single else lib.dgemm, int(single), int(lib.wide), op_a[0], op_b[0], m, n, k,
        pointer(a), op_a[1], a.strides[0], pointer(b), op_b[1], b.strides[0], pointer(out), out.strides[1] // item,
        out.strides[0], count)
    return True


def _operand(x: np.ndarray):
    """(transpose code, leading dimension) of a 2-D operand BLAS reads in place, or None."""
    item = x.itemsize
    rows, cols = x.strides
    if cols == item and rows % item == 0 and rows // item >= max(x.shape[1], 1):
        return NO_TRANS, rows // item
    if rows == item and cols % item == 0 and cols // item >= max(x.shape[0], 1):
        return TRANS, cols // item
    return None


def split_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray, parts: int) -> bool:
    """out = a @ b in `parts` blocks on numba's threads; False (nothing done) where the layouts,
    dtypes or library do not allow it."""
    lib = library()
    if lib is None or not (a.dtype == b.dtype == out.dtype and a.dtype.char in "fd"):
        return False
    op_a, op_b = _operand(a), _operand(b)
    if op_a is None or op_b is None or out.strides[1] != out.itemsize or out.strides[0] % out.itemsize:
        return False
    (m, k), n = a.shape, b.shape[1]
    if min(m, n, k) == 0:
        return False
    single = a.dtype.char == "f"
    pointer = lambda x: x.__array_interface__["data"][0]  # noqa: E731
    if long_sum(m, k, n) and parts > 1:  # a long sum into a small output: cut the sum
        parts = min(parts, k)
        partial = np.empty((parts, m, n), out.dtype)
        _split_sum(lib.sgemm if single else lib.dgemm, int(single), int(lib.wide), op_a[0], op_b[0], m, n, k,
                   pointer(a), op_a[1], pointer(b), op_b[1], pointer(partial), out.itemsize, parts)
        np.sum(partial, axis=0, out=out)
        return True
    by_rows = m * k >= k * n  # repack the smaller operand in every block
    parts = max(1, min(parts, m if by_rows else n))
    _split(lib.sgemm if single else lib.dgemm, int(single), int(lib.wide), op_a[0], op_b[0], m, n, k,
           pointer(a), op_a[1], pointer(b), op_b[1], pointer(out), out.strides[0] // out.itemsize, out.itemsize,
           parts, by_rows)
    return True
