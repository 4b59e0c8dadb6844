"""The cpu backend's helper functions: decorators for the shared libm-based helpers
(printing/helpers.py) and its own float32 building blocks, branch-free polynomials that keep the
loops calling them vectorisable."""

import hashlib

from ...printing.helpers import SOURCES

# fastmath without 'nnan'/'ninf': keeps NaN checks working and still vectorises reductions (the
# kernels' flags, and the helpers')
FASTMATH = "{'reassoc', 'contract', 'nsz', 'arcp', 'afn'}"
# numba makes a C-callable wrapper of every function for first-class function use, which no
# symdl kernel needs (a driver calls it through its Python wrapper, a kernel calls a helper
# directly): without it each function compiles ~10 ms faster (numba 0.68)
NO_CFUNC = "no_cfunc_wrapper=True"
HELPER = f"@nb.njit(cache=True, fastmath={FASTMATH}, error_model='numpy', {NO_CFUNC})"
# float32 building blocks: reassociation would undo the two-part ln2 of _exp and Goldberg's log1p, so
# these allow FMA contraction only; they are small, and LLVM inlines them into the loops that call them
STRICT = f"@nb.njit(cache=True, fastmath={{'contract'}}, error_model='numpy', {NO_CFUNC})"
# float32 compositions of the building blocks: inlined by numba itself, so a loop calling them still
# sees only small functions (a function that inlines both _exp and _log is too big for LLVM to inline,
# and a call left in a loop stops it vectorising)
INLINE = f"@nb.njit(cache=True, fastmath={FASTMATH}, error_model='numpy', inline='always')"


# float64 kernels call libm through math: exact to double
HELPERS = {name: (HELPER, text) for name, text in SOURCES.items()}

# float32 versions: branch-free Cephes-style polynomials with range reduction, within a few ulps of
# float64 (tests/test_cpu_fast_paths.py), so the loops calling them vectorise
HELPERS_F32 = {
    **{name: (HELPER, text) for name, text in SOURCES.items()},
    "_exp": (STRICT, '''def _exp(x):
    # float32 exp without libm (math.exp is a scalar call: loops calling it do not vectorise).
    # Cephes expf: x = n ln2 + r with |r| <= ln2/2, exp(r) by a polynomial, times 2**n
    y = x if not (x < F(-104.0)) else F(-104.0)  # comparisons are False for NaN: it passes through
    y = y if not (y > F(89.0)) else F(89.0)
    n = (y * F(1.44269504088896341) + F(12582912.0)) - F(12582912.0)  # round(y / ln2): + 1.5 * 2**23
    n = n if n > F(-200.0) else F(0)  # NaN -> 0, so float32_ldexp gets an integer
    r = y - n * F(0.693359375) + n * F(2.12194440e-4)  # ln2 in two parts: r is exact
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    p = p * r * r + r + F(1)
    e = float32_ldexp(p, n)  # overflows to inf and rounds into the subnormals as exp itself does
    return e if not (x < F(-104.0)) else F(0)'''),
    "_log": (STRICT, '''def _log(x):
    # float32 log without libm, as _exp. Cephes logf: x = m 2**e with m in [sqrt(1/2), sqrt(2)),
    # log(m) by a polynomial in m - 1
    tiny = x < F(1.17549435e-38)  # subnormal (or not positive): scaled by 2**23 to normalise
    xs = x * F(8388608.0) if tiny else x
    m = float32_frexp_mantissa(xs)  # in [0.5, 1)
    e = float32_frexp_exponent(xs) - (F(23) if tiny else F(0))
    low = m < F(0.707106781186547524)
    e = e - F(1) if low else e
    m = (m + m if low else m) - F(1)
    z = m * m
    y = F(7.0376836292e-2)
    y = y * m - F(1.1514610310e-1)
    y = y * m + F(1.1676998740e-1)
    y = y * m - F(1.2420140846e-1)
    y = y * m + F(1.4249322787e-1)
    y = y * m - F(1.6668057665e-1)
    y = y * m + F(2.0000714765e-1)
    y = y * m - F(2.4999993993e-1)
    y = y * m + F(3.3333331174e-1)
    y = y * m * z - e * F(2.12194440e-4) - F(0.5) * z
    r = m + y + e * F(0.693359375)
    r = r if x < F(np.inf) else x  # inf and NaN stay themselves
    return r if not (x <= F(0)) else (F(-np.inf) if x == F(0) else F(np.nan))'''),
    "_log1p": (STRICT, '''def _log1p(z):
    # Goldberg: log(u) * z / (u - 1) with u = 1 + z corrects u's rounding; z itself where u == 1
    u = F(1) + z
    d = u - F(1)
    v = _log(u) * (z / d)
    return v if d != F(0) else z'''),
    "_tanh": (INLINE, '''def _tanh(x):
    # Cephes tanhf: an odd polynomial below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above; both are
    # computed and one is selected, so loops over it vectorise
    a = abs(x)
    z = x * x
    p = F(-5.70498872745e-3)
    p = p * z + F(2.06390887954e-2)
    p = p * z - F(5.37397155531e-2)
    p = p * z + F(1.33314422036e-1)
    p = p * z - F(3.33332819422e-1)
    p = p * z * x + x
    t = F(1) - F(2) / (_exp(a + a) + F(1))
    t = t if x >= F(0) else -t
    return p if not (a >= F(0.625)) else t'''),
    "_sigmoid": (INLINE, '''def _sigmoid(x):
    # 1 / (1 + exp(-x)) without branches or overflow: exp(-|x|) is at most 1
    z = _exp(-abs(x))
    s = F(1) / (F(1) + z)
    return s if x >= F(0) else z * s'''),
    "_softplus": (INLINE, '''def _softplus(x):
    return max(x, F(0)) + _log1p(_exp(-abs(x)))'''),
}
# helpers that call other helpers
HELPER_DEPS = {"_tanh": ("_exp",), "_sigmoid": ("_exp",), "_softplus": ("_exp", "_log1p"),
               "_log1p": ("_log",)}


def fingerprint(dtype: str) -> str:
    """The hash of one dtype's helper table (decorators and text), named by the generated modules
    that import the helpers (shared.py), so that editing a helper changes their source."""
    table = HELPERS_F32 if dtype == "float32" else HELPERS
    return hashlib.sha256(repr(sorted(table.items())).encode()).hexdigest()[:16]
