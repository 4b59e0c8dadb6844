"""F14 optimizer Programs: several compiled steps against NumPy implementations of the published
update rules (written here independently, in the PyTorch form where it differs from the Keras form
the Programs use), known properties of single steps, and descent on a quadratic."""
from __future__ import annotations

import numpy as np
import pytest

from symdl import formulas
from symdl.formulas.optimizers import adam, adamw, momentum_sgd, rmsprop, sgd

HYPER = {"lr": 0.05, "momentum": 0.9, "rho": 0.9, "beta1": 0.9, "beta2": 0.999, "eps": 1e-3,
         "weight_decay": 0.1, "l1": 0.02, "l2": 0.03}
STATES = {"momentum": ("v",), "nesterov": ("v",), "rmsprop": ("s",), "rmsprop_keras": ("s",),
          "adam": ("m", "v"), "adamw": ("m", "v"), "sgd": ()}


def reference(kind: str, w, g, state: dict, h: dict, t: int, l1=False, l2=False):
    """One step of the published rule in float64: (w_new, {state: new value})."""
    g = g + (h["l2"] * w if l2 else 0) + (h["l1"] * np.sign(w) if l1 else 0)
    lr = h["lr"]
    if kind == "sgd":
        return w - lr * g, {}
    if kind in ("momentum", "nesterov"):  # PyTorch SGD: buffer b = mu b + g, and v = -lr b
        b = h["momentum"] * (-state["v"] / lr) + g
        step = g + h["momentum"] * b if kind == "nesterov" else b
        return w - lr * step, {"v": -lr * b}
    if kind.startswith("rmsprop"):
        s = h["rho"] * state["s"] + (1 - h["rho"]) * g * g
        denom = np.sqrt(s + h["eps"]) if kind == "rmsprop_keras" else np.sqrt(s) + h["eps"]
        return w - lr * g / denom, {"s": s}
    # Adam, Kingma & Ba Algorithm 1; AdamW as PyTorch orders it: decay w first, then the Adam step
    m = h["beta1"] * state["m"] + (1 - h["beta1"]) * g
    v = h["beta2"] * state["v"] + (1 - h["beta2"]) * g * g
    mhat, vhat = m / (1 - h["beta1"] ** t), v / (1 - h["beta2"] ** t)
    if kind == "adamw":
        w = w * (1 - lr * h["weight_decay"])
    return w - lr * mhat / (np.sqrt(vhat) + h["eps"]), {"m": m, "v": v}


def program(kind: str, l1=False, l2=False):
    if kind in ("momentum", "nesterov"):
        return momentum_sgd(nesterov=kind == "nesterov", l1=l1, l2=l2)
    if kind.startswith("rmsprop"):
        return rmsprop(l1=l1, l2=l2, eps_in_sqrt=kind == "rmsprop_keras")
    return {"sgd": sgd, "adam": adam, "adamw": adamw}[kind](l1=l1, l2=l2)


def step(pk, kind: str, w, g, state: dict, h: dict, t: int):
    """One compiled step: (w_new, {state: new value})."""
    given = dict(h, t=float(t), w=w, g=g, **state)
    out = pk(**{n: given[n] for n in pk.program.input_names})
    out = out if isinstance(out, dict) else {"w_new": out}
    return out["w_new"], {s: out[f"{s}_new"] for s in STATES[kind]}


