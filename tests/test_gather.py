"""Gathers by integer tensors and their scatter-add gradients."""
import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import formulas
from symdl.loops import ScatterAdd, lower, trip_count


def _walk(body):
    for s in body:
        yield s
        for attr in ("body", "then", "orelse"):
            yield from _walk(getattr(s, attr, ()))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_embedding_lookup_and_scatter_add_gradient_match_numpy(dtype):
    rng = np.random.default_rng(0)
    E = rng.normal(size=(11, 5)).astype(dtype)
    tok = rng.integers(0, 11, size=(4, 9))
    tok[0, :3] = 7  # repeated ids: their gradients add up
    kern = formulas.get("embedding").compile()
    out = kern(E=E, tok=tok)
    np.testing.assert_array_equal(out, E[tok])
    G = rng.normal(size=out.shape).astype(dtype)
    gE = kern.vjp(G, E=E, tok=tok)["E"]
    want = np.zeros(E.shape)
    np.add.at(want, tok, G.astype(np.float64))
    np.testing.assert_allclose(gE, want, rtol=1e-6, atol=1e-6)
    assert gE.dtype == dtype


def test_scatter_gradient_costs_the_lookup_not_the_vocabulary():
    f = formulas.get("embedding")
    grad = lower(f.vjp(["E"])["E"])
    assert any(isinstance(s, ScatterAdd) for step in grad.steps for s in _walk(step.body))
    dims = lambda v: {"B": 32, "S": 20, "V": v, "D": 16}  # noqa: E731
    forward = trip_count(lower(f), dims(50_000))
    # zeroing the V x D gradient, plus the lookup's own B x S x D work: no V x B x S term
    assert trip_count(grad, dims(50_000)) <= forward + 50_000 * 16 + 50_000
    assert trip_count(grad, dims(100_000)) - trip_count(grad, dims(50_000)) <= 2 * 50_000 * 16


def test_out_of_range_ids_are_refused_before_running():
    kern = formulas.get("embedding").compile()
    E = np.zeros((4, 2))
    with pytest.raises(ValueError, match="tok"):
        kern(E=E, tok=np.array([[0, 4]]))
    with pytest.raises(ValueError, match="tok"):
        kern.vjp(np.zeros((1, 2, 2)), E=E, tok=np.array([[0, -1]]))


def test_gather_inside_a_sum_scatters_a_weighted_value():
    """A bag of embeddings weighted per token: grad_E[p, d] = Σ_{b,s} [tok = p] w[b, s] g[b, d]."""
    B, S, V, D = sp.symbols("B S V D", integer=True, positive=True)
    b, s, d = sp.Idx("b", B), sp.Idx("s", S), sp.Idx("d", D)
    E, tok = sp.IndexedBase("E", shape=(V, D)), sp.IndexedBase("tok", integer=True)
    w, y = sp.IndexedBase("w"), sp.IndexedBase("y")
    f = symdl.Formula(sp.Eq(y[b, d], sp.Sum(w[b, s] * E[tok[b, s], d], s)), name="bag")
    rng = np.random.default_rng(1)
    Ev, tk, wv = rng.normal(size=(6, 3)), rng.integers(0, 6, size=(2, 4)), rng.normal(size=(2, 4))
    kern = f.compile()
    np.testing.assert_allclose(kern(E=Ev, tok=tk, w=wv), np.einsum("bs,bsd->bd", wv, Ev[tk]))
    G = rng.normal(size=(2, 3))
    want = np.zeros_like(Ev)
    np.add.at(want, tk, wv[..., None] * G[:, None, :])
    np.testing.assert_allclose(kern.vjp(G, E=Ev, tok=tk, w=wv)["E"], want, atol=1e-12)
    symdl.verify.symbolic(f, sizes={B: 2, S: 2, V: 3, D: 1})
