"""The cpu's row schedules (loops/rows.py) by class: bodies whose box-shaped Sums read the innermost
output index contiguously (a nonlinearity of several sums, sums of several regions, recurrences)
take the row schedule where no GEMM does (outside a recurrence such sums are GEMMs over (b, t) rows:
passes/contraction.py), and their kernels and gradients equal NumPy written here, for every
combination of activation, number of sums, recurrence and dtype."""
import itertools

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.loops import rows
from symdl.loops.ir import Contract
from symdl.loops.lower import loop_order, lower

B, T, K, H = sp.symbols("B T K H", integer=True, positive=True)
b, t, k, j, l = sp.Idx("b", B), sp.Idx("t", T), sp.Idx("k", K), sp.Idx("j", H), sp.Idx("l", H)
x, W, V, z, c, h, h0, y = map(sp.IndexedBase, "x W V z c h h0 y".split())
ACTS = {"identity": (lambda e: e, lambda a: a),
        "tanh": (sp.tanh, np.tanh),
        "relu": (lambda e: sp.Max(0, e), lambda a: np.maximum(a, 0))}
SIZES = {"B": 3, "T": 4, "K": 5, "H": 6}


def _takes_rows(f) -> bool:
    return rows.lower_rows(f, loop_order(f)) is not None


def _formula(act: str, two_sums: bool, recurrent: bool) -> symdl.Formula:
    pre = sp.Sum(W[k, j] * x[b, t, k], (k, 0, K - 1)) + c[j]
    if two_sums:
        pre += sp.Sum(V[l, j] * z[b, t, l], (l, 0, H - 1))
    out = h if recurrent else y
    if recurrent:
        pre += sp.Sum(V[l, j] * h[b, t - 1, l], (l, 0, H - 1))
    name = f"rows_{act}_{int(two_sums)}_{int(recurrent)}"
    return symdl.Formula(sp.Eq(out[b, t, j], ACTS[act][0](pre)), name=name,
                         initial={"h": h0} if recurrent else None)


def _numpy(act, two_sums, recurrent, a):
    f = ACTS[act][1]
    pre = np.einsum("kj,btk->btj", a["W"], a["x"]) + a["c"]
    if two_sums:
        pre = pre + np.einsum("lj,btl->btj", a["V"], a["z"])
    if not recurrent:
        return f(pre)
    out, prev = np.empty_like(pre), a["h0"]
    for s in range(pre.shape[1]):
        out[:, s] = prev = f(pre[:, s] + prev @ a["V"])
    return out


def _inputs(f, dtype, rng):
    shapes = {"x": (3, 4, 5), "W": (5, 6), "V": (6, 6), "z": (3, 4, 6), "c": (6,), "h0": (3, 6)}
    return {n: (rng.standard_normal(shapes[n]) * 0.5).astype(dtype) for n in f.input_names}


@pytest.mark.parametrize("act, two_sums, recurrent, dtype",
                         list(itertools.product(ACTS, [False, True], [False, True], ["float32", "float64"])))
def test_row_schedule_kernels_equal_numpy(act, two_sums, recurrent, dtype):
    f = _formula(act, two_sums, recurrent)
    assert _takes_rows(f)
    # the sums of inputs are contractions over (b, t) rows: BLAS (test_grouped_contractions.py), in a
    # recurrence for every step before the step loop, which runs the row schedule on the rest
    assert isinstance(lower(f, row_reductions=True).steps[0], Contract)
    a = _inputs(f, dtype, np.random.default_rng(len(f.name)))
    got = f.compile()(**a)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, _numpy(act, two_sums, recurrent, a), rtol=tol, atol=tol)