CASES = [("sgd", False, False), ("sgd", True, True), ("momentum", False, False),
         ("momentum", False, True), ("nesterov", False, False), ("nesterov", True, True),
         ("rmsprop", False, False), ("rmsprop", True, False), ("rmsprop_keras", False, False),
         ("adam", False, False), ("adam", True, False), ("adam", False, True), ("adamw", False, False)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind,l1,l2", CASES)
def test_steps_match_the_published_rule(kind, l1, l2, dtype):
    rng = np.random.default_rng(0)
    pk = program(kind, l1, l2).compile()
    n = 50
    w = rng.standard_normal(n).astype(dtype)
    state = {s: np.zeros(n, dtype) for s in STATES[kind]}
    w0 = w.copy()
    w_ref, state_ref = w.astype(np.float64), {s: v.astype(np.float64) for s, v in state.items()}
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for t in range(1, 7):
        g = rng.standard_normal(n).astype(dtype)
        w, state = step(pk, kind, w, g, state, HYPER, t)
        w_ref, state_ref = reference(kind, w_ref, g.astype(np.float64), state_ref, HYPER, t, l1, l2)
        assert w.dtype == dtype and all(v.dtype == dtype for v in state.values())
        np.testing.assert_allclose(w, w_ref, rtol=tol, atol=tol, err_msg=f"w at step {t}")
        for s in state:
            np.testing.assert_allclose(state[s], state_ref[s], rtol=tol, atol=tol,
                                       err_msg=f"{s} at step {t}")
    assert np.max(np.abs(w - w0)) > 0.01  # the steps did move w


def test_adam_first_step_moves_each_weight_by_lr_sign_g():
    rng = np.random.default_rng(1)
    w = rng.standard_normal(20)
    g = rng.choice([-1.0, 1.0], 20) * rng.uniform(0.5, 5.0, 20)
    h = dict(HYPER, eps=1e-8)
    w_new, st = step(adam().compile(), "adam", w, g, {"m": np.zeros(20), "v": np.zeros(20)}, h, 1)
    np.testing.assert_allclose(w_new - w, -h["lr"] * np.sign(g), rtol=1e-6)
    np.testing.assert_allclose(st["m"], (1 - h["beta1"]) * g)
    np.testing.assert_allclose(st["v"], (1 - h["beta2"]) * g * g)


def test_rmsprop_first_step_is_lr_sign_g_over_sqrt_of_one_minus_rho():
    g = np.array([-3.0, -0.2, 0.7, 4.0])
    h = dict(HYPER, eps=1e-9)
    w_new, _ = step(rmsprop().compile(), "rmsprop", np.zeros(4), g, {"s": np.zeros(4)}, h, 1)
    np.testing.assert_allclose(w_new, -h["lr"] * np.sign(g) / np.sqrt(1 - h["rho"]), rtol=1e-6)


def test_adamw_decay_shrinks_weights_when_the_gradient_is_zero():
    w = np.array([-2.0, -0.5, 0.25, 3.0])
    zeros = np.zeros(4)
    w_new, _ = step(adamw().compile(), "adamw", w, zeros, {"m": zeros, "v": zeros}, HYPER, 1)
    np.testing.assert_allclose(w_new, w * (1 - HYPER["lr"] * HYPER["weight_decay"]))
    w_adam, _ = step(adam().compile(), "adam", w, zeros, {"m": zeros, "v": zeros}, HYPER, 1)
    np.testing.assert_array_equal(w_adam, w)  # plain Adam has no decay


def test_folded_regularisation_with_a_zero_gradient():
    w, zeros = np.array([-2.0, 0.0, 0.5]), np.zeros(3)
    l2, _ = step(sgd(l2=True).compile(), "sgd", w, zeros, {}, HYPER, 1)
    np.testing.assert_allclose(l2, w * (1 - HYPER["lr"] * HYPER["l2"]))
    l1, _ = step(sgd(l1=True).compile(), "sgd", w, zeros, {}, HYPER, 1)
    np.testing.assert_allclose(l1, w - HYPER["lr"] * HYPER["l1"] * np.array([-1.0, 0.0, 1.0]))


def test_nesterov_and_momentum_agree_without_momentum():
    rng = np.random.default_rng(2)
    w, g, v = rng.standard_normal((3, 10))
    h = dict(HYPER, momentum=0.0)
    a, _ = step(momentum_sgd().compile(), "momentum", w, g, {"v": v}, h, 1)
    b, _ = step(momentum_sgd(nesterov=True).compile(), "nesterov", w, g, {"v": v}, h, 1)
    np.testing.assert_allclose(a, w - h["lr"] * g)
    np.testing.assert_allclose(b, w - h["lr"] * g)


QUADRATIC = [("sgd", False, False, {"lr": 0.1}), ("sgd", False, True, {"lr": 0.1}),
             ("momentum", False, False, {"lr": 0.05, "momentum": 0.8}),
             ("nesterov", False, False, {"lr": 0.05, "momentum": 0.8}),
             ("rmsprop", False, False, {"lr": 0.05}), ("adam", False, False, {"lr": 0.1}),
             ("adam", True, False, {"lr": 0.1}), ("adamw", False, False, {"lr": 0.1, "weight_decay": 1e-3})]


@pytest.mark.parametrize("kind,l1,l2,h", QUADRATIC)
def test_minimises_a_quadratic(kind, l1, l2, h):
    """f(w) = ½ Σ a (w - c)² (+ the folded penalty): 100 steps reach its minimiser."""
    rng = np.random.default_rng(3)
    a, c = rng.uniform(0.5, 2.0, 8), rng.uniform(-2.0, 2.0, 8)
    h = dict(HYPER, **h)
    if l2:  # a (w - c) + l2 w = 0
        best = a * c / (a + h["l2"])
    elif l1:  # soft thresholding
        best = np.sign(c) * np.maximum(np.abs(c) - h["l1"] / a, 0)
    else:
        best = c
    pk = program(kind, l1, l2).compile()
    w, state = np.zeros(8), {s: np.zeros(8) for s in STATES[kind]}
    for t in range(1, 101):
        w, state = step(pk, kind, w, a * (w - c), state, h, t)
    assert np.max(np.abs(w - best)) < 0.05 * np.max(np.abs(best))


@pytest.mark.parametrize("name", ["sgd_l1_update", "momentum_update", "nesterov_update", "rmsprop_update",
                                  "adam_update", "adamw_update"])
def test_each_update_is_one_fused_kernel_equal_to_the_reference(name):
    """One loop nest per parameter tensor writes the weight and every state output; its values are
    the NumPy reference's of each formula."""
    from symdl.loops.ir import Nest
    from symdl.reference import evaluate
    prog = formulas.get(name)
    kern = prog.compile()
    if len(prog.formulas) > 1:
        assert kern._fused is not None
        nests = [s for s in kern._fused.program.steps if isinstance(s, Nest)]
        assert len(nests) == 1 and len(kern._fused.program.extra_outputs) == len(prog.formulas) - 1
    rng = np.random.default_rng(5)
    inputs = {}
    for t in prog.inputs:
        lo, hi = prog.domains.get(t.name, (-1.0, 1.0))
        inputs[t.name] = float(rng.uniform(lo, hi)) if t.rank == 0 else rng.uniform(lo, hi, size=37)
    env = kern.run(**inputs)
    for f in prog.formulas:
        want = evaluate(f, {t.name: inputs[t.name] for t in f.inputs})
        np.testing.assert_allclose(env[f.output.name], want, rtol=1e-12, atol=1e-12, err_msg=f.name)
