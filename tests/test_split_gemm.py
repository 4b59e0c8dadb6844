"""Large products split across numba's threads (backends/cpu/gemm.py, blas.matmul): every layout
BLAS reads in place, both dtypes, row and column blocks, any number of parts, against NumPy in
float64; layouts it cannot read are refused (the caller falls back to NumPy); a model whose
products are split trains as one whose products are not."""
from __future__ import annotations

import numpy as np
import pytest

import symdl
from symdl.backends.cpu import backend, blas, gemm

pytestmark = pytest.mark.skipif(not gemm.available(), reason="NumPy's BLAS here is not OpenBLAS")

SHAPES = [(1, 1, 1), (2, 3, 5), (300, 7, 2), (3, 200, 300), (64, 64, 64), (97, 31, 13),
          (2, 64, 3), (5, 700, 9), (1, 40, 1)]  # the last three cut along their sums (gemm.SUM_SPLIT)


def _layouts(x: np.ndarray, rng):
    """x as C order, Fortran order, and a block of a larger array in each order (lda > width)."""
    rows, cols = x.shape
    big = rng.normal(size=(rows + 3, cols + 5)).astype(x.dtype)
    big[1:rows + 1, 2:cols + 2] = x
    big_f = np.asfortranarray(big)
    return {"C": x.copy(), "F": np.asfortranarray(x), "block": big[1:rows + 1, 2:cols + 2],
            "F block": big_f[1:rows + 1, 2:cols + 2]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_every_layout_and_part_count_against_numpy(m, k, n, dtype):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = rng.normal(size=(m, k)).astype(dtype), rng.normal(size=(k, n)).astype(dtype)
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-4 * np.sqrt(k) if dtype == np.float32 else 1e-12 * k
    for (la, a_in), (lb, b_in) in ((p, q) for p in _layouts(a, rng).items() for q in _layouts(b, rng).items()):
        for parts in (1, 2, 3, 7):
            frame = np.full((m + 2, n + 4), 7.0, dtype=dtype)
            for out in (np.empty((m, n), dtype), frame[1:m + 1, 2:n + 2]):
                assert gemm.split_matmul(a_in, b_in, out, parts), (la, lb)
                np.testing.assert_allclose(out, want, rtol=tol, atol=tol, err_msg=f"{la} x {lb}, {parts} parts")
            assert (frame[0] == 7).all() and (frame[-1] == 7).all() and (frame[:, :2] == 7).all() \
                and (frame[:, -2:] == 7).all(), "wrote outside the output block"


@pytest.mark.parametrize("case", ["reversed rows", "every other column", "mixed dtypes", "int", "empty"])
def test_layouts_blas_cannot_read_are_refused(case):
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(4, 5)).astype(np.float32)
    out = np.zeros((6, 5), np.float32)
    if case == "reversed rows":
        a = a[::-1]
    elif case == "every other column":
        b = rng.normal(size=(4, 10)).astype(np.float32)[:, ::2]
    elif case == "mixed dtypes":
        b = b.astype(np.float64)
    elif case == "int":
        a, b, out = a.astype(np.int64), b.astype(np.int64), out.astype(np.int64)
    else:
        a, out = a[:0], out[:0]
    assert not gemm.split_matmul(a, b, out, 2)
    assert not out.any()


