"""Stage 3, transform: pure passes over formulas (stability rewrites; GEMM detection lives in
contraction.py and runs inside lowering)."""
from .stability import Rewrite, Stabilized, stabilize

__all__ = ["Rewrite", "Stabilized", "stabilize"]
