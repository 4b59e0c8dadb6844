"""A matrix product's elementwise epilogue in place (loops/lower.py `_epilogue_in_place`): the GEMM
writes the output and the loops update each element from itself, with no temporary, exactly when
every read of the product is the output's own element outside any reduction. By class: random
epilogues over 2-D and grouped products against NumPy written here, both dtypes; the cases that
must keep their temporary (a read of another element, a read inside a reduction) checked in the
lowered program and against NumPy too."""
import itertools

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.loops.ir import Branch, Contract, MatMul
from symdl.loops.lower import _epilogue_in_place
from symdl.passes.contraction import Contraction

TOL = {"float32": 3e-5, "float64": 1e-12}
B, M, N, K = (sp.Symbol(n, integer=True, positive=True) for n in "BMNK")
i, j, k, m = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N), sp.Idx("m", M)
x, W, W2, b, y = (sp.IndexedBase(n, real=True) for n in ("x", "W", "W2", "b", "y"))

# epilogues of the product P = Σ_k x[i, k] W[k, j]: sympy expression, NumPy of (P, b)
EPILOGUES = [
    (lambda P: P + b[j], lambda P, bb: P + bb),
    (lambda P: sp.Max(0, P + b[j]), lambda P, bb: np.maximum(P + bb, 0)),
    (lambda P: sp.tanh(2 * P - b[j]), lambda P, bb: np.tanh(2 * P - bb)),
    (lambda P: P * b[j] + P ** 2, lambda P, bb: P * bb + P ** 2),
    (lambda P: sp.Piecewise((P, P > b[j]), (b[j] * P, True)), lambda P, bb: np.where(P > bb, P, bb * P)),
]


def _steps(kern, steps=None) -> list:
    """The library calls of a kernel, both sides of a Branch included."""
    out = []
    for s in kern.program.steps if steps is None else steps:
        if isinstance(s, Branch):
            out += _steps(kern, s.then_steps) + _steps(kern, s.else_steps)
        elif isinstance(s, (MatMul, Contract)):
            out.append(s)
    return out


@pytest.mark.parametrize("case, dtype", list(itertools.product(range(len(EPILOGUES)), ["float32", "float64"])))
def test_epilogue_runs_in_place_and_equals_numpy(case, dtype):
    sym, ref = EPILOGUES[case]
    f = symdl.Formula(sp.Eq(y[i, j], sym(sp.Sum(x[i, k] * W[k, j], k))), name=f"epilogue_{case}")
    kern = f.compile()
    library = _steps(kern)
    assert len(library) == 1 and library[0].out == "y" and not kern.program.temps
    rng = np.random.default_rng(case)
    for nb, nm, nn in [(1, 1, 1), (7, 5, 3), (33, 17, 64)]:
        xb, wb = rng.standard_normal((nb, nn)).astype(dtype), rng.standard_normal((nn, nm)).astype(dtype)
        bb = rng.standard_normal(nm).astype(dtype)
        got = kern(x=xb, W=wb, b=bb)
        np.testing.assert_allclose(got, ref(xb.astype(np.float64) @ wb, bb), rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_grouped_product_epilogue_in_place(dtype):
    """A product over two summed indices (a grouped contraction) with a bias over two output axes."""
    p, q = sp.Idx("p", K), sp.Idx("q", N)
    x4, w3, c = sp.IndexedBase("x4"), sp.IndexedBase("w3"), sp.IndexedBase("c")
    body = sp.Max(0, sp.Sum(x4[i, p, q] * w3[p, q, j], p, q) - c[j])
    f = symdl.Formula(sp.Eq(y[i, j], body), name="grouped_epilogue")
    kern = f.compile()
    assert [s.out for s in _steps(kern)] == ["y"]
    rng = np.random.default_rng(1)
    xb, wb, cb = (rng.standard_normal(s).astype(dtype) for s in [(6, 4, 5), (4, 5, 3), (3,)])
    want = np.maximum(np.einsum("ipq,pqj->ij", xb.astype(np.float64), wb) - cb, 0)
    np.testing.assert_allclose(kern(x4=xb, w3=wb, c=cb), want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("name", ["softmax", "flipped", "row_constant", "two_products"])
def test_mixed_epilogues_equal_numpy(name):
    """Epilogues beside other reductions and products: the in-place output is read only at its own
    element (other products and sums take temporaries or accumulators)."""
    sq = sp.Idx("j", B)
    bodies = {
        "softmax": (y[i, j], sp.exp(sp.Sum(x[i, k] * W[k, j], k)) / sp.Sum(sp.exp(sp.Sum(x[i, k] * W[k, m], k)), m),
                    lambda xb, wb, w2: np.exp(xb @ wb) / np.exp(xb @ wb).sum(1, keepdims=True)),
        "flipped": (y[i, j], sp.Sum(x[i, k] * W[k, j], k) + sp.Sum(x[i, k] * W[k, M - 1 - j], k),
                    lambda xb, wb, w2: xb @ wb + xb @ wb[:, ::-1]),
        "row_constant": (y[i, j], sp.Sum(x[i, k] * W[k, j], k) - sp.Sum(x[i, k] * W[k, 0], k),
                         lambda xb, wb, w2: xb @ wb - (xb @ wb)[:, :1]),
        "two_products": (y[i, sq], sp.Sum(x[i, k] * W2[sq, k], k) - 2 * sp.Sum(x[sq, k] * W2[i, k], k),
                         lambda xb, wb, w2: xb @ w2.T - 2 * w2 @ xb.T),
    }
    lhs, rhs, ref = bodies[name]
    kern = symdl.Formula(sp.Eq(lhs, rhs), name=f"mixed_{name}").compile()
    assert "y" in [s.out for s in _steps(kern)]
    rng = np.random.default_rng(3)
    for nb in (3, 20):  # both sides of a gather's size Branch
        xb, wb, w2 = rng.standard_normal((nb, 4)), rng.standard_normal((4, 5)), rng.standard_normal((nb, 4))
        args = {"x": xb, "W2": w2} if name == "two_products" else {"x": xb, "W": wb}
        np.testing.assert_allclose(kern(**args), ref(xb, wb, w2), rtol=1e-12, atol=1e-12)


def test_guard_refuses_reads_of_other_elements():
    """The rule itself, on bodies extraction does not make today: a product read at another element
    or inside a reduction keeps its temporary."""
    t0 = sp.IndexedBase("T0", real=True)
    f = symdl.Formula(sp.Eq(y[i, j], sp.Sum(x[i, k] * W[k, j], k)), name="rule")
    c = Contraction("T0", "x", "W", False, False, (B, M))
    r, s = f.indices  # the formula's own index symbols
    assert _epilogue_in_place(f, t0[r, s] + b[s], [c]) == "T0"
    assert _epilogue_in_place(f, t0[r, s] + t0[r, 0], [c]) is None
    assert _epilogue_in_place(f, t0[s, r] - t0[r, s], [c]) is None
    assert _epilogue_in_place(f, t0[r, s] * sp.Sum(t0[r, m], m), [c]) is None
    assert _epilogue_in_place(f, t0[r, s] * sp.Sum(t0[r, s] * x[r, k], k), [c]) is None
    assert _epilogue_in_place(f, t0[r, s] + y[r, 0], [c]) is None  # reads its own output elsewhere