def test_matmul_splits_only_large_products_with_threads_to_spare(monkeypatch):
    """Split from SPLIT_WORK multiply-adds when every side is at least SPLIT_SIDE, from SPLIT_WORK_ANY
    for any shape, from SPLIT_WORK_SUM for a sum SUM_SPLIT times the output's longer side, and only
    with more than one thread; NumPy's result otherwise."""
    calls = []
    monkeypatch.setattr(blas, "split_matmul", lambda *args: calls.append(args[:3]) or False)
    rng = np.random.default_rng(2)
    side, small, thin = backend.SPLIT_SIDE, backend.SPLIT_WORK, backend.SPLIT_WORK_ANY
    cube = int(round(small ** (1 / 3))) + 1  # every side long, just past SPLIT_WORK
    assert cube >= side
    cases = [((cube, cube, cube), 2, True), ((cube, cube, cube), 1, False), ((16, 16, 16), 2, False),
             ((small // (4 * side) + 1, 4, side), 2, False),   # past SPLIT_WORK, one thin side
             ((thin // (4 * side) + 1, 4, side), 2, True),     # past SPLIT_WORK_ANY
             ((16, 4096, 16), 2, True), ((16, 4096, 16), 1, False),  # SPLIT_WORK_SUM, a long sum
             ((64, 1000, 64), 2, False)]                          # a sum not long enough for it
    assert 16 * 4096 * 16 >= backend.SPLIT_WORK_SUM and 4096 >= gemm.SUM_SPLIT * 16 and 1000 < gemm.SUM_SPLIT * 64
    for (m, k, n), threads, split in cases:
        monkeypatch.setattr(blas, "product_threads", lambda threads=threads: threads)
        a, b = rng.normal(size=(m, k)).astype(np.float32), rng.normal(size=(k, n)).astype(np.float32)
        out = np.empty((m, n), np.float32)
        calls.clear()
        blas.matmul(a, b, out)  # the split refused above: NumPy computes it
        np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
        assert len(calls) == split, ((m, k, n), threads)


def _split_count(monkeypatch, split_work: int) -> list:
    """Products from split_work multiply-adds on split in two (on any machine); the parts of each
    split that ran."""
    monkeypatch.setattr(blas, "SPLIT_WORK", split_work)
    monkeypatch.setattr(blas, "SPLIT_WORK_ANY", split_work)
    monkeypatch.setattr(blas, "product_threads", lambda: 2)
    runs, split = [], gemm.split_matmul

    def counted(a, b, out, parts):
        done = split(a, b, out, parts)
        runs.append(parts if done else 0)
        return done
    monkeypatch.setattr(blas, "split_matmul", counted)
    return runs


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_split_products_in_kernels_and_their_gradients(monkeypatch, dtype):
    """A dense layer, its gradients (transposed operands) and a convolution (a grouped product on
    gathered patches), each compiled afresh with every product split, against NumPy."""
    runs = _split_count(monkeypatch, 1)
    tol = 2e-4 if dtype == "float32" else 1e-11
    rng = np.random.default_rng(8)
    dense = symdl.formulas.get("dense").compile()
    x, w, bias = (rng.normal(size=s).astype(dtype) for s in ((37, 23), (23, 11), (11,)))
    np.testing.assert_allclose(dense(x=x, W=w, b=bias), x.astype(np.float64) @ w + bias, rtol=tol, atol=tol)
    g = rng.normal(size=(37, 11)).astype(dtype)
    grads = dense.vjp(g, wrt=["x", "W"], x=x, W=w, b=bias)
    np.testing.assert_allclose(grads["x"], g.astype(np.float64) @ w.T, rtol=tol, atol=tol)
    np.testing.assert_allclose(grads["W"], x.astype(np.float64).T @ g, rtol=tol, atol=tol)
    conv = symdl.formulas.get("conv2d").compile()
    xc, kc, bc = (rng.normal(size=s).astype(dtype) for s in ((3, 9, 8, 2), (3, 3, 2, 17), (17,)))
    want = bc + sum(np.einsum("bijc,co->bijo", xc[:, p:p + 7, q:q + 6, :].astype(np.float64), kc[p, q])
                    for p in range(3) for q in range(3))
    np.testing.assert_allclose(conv(x=xc, kernel=kc, bias=bc), want, rtol=tol, atol=tol)
    assert len(runs) >= 4 and all(parts == 2 for parts in runs), runs


def test_an_openblas_with_32_bit_integers(monkeypatch):
    """The LP64 interface (cblas_?gemm with int sizes, as system OpenBLAS builds export it), through
    SciPy's bundled OpenBLAS where SciPy is installed."""
    import ctypes
    import glob
    import os

    scipy = pytest.importorskip("scipy")
    paths = glob.glob(os.path.join(os.path.dirname(scipy.__file__), os.pardir, "scipy.libs", "*openblas*"))
    lib = next((ctypes.CDLL(p) for p in paths if hasattr(ctypes.CDLL(p), "scipy_cblas_sgemm")), None)
    if lib is None:
        pytest.skip("no LP64 OpenBLAS beside SciPy")
    address = lambda name: ctypes.cast(getattr(lib, name), ctypes.c_void_p).value  # noqa: E731
    narrow = gemm.Library(address("scipy_cblas_sgemm"), address("scipy_cblas_dgemm"), False, None)
    monkeypatch.setattr(gemm, "library", lambda: narrow)
    rng = np.random.default_rng(9)
    for dtype in (np.float32, np.float64):
        a, b = rng.normal(size=(70, 33)).astype(dtype), rng.normal(size=(33, 45)).astype(dtype)
        for a_in, b_in in ((a, b), (np.asfortranarray(a), np.asfortranarray(b))):
            out = np.empty((70, 45), dtype)
            assert gemm.split_matmul(a_in, b_in, out, 2)
            np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("path, rank", [
    ("/env/site-packages/numpy.libs/libscipy_openblas64_-32a4b2a6.so", 0),
    ("/env/site-packages/numpy/_core/libopenblas.so", 0),
    ("/usr/lib/x86_64-linux-gnu/libopenblas.so.0", 1),
    ("/env/site-packages/scipy.libs/libscipy_openblas-6cdc3b4a.so", 2),
])
def test_numpys_own_blas_ranks_before_another_packages_copy(path, rank):
    """Both wheels vendor an OpenBLAS beside each other in site-packages: NumPy's is the one whose
    threads its products start (and the one symdl must set to one thread)."""
    assert gemm._rank(path, "/env/site-packages/numpy") == rank


SCIPY_FIRST = """
import os, numpy as np
import scipy.linalg  # what numba's BLAS check loads (symdl.nn starts numba at import)
from symdl.backends.cpu import gemm
np.dot(np.ones((2, 2)), np.ones((2, 2)))
print(gemm.library().path)
"""


@pytest.mark.parametrize("seed", ["0", "1", "2", "3", "4", "5"])
def test_numpys_blas_is_found_when_scipys_is_loaded_too(seed):
    """The two were once told apart by folder alone, so a process picked SciPy's copy by its set
    order (one in two hash seeds): NumPy's own OpenBLAS kept its threads, spinning beside numba's
    (an MLP step 0.34 -> 1.6 ms)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("scipy.linalg")
    run = subprocess.run([sys.executable, "-c", SCIPY_FIRST], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONHASHSEED=seed))
    assert run.returncode == 0, run.stderr[-2000:]
    path = run.stdout.strip().splitlines()[-1]
    assert gemm._rank(path, os.path.dirname(np.__file__)) < 2, path
