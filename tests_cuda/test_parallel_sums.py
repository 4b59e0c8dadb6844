"""The cuda backend's parallel sums (issue 14), by class against NumPy written here, float32 and
float64, shapes that cross the simulator's blocks (8 threads, 2 blocks) and its edges:

- scatter-adds (a gather's gradient, max pooling's) one thread per scattered source element with
  atomic adds, colliding targets included (repeated tokens, overlapping windows); the atomic-free
  paths under SYMDL_CUDA_DETERMINISTIC=1;
- sums over everything (no output loop) at lengths 0, 1, a block, not a multiple of one, past the grid;
- sums down columns split across threads when columns are few (launch.split_chunks chooses);
- fused optimizer steps: one kernel per parameter writing the weight and every state.
"""
from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import formulas
from symdl.backends.cuda import launch
from symdl.formulas.pooling import pool2d

B, S, N, M = sp.symbols("B S N M", integer=True, positive=True)
RNG = np.random.default_rng(14)
DTYPES = [np.float32, np.float64]
TOL = {np.float32: 3e-5, np.float64: 1e-12}


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def close(got, want, dtype):
    np.testing.assert_allclose(host(got), want, rtol=TOL[dtype], atol=TOL[dtype] * max(1.0, np.abs(want).max(initial=0)))


def _embedding_grad(g, tok, rows):
    want = np.zeros((rows, g.shape[-1]), dtype=np.float64)
    for b in range(tok.shape[0]):
        for s in range(tok.shape[1]):
            want[tok[b, s]] += g[b, s]
    return want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 7, 5), (2, 9, 1, 3), (1, 1, 4, 1), (4, 5, 3, 17)])
def test_embedding_gradient_atomic(shape, dtype):
    """(B, S, V, D); V = 1: every token adds into one row (every thread collides)."""
    b, s, v, d = shape
    kern = formulas.get("embedding").compile(backend="cuda")
    tok = RNG.integers(0, v, (b, s))
    E = RNG.standard_normal((v, d)).astype(dtype)
    g = RNG.standard_normal((b, s, d)).astype(dtype)
    close(kern(E=E, tok=tok), E[tok], dtype)
    close(kern.vjp(g, E=E, tok=tok)["E"], _embedding_grad(g.astype(np.float64), tok, v), dtype)
    source = formulas.get("embedding").vjp()["E"].compile(backend="cuda").source(np.dtype(dtype).name)
    assert "cuda.atomic.add(grad_E, (tok[b, s], d), " in source and "_serial" not in source


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_dimensional_gather_gradient(dtype):
    """y[i] = x[idx[i]]: a scatter into a vector (an atomic add with a scalar index)."""
    i = sp.Idx("i", N)
    x, y, idx = sp.IndexedBase("x", shape=(M,)), sp.IndexedBase("y"), sp.IndexedBase("idx", integer=True)
    f = symdl.Formula(sp.Eq(y[i], x[idx[i]]), name="gather_1d")
    grad = f.vjp()["x"]
    source = grad.compile(backend="cuda").source(np.dtype(dtype).name)
    assert "cuda.atomic.add(grad_x, " in source
    kern = f.compile(backend="cuda")
    for n, m in ((23, 5), (1, 1), (6, 40)):
        xv = RNG.standard_normal(m).astype(dtype)
        iv = RNG.integers(0, m, n)
        g = RNG.standard_normal(n).astype(dtype)
        want = np.zeros(m)
        np.add.at(want, iv, g.astype(np.float64))
        close(kern.vjp(g, x=xv, idx=iv)["x"], want, dtype)