@pytest.mark.parametrize("two_sums, recurrent", [(True, False), (False, True), (True, True)])
def test_row_schedule_gradients_equal_finite_differences(two_sums, recurrent):
    f = _formula("tanh", two_sums, recurrent)
    a = _inputs(f, "float64", np.random.default_rng(7))
    up = np.random.default_rng(8).standard_normal((3, 4, 6))
    grads = f.compile().vjp(up, **a)
    for name in ("W", "V", "c") if (two_sums or recurrent) else ("W", "c"):
        g, eps = np.zeros_like(a[name]), 1e-6
        for pos in np.ndindex(a[name].shape):
            hi, lo = {n: v.copy() for n, v in a.items()}, {n: v.copy() for n, v in a.items()}
            hi[name][pos] += eps
            lo[name][pos] -= eps
            diff = _numpy("tanh", two_sums, recurrent, hi) - _numpy("tanh", two_sums, recurrent, lo)
            g[pos] = np.sum(up * diff) / (2 * eps)
        np.testing.assert_allclose(grads[name], g, rtol=1e-6, atol=1e-8, err_msg=name)


def test_a_multi_region_weight_gradient_takes_rows_and_a_guarded_sum_does_not():
    grad_R = _formula("tanh", False, True).vjp(["V"])["V"].formulas[-1]   # t = 0 from h0, t >= 1 from h
    assert _takes_rows(grad_R)  # the loops below the gather's reuse threshold (a Branch's other side)
    (branch,) = lower(grad_R, row_reductions=True).steps  # its t >= 1 region gathered, then a GEMM
    assert any(isinstance(s, Contract) for s in branch.then_steps)
    guarded = symdl.Formula(sp.Eq(y[b, t, j], sp.Piecewise((sp.Sum(W[k, j] * x[b, t, k], (k, 0, K - 1)), t > 0),
                                                           (0, True))), name="rows_guarded")
    assert not _takes_rows(guarded)


# sums down columns over a box of summed indices (a convolution's bias gradient): partial rows per
# outermost summed index in parallel, then their total; summed axes before, between or after others
BOXES = [("bijo->o", "Σ_bij g"), ("bijo->jo", "Σ_bi g"), ("boij->o", "o before the summed axes"),
         ("bio->io", "one summed index"), ("btko->o", "3 summed, 4-D")]


@pytest.mark.parametrize("spec, dtype", list(itertools.product([s for s, _ in BOXES], ["float32", "float64"])))
def test_box_sums_down_columns_equal_numpy(spec, dtype):
    ins, out = spec.split("->")
    dims = {n: sp.Symbol(f"N{n}", integer=True, positive=True) for n in ins}
    idx = {n: sp.Idx(n, dims[n]) for n in ins}
    g = sp.IndexedBase("g")
    summed = [n for n in ins if n not in out]
    f = symdl.Formula(sp.Eq(y[[idx[n] for n in out]], sp.Sum(g[[idx[n] for n in ins]], *[idx[n] for n in summed])),
                      name=f"box_{ins}_{out}")
    kern = f.compile()
    names = [s.name for s in kern.program.steps]
    partial = len(summed) >= 2 and ins.index(summed[0]) < ins.index(out[-1])
    assert ("partial_rows" in names) == partial, names
    rng = np.random.default_rng(len(spec))
    for lengths in ({n: 1 for n in ins}, {n: int(v) for n, v in zip(ins, rng.integers(2, 7, len(ins)))}):
        a = rng.standard_normal([lengths[n] for n in ins]).astype(dtype)
        tol = 1e-5 if dtype == "float32" else 1e-12
        np.testing.assert_allclose(kern(g=a), np.einsum(spec, a.astype(np.float64)), rtol=tol, atol=tol)


def test_a_sum_along_the_contiguous_axis_keeps_its_accumulator():
    """A softmax gradient's Σ_s exp(x[b, t, s] - m[b, t]) g[b, t, s] reads the row index t and, as
    its contiguous axis, the summed s: the row schedule would read x and g S elements apart (it
    once took this sum, found in attention's gradient). The plain accumulator runs, and equals NumPy."""
    s = sp.Idx("s", K)
    m, g = sp.IndexedBase("m"), sp.IndexedBase("g")
    f = symdl.Formula(sp.Eq(y[b, t], -sp.Sum(sp.exp(x[b, t, s] - m[b, t]) * g[b, t, s], s)), name="rows_softmax_grad")
    assert not _takes_rows(f)
    rng = np.random.default_rng(4)
    xs, gs, ms = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(f.compile()(x=xs, g=gs, m=ms), -(np.exp(xs - ms[..., None]) * gs).sum(-1),
                               rtol=1e-12, atol=1e-12)
