"""Recurrences reading an earlier step at an affine offset on the other axes (issue 11):
Y[t, i] = Y[t-1, i] + x[t, i] Y[t-1, i-1], zero outside Y, forward against NumPy and the gradient
against central differences of that NumPy forward."""
import numpy as np
import pytest
import sympy as sp

import symdl

T, N, M = sp.symbols("T N M", integer=True, positive=True)
t, i, j = sp.Idx("t", T), sp.Idx("i", N), sp.Idx("j", M)
Y, x, y0 = sp.IndexedBase("Y"), sp.IndexedBase("x"), sp.IndexedBase("y0")


def shifted(a, by, axis):
    """a moved by `by` along axis, zero where it came from outside (a[i - by] in index terms)."""
    out = np.zeros_like(a)
    n = a.shape[axis]
    src = [slice(None)] * a.ndim
    dst = [slice(None)] * a.ndim
    if by >= 0:
        src[axis], dst[axis] = slice(0, n - by), slice(by, n)
    else:
        src[axis], dst[axis] = slice(-by, n), slice(0, n + by)
    out[tuple(dst)] = a[tuple(src)]
    return out


def run_numpy(step, x0, xs):
    """States of h[t] = step(h[t-1], x[t]) for every t, from h[-1] = x0."""
    out, h = [], x0
    for xt in xs:
        h = step(h, xt)
        out.append(h)
    return np.stack(out)


CASES = {  # name: (rhs, NumPy step(prev, x_t))
    "left": (Y[t - 1, i] + x[t, i] * Y[t - 1, i - 1], lambda p, xt: p + xt * shifted(p, 1, 0)),
    "right": (sp.tanh(Y[t - 1, i + 1] - x[t, i] * Y[t - 1, i]), lambda p, xt: np.tanh(shifted(p, -1, 0) - xt * p)),
    "both": (x[t, i] * (Y[t - 1, i - 2] + Y[t - 1, i + 1]) + Y[t - 1, i] / 2,
             lambda p, xt: xt * (shifted(p, 2, 0) + shifted(p, -1, 0)) + p / 2),
}


def formula(case):
    return symdl.Formula(sp.Eq(Y[t, i], CASES[case][0]), name=f"nb_{case}", initial={"Y": y0})


def central_differences(fun, a, G, eps=1e-6):
    g = np.zeros_like(a)
    for k in np.ndindex(a.shape):
        d = np.zeros_like(a)
        d[k] = eps
        g[k] = ((fun(a + d) - fun(a - d)) * G).sum() / (2 * eps)
    return g


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("steps,n", [(1, 1), (6, 5), (20, 3)])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_neighbour_reads_match_numpy(case, steps, n, dtype, tol):
    rng = np.random.default_rng(steps * 10 + n)
    xs, h0 = rng.uniform(-1, 1, (steps, n)), rng.uniform(-1, 1, n)
    kern = formula(case).compile()
    got = kern(x=xs.astype(dtype), y0=h0.astype(dtype))
    want = run_numpy(CASES[case][1], h0, xs)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("case", sorted(CASES))
def test_neighbour_reads_gradient_matches_finite_differences(case):
    rng = np.random.default_rng(7)
    xs, h0 = rng.uniform(-1, 1, (7, 4)), rng.uniform(-1, 1, 4)
    step = CASES[case][1]
    G = rng.normal(size=(7, 4))
    got = formula(case).compile().vjp(G, x=xs, y0=h0)
    np.testing.assert_allclose(got["x"], central_differences(lambda a: run_numpy(step, h0, a), xs, G),
                               atol=1e-7)
    np.testing.assert_allclose(got["y0"], central_differences(lambda a: run_numpy(step, a, xs), h0, G),
                               atol=1e-7)


def test_offsets_on_two_other_axes_and_a_reverse_recurrence():
    """Y[t, i, j] reads Y[t+1, i-1, j+1] (a reverse recurrence, zero past the last step)."""
    z = sp.IndexedBase("z")
    later = sp.Piecewise((Y[t + 1, i - 1, j + 1], t < T - 1), (0, True))
    f = symdl.Formula(sp.Eq(Y[t, i, j], sp.sin(z[t, i, j] + later)), name="diag")
    assert f.recurrence.axis == 0 and f.recurrence.direction == -1
    rng = np.random.default_rng(3)
    zs, h0 = rng.normal(size=(5, 3, 4)), np.zeros((3, 4))

    def step(p, zt):
        return np.sin(zt + shifted(shifted(p, 1, 0), -1, 1))

    want = run_numpy(step, h0, zs[::-1])[::-1]
    np.testing.assert_allclose(f.compile()(z=zs), want, atol=1e-12)
    symdl.verify.numeric(f, sizes={T: 3, N: 3, M: 2})
    symdl.verify.backends(f, sizes={T: 3, N: 3, M: 2})


def test_a_one_term_sum_reads_the_same_padded_neighbour():
    """The read disguised as a one-term Sum (accepted before, and read outside Y) now pads too."""
    k = sp.Symbol("k", integer=True)
    disguised = symdl.Formula(sp.Eq(Y[t, i], Y[t - 1, i] + x[t, i] * sp.Sum(Y[t - 1, k], (k, i - 1, i - 1))),
                              name="disguised", initial={"Y": y0})
    rng = np.random.default_rng(5)
    xs, h0 = rng.normal(size=(6, 4)), rng.normal(size=4)
    np.testing.assert_allclose(disguised.compile()(x=xs, y0=h0), formula("left").compile()(x=xs, y0=h0),
                               atol=1e-12)


def test_a_read_of_the_same_step_or_both_ways_is_still_refused():
    with pytest.raises(symdl.FormulaError, match="same step"):
        symdl.Formula(sp.Eq(Y[t, i], x[t, i] + Y[t - 1, i] * Y[t, i]), name="same", initial={"Y": y0})
    with pytest.raises(symdl.FormulaError, match="both directions"):
        symdl.Formula(sp.Eq(Y[t, i], Y[t - 1, i - 1] + Y[t + 1, i + 1] + x[t, i]), name="both_ways",
                      initial={"Y": y0})
    with pytest.raises(symdl.FormulaError, match="initial state"):
        symdl.Formula(sp.Eq(Y[t, i], x[t, i] * Y[t - 1, i - 1]), name="no_initial")


def test_the_issue_reproducer_with_its_length_given_at_the_call():
    """Y[t, i] = Y[t-1, i] + x[i] Y[t-1, i-1] exactly as issue 11 writes it: no input carries T,
    so the call gives it (dims=), forward and gradient."""
    f = symdl.Formula(sp.Eq(Y[t, i], Y[t - 1, i] + x[i] * Y[t - 1, i - 1]), name="issue_nb", initial={"Y": y0})
    rng = np.random.default_rng(8)
    xs, h0, G = rng.normal(size=4), rng.normal(size=4), rng.normal(size=(6, 4))

    def numpy_forward(xv, hv):
        return run_numpy(lambda p, _: p + xv * shifted(p, 1, 0), hv, range(6))

    kern = f.compile()
    np.testing.assert_allclose(kern(x=xs, y0=h0, dims={"T": 6}), numpy_forward(xs, h0), atol=1e-12)
    got = kern.vjp(G, x=xs, y0=h0, dims={"T": 6})
    np.testing.assert_allclose(got["x"], central_differences(lambda a: numpy_forward(a, h0), xs, G), atol=1e-7)
    np.testing.assert_allclose(got["y0"], central_differences(lambda a: numpy_forward(xs, a), h0, G), atol=1e-7)
