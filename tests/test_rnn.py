"""F6 Elman RNN as a recurrence: forward and backpropagation through time against NumPy, the
gradients' cost against the forward's, and the declaration's errors."""
import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import formulas
from symdl.formulas.rnn import states
from symdl.loops import lower, trip_count

STEPS = 24


def numpy_rnn(x, W, R, bias, h0, act):
    """Forward states (B, T, H) and a function giving the gradients by a hand-written BPTT."""
    f = np.tanh if act == "tanh" else (lambda u: np.maximum(u, 0))
    hs, h = [], h0
    for t in range(x.shape[1]):
        h = f(x[:, t] @ W + h @ R + bias)
        hs.append(h)
    H = np.stack(hs, axis=1)

    def grads(G):
        gW, gR, gb = np.zeros_like(W), np.zeros_like(R), np.zeros_like(bias)
        gx, carry = np.zeros_like(x), np.zeros_like(h0)
        for t in reversed(range(x.shape[1])):
            total = G[:, t] + carry
            d = total * (1 - H[:, t] ** 2) if act == "tanh" else total * (H[:, t] > 0)
            prev = H[:, t - 1] if t else h0
            gW += x[:, t].T @ d
            gR += prev.T @ d
            gb += d.sum(0)
            gx[:, t] = d @ W.T
            carry = d @ R.T
        return {"x": gx, "W": gW, "R": gR, "bias": gb, "h0": carry}

    return H, grads


def inputs(rng, b=3, t=STEPS, k=4, h=5, dtype=np.float64):
    a = dict(x=rng.normal(size=(b, t, k)), W=rng.normal(size=(k, h)) * 0.5,
             R=rng.normal(size=(h, h)) * 0.4, bias=rng.normal(size=h) * 0.1, h0=rng.normal(size=(b, h)))
    return {n: v.astype(dtype) for n, v in a.items()}


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_states_and_bptt_match_numpy_over_many_steps(act, dtype, tol):
    rng = np.random.default_rng(1)
    a = inputs(rng, dtype=dtype)
    kern = states(act).compile()
    H = kern(**a)
    want, grads = numpy_rnn(*(a[n].astype(np.float64) for n in ("x", "W", "R", "bias", "h0")), act)
    assert H.dtype == dtype and H.shape == want.shape
    np.testing.assert_allclose(H, want, atol=tol, rtol=tol)
    G = rng.normal(size=H.shape).astype(dtype)
    got = kern.vjp(G, **a)
    for name, ref in grads(G.astype(np.float64)).items():
        assert got[name].dtype == dtype
        scale = max(1.0, np.abs(ref).max())
        np.testing.assert_allclose(got[name] / scale, ref / scale, atol=tol * 10, err_msg=name)


def test_output_sequence_program_gradients_match_numpy():
    rng = np.random.default_rng(2)
    a = inputs(rng, t=21)
    V, c = rng.normal(size=(5, 2)), rng.normal(size=2)
    prog = formulas.get("rnn_tanh").compile()
    y = prog(**a, V=V, c=c)
    H, grads = numpy_rnn(a["x"], a["W"], a["R"], a["bias"], a["h0"], "tanh")
    np.testing.assert_allclose(y, H @ V + c, atol=1e-12)
    G = rng.normal(size=y.shape)
    got = prog.vjp(G, **a, V=V, c=c)
    want = grads(G @ V.T)
    for name in ("x", "W", "R", "bias", "h0"):
        np.testing.assert_allclose(got[name], want[name], atol=1e-10, err_msg=name)
    np.testing.assert_allclose(got["V"], np.einsum("btj,bto->jo", H, G), atol=1e-10)
    np.testing.assert_allclose(got["c"], G.sum((0, 1)), atol=1e-10)


def test_last_state_is_the_final_step():
    rng = np.random.default_rng(3)
    a = inputs(rng, t=20)
    last = formulas.get("rnn_last").compile()(**a)
    H, _ = numpy_rnn(a["x"], a["W"], a["R"], a["bias"], a["h0"], "tanh")
    np.testing.assert_allclose(last, H[:, -1], atol=1e-12)


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_gradient_kernels_cost_a_constant_times_the_forward(act):
    """The adjoint reads the forward states (1 - h², h > 0) instead of recomputing the
    pre-activation under its sum over j: each gradient kernel's trips stay within a small factor
    of the forward's, and grow linearly in the number of steps."""
    f = states(act)
    grads = symdl.Program([f], name="p").vjp()
    forward = lambda n: trip_count(lower(f), {"B": 4, "T": n, "K": 8, "H": 16})  # noqa: E731
    for g in grads.formulas[1:]:
        cost = lambda n: trip_count(lower(g), {"B": 4, "T": n, "K": 8, "H": 16})  # noqa: E731
        assert cost(40) <= 3 * forward(40), g.name
        assert cost(80) <= 2.2 * cost(40), g.name


def test_adjoint_is_a_reverse_recurrence():
    g = symdl.Program([states("tanh")], name="p").vjp()
    adjoint = next(f for f in g.formulas if f.recurrence is not None and f.output.name.endswith("bptt"))
    assert adjoint.recurrence.direction == -1
    assert "tanh" not in str(adjoint.body)  # the states are read, not recomputed


T, H = sp.symbols("T H", integer=True, positive=True)
t, j = sp.Idx("t", T), sp.Idx("j", H)
h, x, h0 = sp.IndexedBase("h"), sp.IndexedBase("x"), sp.IndexedBase("h0")


def test_reading_an_earlier_step_needs_an_initial_state():
    with pytest.raises(symdl.FormulaError, match="initial state"):
        symdl.Formula(sp.Eq(h[t, j], sp.tanh(x[t, j] + h[t - 1, j])), name="no_init")


def test_reading_the_same_step_is_refused():
    with pytest.raises(symdl.FormulaError, match="earlier step"):
        symdl.Formula(sp.Eq(h[t, j], x[t, j] + h[t, j]), name="same_step")


def test_reading_both_directions_is_refused():
    with pytest.raises(symdl.FormulaError, match="both directions"):
        symdl.Formula(sp.Eq(h[t, j], x[t, j] + h[t - 1, j] + h[t + 1, j]), name="both",
                      initial={"h": h0})


def test_a_scalar_recurrence_compiles_and_differentiates():
    """An exponential moving average y[t] = a y[t-1] + (1 - a) x[t]: any formula in the notation."""
    y = sp.IndexedBase("y")
    ema = symdl.Formula(sp.Eq(y[t], sp.Symbol("a") * y[t - 1] + (1 - sp.Symbol("a")) * x[t]),
                        name="ema", initial={"y": sp.IndexedBase("y0")})
    xs = np.random.default_rng(4).normal(size=30)
    got = ema.compile()(x=xs, a=0.9, y0=0.5)
    want, prev = [], 0.5
    for v in xs:
        prev = 0.9 * prev + 0.1 * v
        want.append(prev)
    np.testing.assert_allclose(got, want, atol=1e-12)
    symdl.verify.numeric(ema, sizes={T: 6})
