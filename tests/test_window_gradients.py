"""Window gradients at the forward's cost (issue 10): max pooling scatters from each window's
arg-max; a reduction under a window that moves with the output index is hoisted over the window's
hull; sibling sums over the same ranges run as one loop. Every kernel is checked against NumPy
written here (ties included) or against finite differences."""
import numpy as np
import pytest
import sympy as sp
from test_conv_pool import numpy_pool, numpy_pool_grad
from test_gather import _walk
from test_random_formulas import WINDOW_SIZES, build_window

import symdl
from symdl.declare.reductions import Sum
from symdl.formulas.pooling import pool2d
from symdl.loops import ScatterAdd, lower, trip_count
from symdl.loops.ir import Let, Loop, Nest
from symdl.passes.sums import merge_sibling_sums

POOLS = [((2, 2), None, "valid"), ((3, 3), (2, 2), "same"), ((3, 3), (1, 1), "valid"), ((2, 3), (1, 2), "same")]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pool,strides,padding", POOLS)
def test_max_pooling_scatter_gradient_matches_numpy_with_ties(pool, strides, padding, dtype):
    """Overlapping windows share arg-maxes (their additions meet in one cell); values drawn from
    three levels make ties in most windows: the first maximiser in row-major order gets it all."""
    rng = np.random.default_rng(hash((pool, strides, padding)) % 2**32)
    k = pool2d("max", pool, strides, padding, name="scatter_pool").compile()
    for shape in [(2, 7, 8, 3), (1, 5, 5, 1), (3, 9, 6, 2)]:
        x = rng.integers(0, 3, size=shape).astype(dtype)
        s = strides or pool
        y = k(x=x)
        np.testing.assert_array_equal(y, numpy_pool(x.astype(np.float64), "max", pool, s, padding))
        G = rng.normal(size=y.shape).astype(dtype)
        want = numpy_pool_grad(x.astype(np.float64), G.astype(np.float64), "max", pool, s, padding)
        got = k.vjp(G, x=x)["x"]
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool,strides,padding", POOLS[:2])
def test_max_pooling_scatter_gradient_in_the_parallel_flavour(pool, strides, padding, monkeypatch):
    """Threads over the batch loop (SYMDL_PARALLEL_WORK=1 makes every call parallel where numba has
    two threads): each thread adds into its own images, so the result is the serial one."""
    monkeypatch.setenv("SYMDL_PARALLEL_WORK", "1")
    rng = np.random.default_rng(7)
    x = rng.integers(0, 4, size=(6, 9, 7, 3)).astype(np.float64)
    k = pool2d("max", pool, strides, padding, name="scatter_pool_parallel").compile()
    s = strides or pool
    G = rng.normal(size=k(x=x).shape)
    np.testing.assert_allclose(k.vjp(G, x=x)["x"], numpy_pool_grad(x, G, "max", pool, s, padding), atol=1e-12)


@pytest.mark.parametrize("pool,strides,padding", POOLS)
def test_max_pooling_gradient_searches_each_window_once(pool, strides, padding):
    f = pool2d("max", pool, strides, padding, name="scatter_pool_trips")
    g = lower(f.vjp()["x"])
    scatter = [s for s in g.steps if isinstance(s, Nest) and any(isinstance(t, ScatterAdd) for t in _walk(s.body))]
    assert len(scatter) == 1
    assert sum(isinstance(t, Let) and t.value == -sp.oo for t in _walk(scatter[0].body)) == 1  # one search
    assert scatter[0].body[0].parallel  # the batch loop: each iteration adds into its own slice
    for n in (12, 24):
        dims = {"B": 2, "H": n, "W": n + 1, "Cin": 3}
        size = 2 * n * (n + 1) * 3
        assert trip_count(g, dims) - size <= 1.5 * trip_count(lower(f), dims)


@pytest.mark.parametrize("pool,strides,padding", POOLS)
def test_max_pooling_gradient_adds_by_position_on_the_cpu(pool, strides, padding):
    """As the cpu lowers it (row_reductions), the scatter adds at positions that are loop indices
    (the window's candidates, clipped at the edges for "same"), never at the searched ones: the
    channel loop's adds go to consecutive addresses, which is what lets it vectorise. The search
    runs once, its coordinates kept in temporaries, and the cost stays within the contract's bound."""
    f = pool2d("max", pool, strides, padding, name="scatter_pool_positions")
    g = lower(f.vjp()["x"], row_reductions=True)
    scatter = [s for s in g.steps if isinstance(s, Nest) and any(isinstance(t, ScatterAdd) for t in _walk(s.body))]
    (add,) = [t for t in _walk(scatter[0].body) if isinstance(t, ScatterAdd)]
    searched = {t.name for t in _walk(scatter[0].body) if isinstance(t, Let)}
    assert not set().union(*(sp.sympify(i).free_symbols for i in add.index)) & searched, add.index
    assert {add.index[0], add.index[-1]} <= {t.var for t in _walk(scatter[0].body) if isinstance(t, Loop)}
    assert sum(isinstance(t, Let) and t.value == -sp.oo for t in _walk(scatter[0].body)) == 1  # one search
    assert len(g.temps) == 2  # the found row and column
    dims = {"B": 2, "H": 24, "W": 25, "Cin": 3}
    assert trip_count(g, dims) - 2 * 24 * 25 * 3 <= 4 * trip_count(lower(f, row_reductions=True), dims)


