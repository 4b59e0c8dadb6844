"""The cpu driver's GEMMs: `matmul` for a 2-D product (loops/ir.py `MatMul`), and `contract` for a
contraction of any rank (`Contract`): each operand's axes permuted into (rows, sums) and (sums,
cols) order and each group flattened, then one product. NumPy's reshape is a view where the
strides allow it (a transposed view goes to BLAS as a transpose flag) and one copy otherwise.

A product of at least SPLIT_WORK multiply-adds (SPLIT_WORK_ANY where a side is thin: backend.py)
is split across numba's threads (gemm.py), as many
as `product_threads()` says (runtime/threads.py installs the load-following count); every other
one is one single-threaded BLAS call. The decision is the product's own: a kernel's loops run on
threads only when they are large themselves (backend.py), since waking the pool twice for one
large product and a small bias loop cost inference ~15%."""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from .backend import SPLIT_SIDE, SPLIT_WORK, SPLIT_WORK_ANY, SPLIT_WORK_SUM
from .gemm import batched_matmul, long_sum, single_threaded_blas, split_matmul

single_threaded_blas()  # once the first kernel module loads: products use numba's threads only
product_threads = nb.get_num_threads


def matmul(a, b, out) -> None:
    """out = a @ b. np.dot into a C-contiguous output of the right type calls the same BLAS GEMM as
    np.matmul without the ufunc machinery (half a microsecond less per call, which is a tiny
    model's whole product); np.matmul takes any other output."""
    (m, k), n = a.shape, b.shape[1]
    work = m * k * n
    if (work >= SPLIT_WORK_ANY or (work >= SPLIT_WORK and min(m, k, n) >= SPLIT_SIDE)
            or (work >= SPLIT_WORK_SUM and long_sum(m, k, n))):
        threads = product_threads()
        if threads > 1 and split_matmul(a, b, out, threads):
            return
    if out.flags.c_contiguous:
        np.dot(a, b, out=out)
    else:
        np.matmul(a, b, out=out)


def contract(out, a, a_perm: tuple, b, b_perm: tuple, rows: int, batch: int = 0) -> None:
    """out[rows..., cols...] = Σ_sums a · b, with a.transpose(a_perm) = (rows..., sums...) and
    b.transpose(b_perm) = (sums..., cols...); with `batch` leading axes on all three, one such
    product per batch element."""
    a, b = a.transpose(a_perm), b.transpose(b_perm)
    if batch:
        _contract_batched(out, a, b, rows, batch)
        return
    sums = a.ndim - rows
    m, k, n = math.prod(a.shape[:rows]), math.prod(a.shape[rows:]), math.prod(b.shape[sums:])
    flat = out.reshape(m, n)
    matmul(a.reshape(m, k), b.reshape(k, n), flat)
    if not np.may_share_memory(flat, out):  # a strided output: reshape made a copy
        out[...] = flat.reshape(out.shape)


def _contract_batched(out, a, b, rows: int, batch: int) -> None:
    """out[batch..., rows..., cols...] = Σ_sums a[batch..., rows..., sums...] · b[batch..., sums..., cols...]:
    one GEMM per batch element, the elements shared among numba's threads when the products are
    large together (a batch of small products cannot be split otherwise)."""
    sums = a.ndim - batch - rows
    count, m = math.prod(a.shape[:batch]), math.prod(a.shape[batch:batch + rows])
    k, n = math.prod(a.shape[batch + rows:]), math.prod(b.shape[batch + sums:])
    a3, b3, flat = a.reshape(count, m, k), b.reshape(count, k, n), out.reshape(count, m, n)
    parallel = count > 1 and count * m * n * k >= SPLIT_WORK and product_threads() > 1
    if not batched_matmul(a3, b3, flat, parallel):
        np.matmul(a3, b3, out=flat)
    if not np.may_share_memory(flat, out):  # a strided output: reshape made a copy
        out[...] = flat.reshape(out.shape)
