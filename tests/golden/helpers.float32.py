@nb.njit(fastmath={'reassoc', 'contract', 'nsz', 'arcp', 'afn'}, error_model='numpy', inline='always')
def _sigmoid(x):
    # 1 / (1 + exp(-x)) without branches or overflow: exp(-|x|) is at most 1
    z = _exp(-abs(x))
    s = F(1) / (F(1) + z)
    return s if x >= F(0) else z * s

@nb.njit(fastmath={'reassoc', 'contract', 'nsz', 'arcp', 'afn'}, error_model='numpy', inline='always')
def _softplus(x):
    return max(x, F(0)) + _log1p(_exp(-abs(x)))

@nb.njit(fastmath={'reassoc', 'contract', 'nsz', 'arcp', 'afn'}, error_model='numpy', no_cfunc_wrapper=True)
def _sign(x):
    return F(1) if x > F(0) else (F(-1) if x < F(0) else F(0))

@nb.njit(fastmath={'reassoc', 'contract', 'nsz', 'arcp', 'afn'}, error_model='numpy', no_cfunc_wrapper=True)
def _sq(x):
    # a square of a computed value: the value is computed once
    return x * x

@nb.njit(fastmath={'reassoc', 'contract', 'nsz', 'arcp', 'afn'}, error_model='numpy', no_cfunc_wrapper=True)
def _cube(x):
    return x * x * x

@nb.njit(fastmath={'contract'}, error_model='numpy', no_cfunc_wrapper=True)
def _exp(x):
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
    return e if not (x < F(-104.0)) else F(0)

@nb.njit(fastmath={'contract'}, error_model='numpy', no_cfunc_wrapper=True)
def _log(x):
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
    return r if not (x <= F(0)) else (F(-np.inf) if x == F(0) else F(np.nan))

@nb.njit(fastmath={'contract'}, error_model='numpy', no_cfunc_wrapper=True)
def _log1p(z):
    # Goldberg: log(u) * z / (u - 1) with u = 1 + z corrects u's rounding; z itself where u == 1
    u = F(1) + z
    d = u - F(1)
    v = _log(u) * (z / d)
    return v if d != F(0) else z

@nb.njit(fastmath={'reassoc', 'contract', 'nsz', 'arcp', 'afn'}, error_model='numpy', inline='always')
def _tanh(x):
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
    return p if not (a >= F(0.625)) else t
