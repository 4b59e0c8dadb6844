"""F6 gated recurrences, LSTM and GRU, as systems of recurrences (Keras' equations and gate order).

Keras layout: x[b, t, k] (batch, time, features). Keras packs the gates' columns in one kernel
(K, 4H) ordered i, f, c, o (LSTM) or z, r, h (GRU); the formulas read the same memory as (K, 4, H),
gate g's columns W[k, g, :] (a reshape, no copy). Each gate is a state of its own: the forward
pass keeps it, and the gradient reads it instead of recomputing its sums (linear cost).

    i, f, g, o = σ(x W_i + h[t-1] U_i + b_i), σ(..f), tanh(..c), σ(..o)
    c[t] = f c[t-1] + i g,     h[t] = o tanh(c[t])                              (LSTM)

    z, r = σ(x W_z + b_z + h[t-1] U_z + rb_z), σ(..r)
    n = tanh(x W_h + b_h + r (h[t-1] U_h + rb_h)),  h[t] = z h[t-1] + (1 - z) n   (GRU, reset_after)

A Program whose formulas read each other at t - 1 is a system (symdl/declare/systems.py): one
kernel steps every state; its gradient is the adjoint system, one kernel backwards.
"""
import sympy as sp

from symdl.declare import Formula, Program, sigmoid

from . import entry
from .common import idx

B, T, K, H = sp.symbols("B T K H", integer=True, positive=True)
# the symbolic check nests the gates T steps deep: two steps prove in seconds, three take minutes
SIZES = {"B": 1, "T": 2, "K": 1, "H": 2}


def _indices():
    return idx("b", B), idx("t", T), idx("j", H), idx("k", K), idx("l", H)


def lstm(return_sequences: bool = True) -> Program:
    """Keras LSTM: kernel W (K, 4, H), recurrent_kernel U (H, 4, H), bias (4, H), initial states
    h0, c0 (B, H); the output h[b, t, j] (or h_last[b, j] unless `return_sequences`)."""
    b, t, j, k, l = _indices()
    x, W, U, bias = (sp.IndexedBase("x"), sp.IndexedBase("W", shape=(K, 4, H)),
                     sp.IndexedBase("U", shape=(H, 4, H)), sp.IndexedBase("bias", shape=(4, H)))
    h, c = sp.IndexedBase("h", shape=(B, T, H)), sp.IndexedBase("c", shape=(B, T, H))

    def gate(n: int, name: str, act) -> Formula:
        z = sp.Sum(x[b, t, k] * W[k, n, j], k) + sp.Sum(h[b, t - 1, l] * U[l, n, j], l) + bias[n, j]
        return Formula(sp.Eq(sp.IndexedBase(name)[b, t, j], act(z)), name=f"lstm_{name}",
                       initial={"h": sp.IndexedBase("h0")}, sizes=SIZES)

    gi, gf, gc, go = (sp.IndexedBase(n, shape=(B, T, H)) for n in ("gi", "gf", "gc", "go"))
    cell = Formula(sp.Eq(c[b, t, j], gf[b, t, j] * c[b, t - 1, j] + gi[b, t, j] * gc[b, t, j]),
                   name="lstm_c", initial={"c": sp.IndexedBase("c0")}, sizes=SIZES)
    out = Formula(sp.Eq(h[b, t, j], go[b, t, j] * sp.tanh(c[b, t, j])), name="lstm_h", sizes=SIZES)
    formulas = [gate(0, "gi", sigmoid), gate(1, "gf", sigmoid), gate(2, "gc", sp.tanh), gate(3, "go", sigmoid),
                cell, out]
    if return_sequences:
        return Program(formulas, name="lstm", outputs=["h"])
    return Program([*formulas, last_state()], name="lstm_last", outputs=["h_last"])


def gru(return_sequences: bool = True) -> Program:
    """Keras GRU (reset_after=True): kernel W (K, 3, H), recurrent_kernel U (H, 3, H), bias
    (2, 3, H) (input bias, recurrent bias), initial state h0 (B, H); gate order z, r, h."""
    b, t, j, k, l = _indices()
    x, W, U, bias = (sp.IndexedBase("x"), sp.IndexedBase("W", shape=(K, 3, H)),
                     sp.IndexedBase("U", shape=(H, 3, H)), sp.IndexedBase("bias", shape=(2, 3, H)))
    h = sp.IndexedBase("h", shape=(B, T, H))
    gz, gr, gn = (sp.IndexedBase(n, shape=(B, T, H)) for n in ("gz", "gr", "gn"))

    def inner(n: int):  # x W + b (the input side), then h[t-1] U + rb (the recurrent side)
        return (sp.Sum(x[b, t, k] * W[k, n, j], k) + bias[0, n, j],
                sp.Sum(h[b, t - 1, l] * U[l, n, j], l) + bias[1, n, j])

    h0 = {"h": sp.IndexedBase("h0")}
    z = Formula(sp.Eq(gz[b, t, j], sigmoid(sum(inner(0)))), name="gru_z", initial=h0, sizes=SIZES)
    r = Formula(sp.Eq(gr[b, t, j], sigmoid(sum(inner(1)))), name="gru_r", initial=h0, sizes=SIZES)
    xin, hin = inner(2)
    n = Formula(sp.Eq(gn[b, t, j], sp.tanh(xin + gr[b, t, j] * hin)), name="gru_n", initial=h0, sizes=SIZES)
    new = Formula(sp.Eq(h[b, t, j], gz[b, t, j] * h[b, t - 1, j] + (1 - gz[b, t, j]) * gn[b, t, j]),
                  name="gru_h", initial=h0, sizes=SIZES)
    if return_sequences:
        return Program([z, r, n, new], name="gru", outputs=["h"])
    return Program([z, r, n, new, last_state()], name="gru_last", outputs=["h_last"])


def last_state() -> Formula:
    """h_last[b, j] = h[b, T - 1, j] (Keras return_sequences=False)."""
    b, j = idx("b", B), idx("j", H)
    return Formula(sp.Eq(sp.IndexedBase("h_last")[b, j], sp.IndexedBase("h", shape=(B, T, H))[b, T - 1, j]),
                   name="gated_last_state", sizes=SIZES)


entry("lstm", "F6", "Keras LSTM (gates i, f, c, o): c[t] = f c[t-1] + i g, h[t] = o tanh(c[t]), one kernel")(
    lambda: lstm(True))
entry("gru", "F6", "Keras GRU (reset_after): h[t] = z h[t-1] + (1 - z) tanh(x W + r (h[t-1] U + rb))")(
    lambda: gru(True))
