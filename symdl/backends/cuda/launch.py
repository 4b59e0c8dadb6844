"""Launch configuration for generated CUDA modules (imported by them, never by `import symdl`).

Real GPUs get blocks of 256 threads (matmul tiles: tiles.py). The simulator runs every GPU thread
as a Python thread, so there the same kernels launch few, small blocks: that keeps the tests fast
and still crosses block, tile and grid-stride boundaries at small sizes.
"""
from __future__ import annotations

from numba import config, cuda

SIMULATOR = bool(config.ENABLE_CUDASIM)

THREADS = 8 if SIMULATOR else 256  # threads per block of an elementwise (one thread per output) kernel
MAX_BLOCKS = 2 if SIMULATOR else 4096  # grid-stride loops cover the rest (4096 ≈ 30 blocks per H100 SM)
RED_THREADS = 8 if SIMULATOR else 256  # threads per block of a reduction: a power of two (tree reduction)
RED_BLOCKS = 2 if SIMULATOR else 1024  # blocks that write partial sums (the final kernel adds them)
SPLIT_THREADS = 16 if SIMULATOR else 1 << 16  # threads that keep a GPU busy: fewer outputs split their sums
SPLIT_TERMS = 2 if SIMULATOR else 64  # terms each thread of a split sum adds at least


def launch_grid(n: int, threads: int = THREADS, cap: int = MAX_BLOCKS) -> tuple[int, int]:
    """(blocks, threads) for n work items: one thread per item up to `cap` blocks, grid-stride beyond.
    Small problems get one small block (a multiple of a warp on a GPU)."""
    if n <= threads:
        warp = 1 if SIMULATOR else 32
        return 1, max(warp, -(-n // warp) * warp)
    return min(-(-n // threads), cap), threads


def reduction_blocks(n: int) -> int:
    """Blocks of RED_THREADS threads for a reduction over n items (each block writes one partial sum)."""
    return max(1, min(-(-n // RED_THREADS), RED_BLOCKS))


def split_chunks(outputs: int, terms: int) -> int:
    """Chunks each output's sums split into (split.py): 1 (no split) when the outputs alone give
    SPLIT_THREADS threads or the sums are short; else enough chunks for SPLIT_THREADS threads, each
    adding at least SPLIT_TERMS terms."""
    if outputs <= 0 or outputs >= SPLIT_THREADS or terms < 2 * SPLIT_TERMS:
        return 1
    return max(1, min(-(-SPLIT_THREADS // outputs), terms // SPLIT_TERMS))


def matmul_grid(m: int, n: int, bm: int, bn: int) -> tuple[int, int]:
    """Blocks for an m x n product in bm x bn tiles (the module's MM_BM, MM_BN)."""
    return -(-n // bn) or 1, -(-m // bm) or 1


__all__ = ["cuda", "launch_grid", "reduction_blocks", "split_chunks", "matmul_grid", "SIMULATOR", "THREADS", "RED_THREADS"]
