"""Shared by tests/test_kernel_calls_*.py: the formulas under test (defined here so catalog edits
do not move those tests), their compiled kernels as module-scoped fixtures, argument builders, and
`refused`, the check that a bad call raises a ValueError naming the formula and the tensors.

"Before any kernel runs" is checked by passing a preallocated `out=` filled with SENTINEL (or an
input as `out=`) and asserting it is untouched after the refusal.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

from symdl import Formula

B, N, M, C = sp.symbols("B N M C", integer=True, positive=True)
SENTINEL = 7.25


def dense_formula() -> Formula:
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, b, y = (sp.IndexedBase(n) for n in "x W b y".split())
    return Formula(sp.Eq(y[i, j], sp.Sum(x[i, k] * W[k, j], k) + b[j]), name="dense")


def sparse_ce_formula() -> Formula:
    bb = sp.Idx("b", B)
    p, t = sp.IndexedBase("p", shape=(B, C)), sp.IndexedBase("t", integer=True)
    return Formula(sp.Eq(sp.Symbol("L"), -sp.Sum(sp.log(p[bb, t[bb]]), bb) / B), name="sparse_ce")


@pytest.fixture(scope="module")
def dense():
    return dense_formula().compile()


@pytest.fixture(scope="module")
def sparse_ce():
    return sparse_ce_formula().compile()


def dense_args(bsz=4, n=3, m=2, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((bsz, n)).astype(dtype),
            "W": rng.standard_normal((n, m)).astype(dtype),
            "b": rng.standard_normal(m).astype(dtype)}


def ce_args(bsz=4, c=5, seed=0, label_dtype=np.int64):
    rng = np.random.default_rng(seed)
    return {"p": rng.uniform(0.05, 1.0, (bsz, c)), "t": rng.integers(0, c, bsz).astype(label_dtype)}


def sentinel(shape, dtype=np.float64):
    return np.full(shape, SENTINEL, dtype=dtype)


def refused(call, formula: str, *tensors: str, **kwargs) -> ValueError:
    """`call()` raises ValueError whose message names the formula and each tensor (quoted or as a
    whole word)."""
    with pytest.raises(ValueError) as info:
        call(**kwargs)
    msg = str(info.value)
    assert repr(formula) in msg, f"formula {formula!r} missing from: {msg}"
    for t in tensors:
        assert re.search(rf"(?<![\w.]){re.escape(t)}(?!\w)", msg), f"tensor {t!r} missing from: {msg}"
    return info.value
