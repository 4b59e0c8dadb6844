"""The cpu backend's fast paths: float32 exp/log/tanh/sigmoid/softplus as vectorisable polynomials
(checked against NumPy in float64 over wide ranges and at special values), float64 kernels still on
libm, squares of computed values printed once, and kernels cached across processes.

Kernel calls stay below the parallel threshold (chunks of CHUNK elements), so only the serial
loops compile; the benchmark exercises the parallel ones.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import sympy as sp

import symdl

F32 = np.float32
REL = 4e-7             # a few float32 ulps (eps = 1.19e-7)
SUBNORMAL = 2.0 ** -149  # one step in float32's subnormal range, where relative error means little
CHUNK = 50_000

N = sp.Symbol("N", integer=True, positive=True)
_i = sp.Idx("i", N)
_x, _y = sp.IndexedBase("x"), sp.IndexedBase("y")


def _softplus64(v):
    return np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))


def _sigmoid64(v):
    z = np.exp(-np.abs(v))
    return np.where(v >= 0, 1 / (1 + z), z / (1 + z))


FUNCTIONS = {  # name -> (symdl function, float64 reference)
    "exp": (sp.exp, np.exp),
    "log": (sp.log, np.log),
    "tanh": (sp.tanh, np.tanh),
    "sigmoid": (symdl.sigmoid, _sigmoid64),
    "softplus": (symdl.softplus, _softplus64),
}
_KERNELS: dict = {}


def kernel(name: str):
    if name not in _KERNELS:
        fn = FUNCTIONS[name][0]
        _KERNELS[name] = symdl.Formula(sp.Eq(_y[_i], fn(_x[_i])), name=f"fast_{name}").compile()
    return _KERNELS[name]


def call(kern, x: np.ndarray) -> np.ndarray:
    return np.concatenate([kern(x=x[k:k + CHUNK]) for k in range(0, x.size, CHUNK)])


def wide(lo: float, hi: float, n: int = 400_000, seed: int = 0) -> np.ndarray:
    """±10**u for u uniform in [lo, hi]: every binade of the range, both signs."""
    rng = np.random.default_rng(seed)
    return (10.0 ** rng.uniform(lo, hi, n) * rng.choice([-1.0, 1.0], n)).astype(F32)


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e4, -1e4, 88.7, 89.0, -87.5, -103.0, -104.5,
                     1e-30, -1e-30, 1e-45, 1.0, -1.0, 0.625, -0.625], F32)


def inputs(name: str) -> np.ndarray:
    if name == "exp":  # ±1e-30..±88.7, and every value up to the overflow and through the subnormals
        parts = [wide(-30, np.log10(88.7)), np.linspace(-104, 89, 200_001, dtype=F32)]
    elif name == "log":  # subnormals to near the largest float, and around 1 where log(x) -> 0
        parts = [np.abs(wide(-45, 38.5)), np.linspace(0.5, 2, 100_001, dtype=F32),
                 np.linspace(1 - 1e-3, 1 + 1e-3, 20_001, dtype=F32)]
    else:  # tiny to huge, both signs; dense where the functions bend
        parts = [wide(-30, 4), np.linspace(-100, 100, 200_001, dtype=F32)]
    x = np.concatenate(parts + [SPECIALS])
    return x


def assert_close_f32(got: np.ndarray, want64: np.ndarray, x: np.ndarray, what: str) -> None:
    """Within REL of float64 for normal results, within one subnormal step below them; infinities
    and NaN exactly where float64 (rounded to float32) has them."""
    assert got.dtype == F32
    with np.errstate(over="ignore", invalid="ignore"):
        want32 = want64.astype(F32)
        err = np.abs(got.astype(np.float64) - want64)
        ok = (got == want32) | (np.isnan(got) & np.isnan(want64)) | (err <= REL * np.abs(want64) + SUBNORMAL)
    bad = np.flatnonzero(~ok)
    if bad.size:
        k = bad[np.argmax(np.nan_to_num(err[bad] / np.maximum(np.abs(want64[bad]), 1e-300), nan=np.inf))]
        raise AssertionError(f"{what}: {bad.size} of {x.size} values off; worst at x={x[k]!r}: got "
                             f"{got[k]!r}, float64 gives {want64[k]!r}")


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_float32_matches_float64_over_wide_range(name):
    x = inputs(name)
    got = call(kernel(name), x)
    with np.errstate(all="ignore"):
        want = FUNCTIONS[name][1](x.astype(np.float64))
    assert_close_f32(got, want, x, f"float32 {name}")


@pytest.mark.parametrize("name, x, want", [
    ("exp", [0.0, -0.0, np.inf, -np.inf, np.nan, 89.0, 1e4, -104.5, -1e4], [1, 1, np.inf, 0, np.nan, np.inf,
                                                                          np.inf, 0, 0]),
    ("log", [1.0, 0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, 1e-45],
     [0, -np.inf, -np.inf, np.nan, np.inf, np.nan, np.nan, np.log(np.float64(F32(1e-45)))]),
    ("tanh", [0.0, -0.0, np.inf, -np.inf, np.nan, 1e4, -1e4, 1e-30, -1e-30, 1e-45],
     [0, 0, 1, -1, np.nan, 1, -1, F32(1e-30), F32(-1e-30), F32(1e-45)]),
    ("sigmoid", [0.0, -0.0, np.inf, -np.inf, np.nan, 1e4, -1e4, 200.0, -200.0],
     [0.5, 0.5, 1, 0, np.nan, 1, 0, 1, 0]),
    ("softplus", [0.0, np.inf, -np.inf, np.nan, 1e4, -1e4, 1e-30],
     [np.log(2), np.inf, 0, np.nan, 1e4, 0, np.log(2)]),
])
def test_float32_special_values(name, x, want):
    got = kernel(name)(x=np.array(x, F32))
    want = np.array(want, np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want)), (got, want)
    np.testing.assert_allclose(got[~np.isnan(want)], want[~np.isnan(want)], rtol=REL, atol=0)


def test_float32_sigmoid_saturates_exactly():
    got = kernel("sigmoid")(x=np.array([1e4, -1e4, 3e38, -3e38], F32))
    assert got.tolist() == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_float64_stays_on_libm(name):
    """float64 kernels call math.* (or the libm-based helpers) and agree with NumPy to double."""
    kern = kernel(name)
    source = kern.source("float64")
    assert "float32_from_bits" not in source and "def _exp" not in source and "def _log(" not in source
    x = inputs(name).astype(np.float64)
    x = x[np.isfinite(x)]
    got = call(kern, x)
    with np.errstate(all="ignore"):
        want = FUNCTIONS[name][1](x)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=2e-15, atol=0)


def test_float32_source_has_no_scalar_libm_calls():
    kern = symdl.Formula(sp.Eq(_y[_i], sp.exp(_x[_i]) + sp.log(_x[_i]) + sp.tanh(_x[_i])
                               + symdl.sigmoid(_x[_i]) + symdl.softplus(_x[_i])), name="fast_all").compile()
    source = kern.source("float32")
    for libm in ("math.exp", "math.log", "math.tanh", "math.log1p"):
        assert libm not in source.split("def loops_serial")[1], libm
    imported = next(line for line in source.splitlines() if "= helpers('float32'" in line)
    for helper in ("_exp", "_log", "_log1p", "_tanh", "_sigmoid", "_softplus"):
        assert f"'{helper}'" in imported  # the float32 polynomials, made once per process (shared.py)
    x = np.linspace(0.01, 30, 1000, dtype=F32)
    x64 = x.astype(np.float64)
    want = np.exp(x64) + np.log(x64) + np.tanh(x64) + _sigmoid64(x64) + _softplus64(x64)
    np.testing.assert_allclose(kern(x=x), want, rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_square_of_computed_value_printed_once(dtype):
    kern = symdl.Formula(sp.Eq(_y[_i], sp.tanh(_x[_i]) ** 2 - 1 / sp.exp(_x[_i] + 1) ** 2
                               + (_x[_i] + 1) ** 3), name="fast_square").compile()
    source = kern.source(dtype)
    tanh = "_tanh" if dtype == "float32" else "math.tanh"
    assert f"_sq({tanh}(x[i]))" in source
    assert f"{tanh}(x[i]) * {tanh}(x[i])" not in source
    assert "_cube(F(1) + x[i])" in source
    x = np.linspace(-3, 3, 101).astype(dtype)
    x64 = x.astype(np.float64)
    want = np.tanh(x64) ** 2 - np.exp(-2 * (x64 + 1)) + (x64 + 1) ** 3
    np.testing.assert_allclose(kern(x=x), want, rtol=1e-6 if dtype == "float32" else 1e-13, atol=1e-6)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus"])
def test_float32_vjp_matches_float64(name):
    """The gradient kernels use the same helpers (tanh's gradient squares tanh through _sq)."""
    kern = kernel(name)
    x = np.concatenate([np.linspace(-30, 30, 20_001, dtype=F32), SPECIALS[np.isfinite(SPECIALS)]])
    g = np.random.default_rng(1).standard_normal(x.size).astype(F32)
    got = kern.vjp(g, x=x)["x"]
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    deriv = {"tanh": 1 - np.tanh(x64) ** 2, "sigmoid": _sigmoid64(x64) * (1 - _sigmoid64(x64)),
             "softplus": _sigmoid64(x64)}[name]
    # 1 - tanh**2 and (1 - s)*s cancel near saturation: an absolute error of a few ulps of 1,
    # times |g|, whatever the exp/tanh accuracy
    err = np.abs(got - g64 * deriv)
    assert np.all(err <= REL * np.abs(g64 * deriv) + 5e-7 * np.abs(g64)), x[np.argmax(err)]


# Compiles one float32 kernel using every helper, then reports numba's cache statistics.
CACHE_SCRIPT = textwrap.dedent('''
    import json
    import numba
    import numpy as np
    import sympy as sp
    import symdl

    N = sp.Symbol("N", integer=True, positive=True)
    i = sp.Idx("i", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    body = (sp.exp(x[i]) + sp.log(x[i]) + sp.tanh(x[i]) ** 2 + symdl.sigmoid(x[i])
            + symdl.softplus(x[i]))
    kern = symdl.Formula(sp.Eq(y[i], body), name="fast_cached").compile()
    xs = np.linspace(0.5, 5, 7, dtype=np.float32)
    out = kern(x=xs)
    module = kern._module(np.dtype("float32"))
    dispatchers = [d for d in vars(module).values() if isinstance(d, numba.core.dispatcher.Dispatcher)]
    print("REPORT" + json.dumps({
        "values": out.tolist(),
        "hits": sum(sum(d.stats.cache_hits.values()) for d in dispatchers),
        "misses": sum(sum(d.stats.cache_misses.values()) for d in dispatchers),
    }))
''')


def test_float32_helpers_load_from_cache_in_a_new_process(tmp_path):
    env = dict(os.environ, SYMDL_CACHE_DIR=str(tmp_path))

    def run() -> dict:
        res = subprocess.run([sys.executable, "-c", CACHE_SCRIPT], env=env, capture_output=True, text=True,
                             timeout=300, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("REPORT")][-1]
        return json.loads(line[len("REPORT"):])

    first, second = run(), run()
    assert first["misses"] > 0
    assert second["misses"] == 0 and second["hits"] > 0, second
    assert second["values"] == first["values"]
    x = np.linspace(0.5, 5, 7, dtype=F32).astype(np.float64)
    want = np.exp(x) + np.log(x) + np.tanh(x) ** 2 + _sigmoid64(x) + _softplus64(x)
    np.testing.assert_allclose(second["values"], want, rtol=1e-6)
