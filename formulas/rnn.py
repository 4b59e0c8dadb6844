"""F6 the Elman RNN, h[t] = f(x[t] W + h[t-1] R + b), y[t] = h[t] V + c, as a recurrence.

Keras layout: x[b, t, k] (batch, time, features), kernel W[k, j], recurrent kernel R[l, j]; the
initial state h0[b, j] is an input. The step axis runs inside one kernel; its gradient is the
adjoint recurrence (backpropagation through time), derived, not written (autodiff/recurrence.py).
`simple_rnn` (not an entry) is the program of symdl.nn's SimpleRNN layer.
"""
import sympy as sp

from symdl.declare import Formula, Program, relu

from . import entry
from .common import idx

B, T, K, H, O = sp.symbols("B T K H O", integer=True, positive=True)
ACTIVATIONS = {"tanh": sp.tanh, "relu": relu}
# the symbolic check nests f T steps deep: relu's regions multiply with each step, so it takes two
SIZES = {"B": 1, "T": 3, "K": 2, "H": 2, "O": 2}
SIZES_RELU = dict(SIZES, T=2, K=1)


def states(activation: str = "tanh", x="x", W="W", R="R", b="bias", h0="h0", h="h") -> Formula:
    """h[b, t, j] = f(Σ_k x[b, t, k] W[k, j] + Σ_l h[b, t-1, l] R[l, j] + bias[j]), h[b, -1] = h0[b]."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"rnn activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    bi, t, j, k, l = idx("b", B), idx("t", T), idx("j", H), idx("k", K), idx("l", H)
    X, Wt, Rt, bt, H0, Hs = (sp.IndexedBase(n) for n in (x, W, R, b, h0, h))
    pre = sp.Sum(X[bi, t, k] * Wt[k, j], k) + sp.Sum(Hs[bi, t - 1, l] * Rt[l, j], l) + bt[j]
    return Formula(sp.Eq(Hs[bi, t, j], ACTIVATIONS[activation](pre)), name=f"rnn_{activation}_states",
                   initial={h: H0}, sizes=SIZES if activation == "tanh" else SIZES_RELU)


def last_state(h="h", out="h_last") -> Formula:
    """h_last[b, j] = h[b, T - 1, j] (Keras return_sequences=False)."""
    bi, j = idx("b", B), idx("j", H)
    Hs = sp.IndexedBase(h, shape=(B, T, H))
    return Formula(sp.Eq(sp.IndexedBase(out)[bi, j], Hs[bi, T - 1, j]), name="rnn_last_state", sizes=SIZES)


def simple_rnn(activation: str, return_sequences: bool) -> Formula | Program:
    """Keras SimpleRNN: the states h[b, t, j] from x, W, R, bias, h0 (one kernel, time loop inside),
    then, unless `return_sequences`, the last state h_last[b, j]."""
    h = states(activation)
    return h if return_sequences else Program([h, last_state()], name=f"rnn_{activation}_last")


def elman(activation: str = "tanh") -> Program:
    """States, then the output sequence y[b, t, o] = Σ_j h[b, t, j] V[j, o] + c[o]."""
    bi, t, o, j = idx("b", B), idx("t", T), idx("o", O), idx("j", H)
    Hs, V, c, Y = (sp.IndexedBase(n) for n in ("h", "V", "c", "y"))
    out = Formula(sp.Eq(Y[bi, t, o], sp.Sum(Hs[bi, t, j] * V[j, o], j) + c[o]), name="rnn_output",
                  sizes=SIZES if activation == "tanh" else SIZES_RELU)
    return Program([states(activation), out], name=f"rnn_{activation}")


entry("rnn_tanh", "F6", "Elman RNN y[t] = V h[t] + c, h[t] = tanh(W x[t] + R h[t-1] + b)")(
    lambda: elman("tanh"))
entry("rnn_relu", "F6", "Elman RNN with relu: h[t] = relu(W x[t] + R h[t-1] + b)")(lambda: elman("relu"))
entry("rnn_states", "F6", "the recurrence alone: every state h[b, t, j] (return_sequences=True)")(
    lambda: states("tanh"))
entry("rnn_last", "F6", "the recurrence, then its last state h[b, T-1, j] (return_sequences=False)")(
    lambda: Program([states("tanh"), last_state()], name="rnn_last"))
