"""The public contract of the compiler core, exactly as documented in the README."""
import numpy as np
import sympy as sp

import symdl

B, N, M = sp.symbols("B N M", integer=True, positive=True)
i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
x, W, b, y = map(sp.IndexedBase, "x W b y".split())


def make_dense():
    return symdl.Formula(sp.Eq(y[i, j], sp.Sum(x[i, k] * W[k, j], k) + b[j]), name="dense")


def test_dense_contract_float64_and_float32():
    dense = make_dense()
    kern = dense.compile()
    rng = np.random.default_rng(0)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        X = rng.standard_normal((5, 3)).astype(dtype)
        Wv = rng.standard_normal((3, 4)).astype(dtype)
        bv = rng.standard_normal(4).astype(dtype)
        G = rng.standard_normal((5, 4)).astype(dtype)
        Y = kern(x=X, W=Wv, b=bv)
        assert Y.dtype == dtype
        np.testing.assert_allclose(Y, X @ Wv + bv, rtol=tol, atol=tol)
        grads = kern.vjp(G, x=X, W=Wv, b=bv)
        assert set(grads) == {"x", "W", "b"}
        np.testing.assert_allclose(grads["x"], G @ Wv.T, rtol=tol, atol=tol)
        np.testing.assert_allclose(grads["W"], X.T @ G, rtol=tol, atol=tol)
        np.testing.assert_allclose(grads["b"], G.sum(0), rtol=tol, atol=tol)
        assert all(g.dtype == dtype for g in grads.values())


def test_symbolic_gradient_formulas_print_and_compile():
    dense = make_dense()
    gforms = dense.vjp()
    assert set(gforms) == {"x", "W", "b"}
    assert "grad_y" in gforms["x"].input_names
    assert "grad_y" in str(gforms["W"])
    assert "\\sum" in gforms["W"].latex() and "grad_{W}" in gforms["W"].latex()
    assert "grad_x" in gforms["x"].pretty()
    rng = np.random.default_rng(1)
    G, Wv = rng.standard_normal((2, 4)), rng.standard_normal((3, 4))
    np.testing.assert_allclose(gforms["x"].compile()(grad_y=G, W=Wv), G @ Wv.T)


def test_verify_entry_points():
    dense = make_dense()
    assert symdl.verify.symbolic(dense, sizes={B: 2, N: 3, M: 2}) == 2 * 3 + 3 * 2 + 2
    assert symdl.verify.numeric(dense) < 1e-6


def test_symbolic_verification_fails_on_a_wrong_gradient(monkeypatch):
    """The check can fail: a gradient formula with a wrong sign is caught."""
    import pytest

    from symdl.autodiff.vjp import _VJPS
    dense = make_dense()
    good = dense.vjp()["b"]
    bad = symdl.Formula.from_parts(good.name, good.output.name, good.indices, good.ranges, -good.body,
                                   {t.name: t.shape for t in good.inputs})
    # (formula key, input, reuse_output): the cache vjp() reads, owned by autodiff
    monkeypatch.setitem(_VJPS, (dense.key(), "b", False), bad)
    with pytest.raises(AssertionError, match="d/db"):
        symdl.verify.symbolic(dense, sizes={B: 2, N: 2, M: 2})
    with pytest.raises(AssertionError, match="finite differences"):
        symdl.verify.numeric(dense)
