"""The cpu driver's GEMMs: `matmul` for a 2-D product (loops/ir.py `MatMul`), and `contract` for a
contraction of any rank (`Contract`): each operand's axes permuted into (rows, sums) and (sums,
cols) order and each group flattened, then one product. NumPy's reshape is a view where the
strides allow it (a transposed view goes to BLAS as a transpose flag) and one copy otherwise."""
from __future__ import annotations

import math

import numpy as np


def matmul(a, b, out) -> None:
    """out = a @ b. np.dot into a C-contiguous output of the right type calls the same BLAS GEMM as
    np.matmul without the ufunc machinery (half a microsecond less per call, which is a tiny
    model's whole product); np.matmul takes any other output."""
    if out.flags.c_contiguous:
        np.dot(a, b, out=out)
    else:
        np.matmul(a, b, out=out)


def contract(out, a, a_perm: tuple, b, b_perm: tuple, rows: int) -> None:
    """out[rows..., cols...] = Σ_sums a · b, with a.transpose(a_perm) = (rows..., sums...) and
    b.transpose(b_perm) = (sums..., cols...)."""
    a, b = a.transpose(a_perm), b.transpose(b_perm)
    sums = a.ndim - rows
    m, k, n = math.prod(a.shape[:rows]), math.prod(a.shape[rows:]), math.prod(b.shape[sums:])
    flat = out.reshape(m, n)
    matmul(a.reshape(m, k), b.reshape(k, n), flat)
    if not np.may_share_memory(flat, out):  # a strided output: reshape made a copy
        out[...] = flat.reshape(out.shape)
