"""The reference evaluator computes index arithmetic exactly: rational coefficients (strided 'same'
padding's output length floor(W/3 + 2/3), guards such as i/3 + 2/3 >= 3) must not round in floats."""
import numpy as np
import sympy as sp

import symdl
from symdl import reference
from symdl.formulas.conv import conv2d

N = sp.Symbol("N", integer=True, positive=True)


def test_float_rounding_would_be_wrong_here():
    # the premise of the tests below: in floats, 7/3 + 2/3 is just below 3
    assert 7 * (1 / 3) + 2 / 3 < 3


def test_strided_same_padding_output_length_is_exact():
    rng = np.random.default_rng(0)
    f = conv2d((2, 3), (2, 3), "same", (1, 1), name="exact_conv")
    y = reference.evaluate(f, {"x": rng.random((1, 4, 7, 2)), "kernel": rng.random((2, 3, 2, 2)),
                               "bias": rng.random(2)})
    assert y.shape == (1, 2, 3, 2)  # ceil(4 / 2), ceil(7 / 3)


def test_rational_guard_is_exact():
    i = sp.Idx("i", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    cond = sp.Rational(1, 3) * i + sp.Rational(2, 3) >= 3
    f = symdl.Formula(sp.Eq(y[i], x[i] * sp.Piecewise((1, cond), (0, True))), name="exact_guard")
    xs = np.arange(1.0, 11.0)
    want = np.where(np.arange(10) >= 7, xs, 0.0)  # i/3 + 2/3 >= 3 exactly when i >= 7
    np.testing.assert_array_equal(reference.evaluate(f, {"x": xs}), want)

