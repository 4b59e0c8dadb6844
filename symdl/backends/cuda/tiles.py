"""Matmul tile sizes, printed into each generated module (so numba's cache, keyed on the module's
text, never reuses a kernel compiled for other sizes). No numba import: printing stays light."""
from __future__ import annotations

import os

GPU = (16, 16, 4, 4, 16)   # MM_TX, MM_TY threads; MM_TM x MM_TN outputs per thread; MM_BK deep: 64x64 tiles
SIMULATOR = (4, 4, 2, 2, 4)  # 8x8 tiles: small sizes already cross tiles and edges


def matmul_tiles() -> tuple[int, int, int, int, int]:
    """(MM_TX, MM_TY, MM_TM, MM_TN, MM_BK); SYMDL_CUDA_MATMUL="16,16,8,8,8" overrides on a GPU."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return SIMULATOR
    given = os.environ.get("SYMDL_CUDA_MATMUL")
    return tuple(int(v) for v in given.split(",")) if given else GPU


def tile_constants() -> list[str]:
    """Module-level lines defining the tile constants the matmul kernels use."""
    tx, ty, tm, tn, bk = matmul_tiles()
    bm, bn = ty * tm, tx * tn
    return [f"MM_TX, MM_TY, MM_TM, MM_TN, MM_BK = {tx}, {ty}, {tm}, {tn}, {bk}",
            f"MM_BM, MM_BN, MM_THREADS, MM_BLOCK = {bm}, {bn}, {tx * ty}, ({tx}, {ty})",
            f"MM_SHARED_A, MM_SHARED_B = ({bk}, {bm + 1}), ({bk}, {bn + 1})  # +1: no bank conflicts"]
