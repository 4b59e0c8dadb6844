"""Systems of recurrences (issue 11): formulas of a Program reading each other's earlier steps run
as one kernel, their gradient as the adjoint system. LSTM and GRU against NumPy written here and
against central differences of that NumPy forward; a small coupled system with neighbour reads; the
declaration's errors."""
import numpy as np
import pytest
import sympy as sp
from symdl.formulas.gated import gru, lstm

import symdl
from symdl import formulas


def sigmoid(u):
    return 1 / (1 + np.exp(-u))


def numpy_lstm(x, W, U, bias, h0, c0):
    """Keras LSTM, gates i, f, c, o packed along the last axis of W (K, 4H), U (H, 4H), bias (4H)."""
    h, c, out = h0, c0, []
    for t in range(x.shape[1]):
        i, f, g, o = np.split(x[:, t] @ W + h @ U + bias, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def numpy_gru(x, W, U, bias, h0):
    """Keras GRU, reset_after=True: gates z, r, h packed in W (K, 3H), U (H, 3H); bias (2, 3H)."""
    h, out = h0, []
    for t in range(x.shape[1]):
        xz, xr, xh = np.split(x[:, t] @ W + bias[0], 3, axis=1)
        rz, rr, rh = np.split(h @ U + bias[1], 3, axis=1)
        z, r = sigmoid(xz + rz), sigmoid(xr + rr)
        h = z * h + (1 - z) * np.tanh(xh + r * rh)
        out.append(h)
    return np.stack(out, 1)


def lstm_inputs(rng, b, t, k, h):
    return {"x": rng.normal(size=(b, t, k)), "W": rng.normal(size=(k, 4 * h)) * 0.5,
            "U": rng.normal(size=(h, 4 * h)) * 0.4, "bias": rng.normal(size=4 * h) * 0.2,
            "h0": rng.normal(size=(b, h)) * 0.5, "c0": rng.normal(size=(b, h)) * 0.5}


def gru_inputs(rng, b, t, k, h):
    return {"x": rng.normal(size=(b, t, k)), "W": rng.normal(size=(k, 3 * h)) * 0.5,
            "U": rng.normal(size=(h, 3 * h)) * 0.4, "bias": rng.normal(size=(2, 3 * h)) * 0.2,
            "h0": rng.normal(size=(b, h)) * 0.5}


def as_gates(a: dict, gates: int) -> dict:
    """Keras' packed weights as the catalog reads them: (K, G·H) -> (K, G, H), a reshape."""
    h = a["h0"].shape[1]
    out = dict(a, W=a["W"].reshape(-1, gates, h), U=a["U"].reshape(-1, gates, h))
    out["bias"] = a["bias"].reshape(gates, h) if gates == 4 else a["bias"].reshape(2, gates, h)
    return out


CELLS = {"lstm": (lstm, numpy_lstm, lstm_inputs, 4), "gru": (gru, numpy_gru, gru_inputs, 3)}


def directional_check(numpy_forward, a, got, G, rng, rtol):
    """<vjp, v> against central differences of the NumPy forward along a random v, per input."""
    for name, value in a.items():
        v = rng.normal(size=value.shape)
        eps = 1e-6
        plus = numpy_forward(**dict(a, **{name: value + eps * v}))
        minus = numpy_forward(**dict(a, **{name: value - eps * v}))
        fd = ((plus - minus) * G).sum() / (2 * eps)
        an = (got[name].reshape(value.shape) * v).sum()
        assert abs(an - fd) <= rtol * max(1.0, abs(fd)), (name, an, fd)


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("b,t,k,h", [(1, 1, 1, 1), (3, 20, 4, 5), (2, 7, 6, 3)])
def test_gated_cells_match_numpy_forward_and_finite_differences(cell, b, t, k, h):
    build, numpy_forward, draw, gates = CELLS[cell]
    rng = np.random.default_rng(b * 100 + t)
    a = draw(rng, b, t, k, h)
    kern = build().compile()
    got = kern(**as_gates(a, gates))
    np.testing.assert_allclose(got, numpy_forward(**a), atol=1e-12)
    G = rng.normal(size=got.shape)
    directional_check(numpy_forward, a, kern.vjp(G, **as_gates(a, gates)), G, rng, 1e-6)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_gated_cells_in_float32_follow_float64(cell):
    build, _, draw, gates = CELLS[cell]
    rng = np.random.default_rng(9)
    a = as_gates(draw(rng, 3, 20, 4, 5), gates)
    kern = build().compile()
    a32 = {n: v.astype(np.float32) for n, v in a.items()}
    y64, y32 = kern(**a), kern(**a32)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, atol=2e-5)
    G = rng.normal(size=y64.shape)
    g64, g32 = kern.vjp(G, **a), kern.vjp(G.astype(np.float32), **a32)
    for n in a:
        assert g32[n].dtype == np.float32
        np.testing.assert_allclose(g32[n], g64[n], atol=2e-4 * max(1.0, np.abs(g64[n]).max()), err_msg=n)


def test_last_state_programs_end_in_the_final_step():
    rng = np.random.default_rng(4)
    a = lstm_inputs(rng, 2, 6, 3, 4)
    last = lstm(return_sequences=False).compile()(**as_gates(a, 4))
    np.testing.assert_allclose(last, numpy_lstm(**a)[:, -1], atol=1e-12)


