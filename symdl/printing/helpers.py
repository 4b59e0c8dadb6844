"""Helper functions generated modules define, written once with `F()` constants so one source
serves float32 and float64; each backend adds its own decorator (cpu: `@nb.njit`, cuda: a device
function). libm (`math.exp`) underneath: exact to double on the cpu, libdevice's float versions on
a GPU. The cpu backend's vectorising float32 polynomials are its own (backends/cpu/helpers.py)."""

SOURCES = {
    "_sigmoid": '''def _sigmoid(x):
    # the stable form: exp of a non-positive number never overflows
    if x >= F(0):
        return F(1) / (F(1) + math.exp(-x))
    z = math.exp(x)
    return z / (F(1) + z)''',
    "_softplus": '''def _softplus(x):
    return max(x, F(0)) + math.log1p(math.exp(-abs(x)))''',
    "_sign": '''def _sign(x):
    return F(1) if x > F(0) else (F(-1) if x < F(0) else F(0))''',
    "_sq": '''def _sq(x):
    # a square of a computed value: the value is computed once
    return x * x''',
    "_cube": '''def _cube(x):
    return x * x * x''',
}