def _max_pool_grad(x, g, size, stride):
    """Each window's gradient to its first arg-max (row-major), windows of `size`, `stride`, valid."""
    (ph, pw), (sh, sw) = size, stride
    want = np.zeros(x.shape)
    for b in range(g.shape[0]):
        for i in range(g.shape[1]):
            for j in range(g.shape[2]):
                for c in range(g.shape[3]):
                    window = x[b, sh * i:sh * i + ph, sw * j:sw * j + pw, c]
                    u, v = np.unravel_index(np.argmax(window), window.shape)
                    want[b, sh * i + u, sw * j + v, c] += g[b, i, j, c]
    return want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size, stride, shape", [((2, 2), (2, 2), (2, 5, 6, 3)), ((3, 3), (2, 2), (2, 7, 5, 2)),
                                                 ((3, 2), (1, 1), (1, 4, 4, 3))])
def test_max_pool_gradient_atomic(size, stride, shape, dtype):
    """Overlapping windows (3x3 stride 2, stride 1) share cells: their adds collide."""
    f = pool2d("max", size, stride, "valid", name=f"cuda_pool_{size[0]}{size[1]}_{stride[0]}")
    kern = f.compile(backend="cuda")
    x = RNG.standard_normal(shape).astype(dtype)
    x[0, 0, :2, 0] = 1.5  # a tie: the first arg-max takes it
    y = host(kern(x=x))
    g = RNG.standard_normal(y.shape).astype(dtype)
    close(kern.vjp(g, x=x)["x"], _max_pool_grad(x.astype(np.float64), g.astype(np.float64), size, stride), dtype)
    source = f.vjp()["x"].compile(backend="cuda").source(np.dtype(dtype).name)
    assert "cuda.atomic.add(grad_x, (b, " in source and "_serial" not in source