T, N = sp.symbols("T N", integer=True, positive=True)
t, i = sp.Idx("t", T), sp.Idx("i", N)
u, v, a_, w, v0 = (sp.IndexedBase(n) for n in ("u", "v", "a", "w", "v0"))
V = sp.IndexedBase("v", shape=(T, N))


def coupled():
    """u reads v one step back at the neighbour i - 1 (zero outside v and v0); v reads u at the
    same step."""
    fu = symdl.Formula(sp.Eq(u[t, i], sp.tanh(a_[t, i] + V[t - 1, i - 1])), name="u",
                       initial={"v": sp.IndexedBase("v0", shape=(N,))}, zero_padded=["v", "v0"])
    fv = symdl.Formula(sp.Eq(v[t, i], u[t, i] * w[i] + v[t - 1, i] / 2), name="v", initial={"v": v0})
    return symdl.Program([fv, fu], name="coupled", outputs=["v"])


def numpy_coupled(a, w, v0):
    prev, out = v0, []
    for at in a:
        shifted = np.concatenate([[0.0], prev[:-1]])
        prev = np.tanh(at + shifted) * w + prev / 2
        out.append(prev)
    return np.stack(out)


def test_a_coupled_system_with_neighbour_reads_matches_numpy():
    prog = coupled()
    assert [s.outputs for s in prog.systems] == [("u", "v")]
    rng = np.random.default_rng(2)
    arrays = {"a": rng.normal(size=(9, 5)), "w": rng.normal(size=5), "v0": rng.normal(size=5)}
    kern = prog.compile()
    got = kern(**arrays)
    np.testing.assert_allclose(got, numpy_coupled(**arrays), atol=1e-12)
    G = rng.normal(size=got.shape)
    directional_check(numpy_coupled, arrays, kern.vjp(G, **arrays), G, rng, 1e-6)
    symdl.verify.all(prog, sizes={"T": 3, "N": 2})


def test_system_default_outputs_are_the_states_nothing_else_reads():
    fu, fv = coupled().formulas
    assert symdl.Program([fu, fv], name="p").outputs == ("u", "v")


def test_a_cycle_at_the_same_step_is_refused():
    fu = symdl.Formula(sp.Eq(u[t, i], sp.tanh(a_[t, i] + V[t, i])), name="u")
    fv = symdl.Formula(sp.Eq(v[t, i], u[t, i] * w[i] + v[t - 1, i]), name="v", initial={"v": v0})
    with pytest.raises(symdl.FormulaError, match="cycle through .*earlier step"):
        symdl.Program([fu, fv], name="same_step")


def test_a_system_over_two_step_axes_is_refused():
    fu = symdl.Formula(sp.Eq(u[t, i], sp.tanh(a_[t, i] + V[t, i - 1])), name="u",
                       initial={"v": sp.IndexedBase("v1")})
    fv = symdl.Formula(sp.Eq(v[t, i], u[t, i] * w[i] + v[t - 1, i]), name="v", initial={"v": v0})
    with pytest.raises(symdl.FormulaError, match="one shared index"):
        symdl.Program([fu, fv], name="two_axes")


def test_initial_names_a_tensor_the_formula_reads_at_an_earlier_step():
    with pytest.raises(symdl.FormulaError, match="reads no earlier step of w"):
        symdl.Formula(sp.Eq(u[t, i], sp.tanh(a_[t, i] + V[t - 1, i])), name="u",
                      initial={"v": v0, "w": sp.IndexedBase("w0")})


def test_catalog_entries_are_systems():
    for name, states in (("lstm", {"c", "h"}), ("gru", {"h"})):
        prog = formulas.get(name)
        assert len(prog.systems) == 1 and states <= set(prog.systems[0].outputs)
        grad = prog.vjp()
        assert [s.direction for s in grad.systems] == [1, -1]  # the adjoint system runs backwards


def test_a_system_whose_length_the_call_gives():
    """No input carries T: the system kernel and its adjoint take dims= like any kernel."""
    fu = symdl.Formula(sp.Eq(u[t, i], sp.tanh(w[i] + V[t - 1, i])), name="u", initial={"v": v0})
    fv = symdl.Formula(sp.Eq(v[t, i], u[t, i] * w[i] + v[t - 1, i] / 2), name="v", initial={"v": v0})
    kern = symdl.Program([fu, fv], name="coupled_dims", outputs=["v"]).compile()
    rng = np.random.default_rng(6)
    wv, start = rng.normal(size=3), rng.normal(size=3)

    def numpy_forward(w, v0):
        prev, out = v0, []
        for _ in range(5):
            prev = np.tanh(w + prev) * w + prev / 2
            out.append(prev)
        return np.stack(out)

    np.testing.assert_allclose(kern(dims={"T": 5}, w=wv, v0=start), numpy_forward(wv, start), atol=1e-12)
    G = rng.normal(size=(5, 3))
    got = kern.vjp(G, dims={"T": 5}, w=wv, v0=start)
    directional_check(numpy_forward, {"w": wv, "v0": start}, got, G, rng, 1e-6)