N, M = sp.symbols("N M", integer=True, positive=True)


def exp_window(stride: int) -> symdl.Formula:
    """y[i] = exp(Σ_m x[s·i + m] w[m]): the reproducer of a nonlinear function of a window sum."""
    i, m = sp.Idx("i", (N - M) // stride + 1), sp.Idx("m", M)
    x, w, y = sp.IndexedBase("x", shape=(N,)), sp.IndexedBase("w", shape=(M,)), sp.IndexedBase("y")
    return symdl.Formula(sp.Eq(y[i], sp.exp(sp.Sum(x[stride * i + m] * w[m], m))), name=f"exp_window_s{stride}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("stride", [1, 2])
def test_exp_of_a_window_sum_gradient_matches_numpy(stride, dtype):
    f = exp_window(stride)
    k = f.compile()
    rng = np.random.default_rng(stride)
    for n, m in [(9, 3), (16, 4), (5, 5)]:
        x, w = (0.3 * rng.normal(size=s).astype(dtype) for s in (n, m))
        out = (n - m) // stride + 1
        z = np.array([x[stride * i:stride * i + m] @ w for i in range(out)], dtype=np.float64)
        np.testing.assert_allclose(k(x=x, w=w), np.exp(z), rtol=1e-5)
        G = rng.normal(size=out).astype(dtype)
        gx, gw = np.zeros(n), np.zeros(m)
        for i in range(out):
            gx[stride * i:stride * i + m] += G[i] * np.exp(z[i]) * w
            gw += G[i] * np.exp(z[i]) * x[stride * i:stride * i + m]
        grads = k.vjp(G, x=x, w=w)
        np.testing.assert_allclose(grads["x"], gx, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(grads["w"], gw, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_exp_of_a_window_sum_gradient_hoists_the_sum_over_the_hull(stride):
    f = exp_window(stride)
    g = lower(f.vjp()["x"])
    assert [t.name for t in g.temps] == ["inv0"]  # the window sum, once per i
    ratios = []
    for n in (400, 800):
        dims = {"N": n, "M": 20}
        ratios.append((trip_count(g, dims) - n) / trip_count(lower(f), dims))
    assert max(ratios) <= 4 and ratios[1] <= 1.1 * ratios[0], ratios


def test_sibling_sums_over_the_same_ranges_merge():
    i, j = sp.symbols("i j", integer=True)
    a, b = sp.IndexedBase("a"), sp.IndexedBase("b")
    s1, s2 = Sum(a[i], (i, 0, N - 1)), Sum(b[i] * Sum(a[j], (j, 0, M - 1)), (i, 0, N - 1))
    merged = merge_sibling_sums(s1 / 10 + 3 * s2 + Sum(a[i], (i, 0, M - 1)))
    assert merged.atoms(Sum) >= {Sum(a[i] / 10 + 3 * b[i] * Sum(a[j], (j, 0, M - 1)), (i, 0, N - 1))}
    assert len([t for t in sp.Add.make_args(merged) if isinstance(t, Sum)]) == 2  # other limits stay apart
    shadowed = i * s1 + s2  # i outside is not the summed i: it may not move in
    assert merge_sibling_sums(shadowed) == shadowed
    values = {a[k]: k + 1 for k in range(8)} | {b[k]: 2 * k - 3 for k in range(8)} | {N: 5, M: 3}
    original = s1 / 10 + 3 * s2 + Sum(a[i], (i, 0, M - 1))
    assert merged.xreplace({N: 5, M: 3}).doit().xreplace(values) == original.xreplace({N: 5, M: 3}).doit().xreplace(values)


LEAKY_EXP = {"stride": 1, "reduce": True, "batch": True, "channel": False, "second": "w", "transpose": False,
             "combine": "mul", "wrap": ["leaky", "leaky"], "body_wrap": "id", "sum_wrap": "exp"}


def test_leaky_window_under_exp_compiles_exactly():
    """The random-formula search's counter-example to the cost contract (three leaky regions, each
    a pass over the window until sibling sums merged): compiled equals the reference, and finite
    differences."""
    f = build_window(LEAKY_EXP)
    symdl.verify.backends(f, sizes=WINDOW_SIZES)
    symdl.verify.numeric(f, sizes=WINDOW_SIZES)