def test_deterministic_mode_has_no_atomics(monkeypatch):
    """SYMDL_CUDA_DETERMINISTIC=1: the same results, no atomic adds, the choice printed (so the
    cached modules differ)."""
    monkeypatch.setenv("SYMDL_CUDA_DETERMINISTIC", "1")
    emb = formulas.get("embedding")
    grad = emb.vjp()["E"].compile(backend="cuda")
    pool = pool2d("max", (3, 3), (2, 2), "valid", name="cuda_pool_exact").vjp()["x"].compile(backend="cuda")
    for kern in (grad, pool):
        source = kern.source("float64")
        assert "cuda.atomic" not in source and "SYMDL_CUDA_DETERMINISTIC=1" in source
    assert "scatter_serial[1, 1]" in grad.source() and "scatter_kernel[launch_grid(max(0, B))]" in pool.source()
    tok = RNG.integers(0, 3, (4, 5))
    g = RNG.standard_normal((4, 5, 2))
    close(grad(grad_out=g, tok=tok, dims={"V": 3}), _embedding_grad(g, tok, 3), np.float64)
    x = RNG.standard_normal((2, 7, 5, 2))
    gy = RNG.standard_normal((2, 3, 2, 2))
    close(pool(grad_y=gy, x=x), _max_pool_grad(x, gy, (3, 3), (2, 2)), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sum_over_everything_any_length(dtype):
    """A scalar sum (partials per block, then one block adds them): empty, one element, a block,
    not a multiple of one, beyond the grid (grid-stride)."""
    i, j = sp.Idx("i", N), sp.Idx("j", M)
    x = sp.IndexedBase("x")
    kern = symdl.Formula(sp.Eq(sp.Symbol("L"), sp.Sum(x[i, j] ** 2, i, j)), name="cuda_sum_all").compile(backend="cuda")
    assert "_partial" in kern.source() and "_final[1, RED_THREADS]" in kern.source()
    cap = launch.RED_THREADS * launch.RED_BLOCKS
    for shape in ((0, 3), (1, 1), (1, launch.RED_THREADS), (3, 5), (2, cap + 3), (7, 11)):
        a = RNG.standard_normal(shape).astype(dtype)
        got = kern(x=a)
        close(got, np.sum(a.astype(np.float64) ** 2), dtype)
        if a.size:  # an empty gradient is refused before any kernel runs (binding: zero-length output)
            close(kern.vjp(1.5, x=a)["x"], 3.0 * a.astype(np.float64), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, cols", [(40, 3), (9, 1), (3, 2), (0, 4), (30, launch.SPLIT_THREADS + 1), (17, 5)])
def test_column_sums_split_by_shape(rows, cols, dtype):
    """y[j] = tanh(w[j] · Σ_i x[i, j]) + Σ_i x[i, j]²: two sums per column, a value after them;
    few columns split their rows across threads (partials, then one thread per column)."""
    i, j = sp.Idx("i", N), sp.Idx("j", M)
    x, w, y = sp.IndexedBase("x"), sp.IndexedBase("w"), sp.IndexedBase("y")
    f = symdl.Formula(sp.Eq(y[j], sp.tanh(w[j] * sp.Sum(x[i, j], i)) + sp.Sum(x[i, j] ** 2, i)), name="cuda_cols")
    kern = f.compile(backend="cuda")
    source = kern.source(np.dtype(dtype).name)
    assert "loops_split[" in source and "loops_join[" in source and "split_chunks(_cols_" in source
    xv = RNG.standard_normal((rows, cols)).astype(dtype)
    wv = RNG.standard_normal(cols).astype(dtype)
    x64 = xv.astype(np.float64)
    close(kern(x=xv, w=wv), np.tanh(wv * x64.sum(0)) + (x64 ** 2).sum(0), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_gradient_split(dtype):
    """dense's bias gradient Σ_b g[b, j]: split for few columns, plain for many."""
    kern = formulas.get("dense").compile(backend="cuda")
    for rows, cols in ((37, 2), (5, 20), (1, 3)):
        x = RNG.standard_normal((rows, 4)).astype(dtype)
        W = RNG.standard_normal((4, cols)).astype(dtype)
        b = RNG.standard_normal(cols).astype(dtype)
        g = RNG.standard_normal((rows, cols)).astype(dtype)
        grads = kern.vjp(g, x=x, W=W, b=b)
        close(grads["b"], g.astype(np.float64).sum(0), dtype)
        close(grads["W"], x.T.astype(np.float64) @ g, dtype)


def test_split_chunks_counts():
    """The shape rule: no split for many outputs or short sums; else enough threads, each adding
    at least SPLIT_TERMS terms."""
    t, k = launch.SPLIT_THREADS, launch.SPLIT_TERMS
    assert launch.split_chunks(t, 10 ** 6) == 1 and launch.split_chunks(3, 2 * k - 1) == 1
    assert launch.split_chunks(0, 10 ** 6) == 1
    for outputs, terms in ((1, 10 ** 6), (3, 50 * k), (t - 1, 10 ** 6), (2, 2 * k)):
        c = launch.split_chunks(outputs, terms)
        assert c > 1 and terms // c >= k and (c - 1) * outputs < t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["adam_update", "rmsprop_update", "momentum_update"])
def test_fused_optimizer_step_one_kernel(name, dtype):
    """An optimizer step on cuda is one kernel writing the weight and every state, the same values as
    the update formulas written in NumPy here; device arrays in, device arrays out (NumPy in, NumPy out)."""
    from numba import cuda
    program = formulas.get(name)
    pk = program.compile(backend="cuda")
    assert pk._fused is not None
    source = pk._fused.source(np.dtype(dtype).name)
    assert source.count("@cuda.jit(cache=True)") == 1 and source.count("[launch_grid(") == 1
    n = 37
    w, g, m = (RNG.standard_normal(n).astype(dtype) for _ in range(3))
    v = RNG.random(n).astype(dtype)
    hyper = {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "t": 3.0, "rho": 0.9, "momentum": 0.8}
    arrays = {"w": w, "g": g, "m": m, "v": v, "s": v}
    args = {k: arrays.get(k, hyper.get(k)) for k in program.input_names}
    dev = {k: cuda.to_device(a) if isinstance(a, np.ndarray) else a for k, a in args.items()}
    got = pk(**dev)
    W, G, Mv, V = (a.astype(np.float64) for a in (w, g, m, v))
    if name == "adam_update":
        m1 = 0.9 * Mv + 0.1 * G
        v1 = 0.999 * V + 0.001 * G * G
        w1 = W - 0.01 * (m1 / (1 - 0.9 ** 3)) / (np.sqrt(v1 / (1 - 0.999 ** 3)) + 1e-7)
        want = {"m_new": m1, "v_new": v1, "w_new": w1}
    elif name == "rmsprop_update":
        s1 = 0.9 * V + 0.1 * G * G
        want = {"s_new": s1, "w_new": W - 0.01 * G / (1e-7 + np.sqrt(s1))}
    else:
        v1 = 0.8 * V - 0.01 * G
        want = {"v_new": v1, "w_new": W + v1}
    assert set(want) == set(program.outputs), program
    on_host = pk(**args)  # NumPy in: copied in, results copied back
    for k, a in want.items():
        assert hasattr(got[k], "copy_to_host"), k
        close(got[k], a, dtype)
        assert isinstance(on_host[k], np.ndarray), k
        close(on_host[k], a, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_hoisted_sum_runs_once(dtype):
    """A sum before the parallel loop (a vector normalised by its total; a matrix by its squared
    norm, a sum of sums) runs once on a grid and reaches the threads through `_pre_`, not again in
    every thread; a constant-length one (pooling's window count) stays in the threads."""
    i, k, j, l = sp.Idx("i", N), sp.Idx("k", N), sp.Idx("j", M), sp.Idx("l", M)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    softmax = symdl.Formula(sp.Eq(y[i], sp.exp(x[i]) / sp.Sum(sp.exp(x[k]), k)), name="cuda_vec_softmax")
    scaled = symdl.Formula(sp.Eq(y[i, j], x[i, j] / (1 + sp.Sum(x[k, l] ** 2, k, l))), name="cuda_scaled")
    for f in (softmax, scaled):
        kern = f.compile(backend="cuda")
        assert "loops_pre_partial[" in kern.source() and "= _pre_[0]" in kern.source()
    assert "_pre_" not in formulas.get("average_pool2d").compile(backend="cuda").source()
    ks, kc = softmax.compile(backend="cuda"), scaled.compile(backend="cuda")
    for n, m in ((1, 1), (5, 3), (2 * launch.RED_THREADS * launch.RED_BLOCKS + 3, 2)):
        a = RNG.standard_normal(n).astype(dtype)
        e = np.exp(a.astype(np.float64))
        close(ks(x=a), e / e.sum(), dtype)
        g = RNG.standard_normal(n).astype(dtype)
        s = e / e.sum()
        close(ks.vjp(g, x=a)["x"], s * (g - (g * s).sum()), dtype)
        b = RNG.standard_normal((n, m)).astype(dtype)
        close(kc(x=b), b / (1 + (b.astype(np.float64) ** 2).sum()), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 5, 6, 1, 1), (3, 4, 4, 1, 1), (1, 4, 5, 2, 3)])
def test_conv_weight_gradient_split(shape, dtype):
    """conv2d's weight gradient Σ_b Σ_i Σ_j g[b, i, j, o] x[b, i + kh, j + kw, c]: a sum of sums
    flattened and split across threads when [3, 3, Cin, Cout] is small (the first two shapes in the
    simulator), one thread per output otherwise; against NumPy's einsum."""
    b, h, w, cin, cout = shape
    kern = formulas.get("conv2d").vjp()["kernel"].compile(backend="cuda")
    assert "loops_split[" in kern.source()
    assert (launch.split_chunks(9 * cin * cout, b * (h - 2) * (w - 2)) > 1) == (cin * cout == 1)
    x = RNG.standard_normal((b, h, w, cin)).astype(dtype)
    g = RNG.standard_normal((b, h - 2, w - 2, cout)).astype(dtype)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    want = np.stack([np.stack([np.einsum("bijo,bijc->co", g64, x64[:, kh:kh + h - 2, kw:kw + w - 2, :])
                               for kw in range(3)]) for kh in range(3)])
    close(kern(grad_y=g, x=x), want, dtype)
