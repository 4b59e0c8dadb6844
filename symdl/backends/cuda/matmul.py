"""The IR's MatMul step as a CUDA kernel: shared-memory tiles with register blocking.

A block of MM_TY x MM_TX threads computes an MM_BM x MM_BN tile of c = op(a) @ op(b); thread
(ty, tx) owns rows ty + r*MM_TY and columns tx + s*MM_TX (r < MM_TM, s < MM_TN), so stores are
coalesced along tx and shared-memory reads broadcast or fall in distinct banks. Each MM_BK step
loads an MM_BM x MM_BK slice of op(a) and an MM_BK x MM_BN slice of op(b) into shared memory, reading
the source along its contiguous axis whatever the transpose (a transposed operand is read as
stored: no copy), with zeros past the edges; then every thread multiplies register fragments.
The tile sizes are module constants printed by tiles.py (fixed when numba compiles).
"""
from __future__ import annotations


def matmul_source(name: str, trans_a: bool, trans_b: bool) -> str:
    """The kernel `name(c, a, b, m, n, k)`: c[m, n] = op(a)[m, k] @ op(b)[k, n]."""
    # element e of a tile: which axis varies fastest follows the operand's storage order
    if trans_a:   # a is [k, m]: consecutive threads read consecutive m
        load_a = ("kk = e // MM_BM", "rr = e % MM_BM", "a[k0 + kk, row0 + rr]")
    else:         # a is [m, k]: consecutive threads read consecutive k
        load_a = ("rr = e // MM_BK", "kk = e % MM_BK", "a[row0 + rr, k0 + kk]")
    if trans_b:   # b is [n, k]
        load_b = ("cc = e // MM_BK", "kk = e % MM_BK", "b[col0 + cc, k0 + kk]")
    else:         # b is [k, n]
        load_b = ("kk = e // MM_BN", "cc = e % MM_BN", "b[k0 + kk, col0 + cc]")
    return f'''@cuda.jit(cache=True)
def {name}(c, a, b, m, n, k):
    # c = {"a.T" if trans_a else "a"} @ {"b.T" if trans_b else "b"}: tiled, each thread an MM_TM x MM_TN block
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * MM_TX + tx
    row0 = cuda.blockIdx.y * MM_BM
    col0 = cuda.blockIdx.x * MM_BN
    sa = cuda.shared.array(MM_SHARED_A, F)
    sb = cuda.shared.array(MM_SHARED_B, F)
    acc = cuda.local.array((MM_TM, MM_TN), F)
    fa = cuda.local.array(MM_TM, F)
    fb = cuda.local.array(MM_TN, F)
    for r in range(MM_TM):
        for s in range(MM_TN):
            acc[r, s] = F(0)
    for k0 in range(0, k, MM_BK):
        for e in range(tid, MM_BM * MM_BK, MM_THREADS):
            {load_a[0]}
            {load_a[1]}
            sa[kk, rr] = {load_a[2]} if row0 + rr < m and k0 + kk < k else F(0)
        for e in range(tid, MM_BK * MM_BN, MM_THREADS):
            {load_b[0]}
            {load_b[1]}
            sb[kk, cc] = {load_b[2]} if col0 + cc < n and k0 + kk < k else F(0)
        cuda.syncthreads()
        for kk in range(MM_BK):
            for r in range(MM_TM):
                fa[r] = sa[kk, ty + r * MM_TY]
            for s in range(MM_TN):
                fb[s] = sb[kk, tx + s * MM_TX]
            for r in range(MM_TM):
                for s in range(MM_TN):
                    acc[r, s] += fa[r] * fb[s]
        cuda.syncthreads()
    for r in range(MM_TM):
        i = row0 + ty + r * MM_TY
        if i < m:
            for s in range(MM_TN):
                j = col0 + tx + s * MM_TX
                if j < n:
                    c[i, j] = acc[r, s]
'''
