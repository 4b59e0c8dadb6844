"""F13 gradient descent and F14 optimizer updates, with F15 L1/L2 regularisation folded into the
gradient.

Each builder returns a Formula (`sgd_update`, F13: w_new[i] = w[i] - lr·g[i]) or a Program acting
elementwise on a flat parameter vector w[i] (i in range N) with gradient g[i]: the optimizer state
comes in as tensors (v, s, m, ...) and leaves as `<state>_new`; hyper-parameters are scalar inputs
(lr, momentum, rho, beta1, beta2, eps, weight_decay, and the step count t, 1-based, for Adam's bias
correction). Every formula of a Program has the same index i and range and no reduction, so a
Program can fuse into one kernel per parameter tensor. One call is one step: feed the `*_new`
outputs back as the next step's inputs and add 1 to t.

Regularisation (F15) is "coupled": `l2=True` replaces g by g + l2·w (the gradient of
(l2/2)·Σ w², PyTorch's `weight_decay` in SGD/Adam/RMSprop; the catalog's l2_penalty λ Σ w² has
gradient 2λ w), `l1=True` by g + l1·sign(w) (the gradient of l1·Σ |w|, 0 at w = 0). AdamW's
decoupled weight decay is different: it bypasses the moment estimates.
"""
from __future__ import annotations

import sympy as sp

from symdl.declare import Formula, Program

from . import entry
from .common import N, idx

i = idx("i", N)
w, g, w_new = sp.IndexedBase("w"), sp.IndexedBase("g"), sp.IndexedBase("w_new")
lr, momentum, rho, beta1, beta2, eps, t, weight_decay, l1_lam, l2_lam = sp.symbols(
    "lr momentum rho beta1 beta2 eps t weight_decay l1 l2")

# Where verification draws its random inputs: second-moment states are positive (they sit under
# sqrt), decay rates inside (0, 1), eps and lr small and positive, t a step count >= 1.
DOMAINS = {
    "lr": (1e-3, 1e-1), "momentum": (0.5, 0.99), "rho": (0.5, 0.99), "beta1": (0.5, 0.99),
    "beta2": (0.5, 0.99), "eps": (1e-3, 1e-2), "t": (1.0, 5.0), "weight_decay": (1e-3, 1e-1),
    "l1": (1e-3, 1e-1), "l2": (1e-3, 1e-1), "s": (0.1, 1.0), "v": (0.1, 1.0),
}


def sgd_update() -> Formula:
    """w_new[i] = w[i] - lr · g[i]."""
    return Formula(sp.Eq(w_new[i], w[i] - lr * g[i]), name="sgd_update")


entry("sgd_update", "F13", "gradient-descent step w - lr g")(sgd_update)  # first: the catalog's order


def _gradient(l1: bool, l2: bool) -> sp.Expr:
    """g[i], with the coupled L1/L2 terms added (F15)."""
    grad = g[i]
    if l2:
        grad += l2_lam * w[i]
    if l1:
        grad += l1_lam * sign(w[i])
    return grad


def sign(x: sp.Expr) -> sp.Expr:
    """sign(x), 0 at 0, as a Piecewise: symdl's autodiff rejects the DiracDelta that sympy gives
    as the derivative of sp.sign; this form differentiates to 0."""
    return sp.Piecewise((1, x > 0), (-1, x < 0), (0, True))


def _suffix(l1: bool, l2: bool) -> str:
    return "".join(s for s, on in (("_l1", l1), ("_l2", l2)) if on)


# The new states are written out in full inside the w_new formula rather than read back from the
# state formulas: the formulas of a Program are then independent, and program_vjp mishandles a
# tensor that is both an output and read by another formula (reported to the lead).
def _formula(out: str, body, name: str, domains: dict) -> Formula:
    return Formula(sp.Eq(sp.IndexedBase(out)[i], body), name=name, domains=domains)


def sgd(l1: bool = False, l2: bool = False) -> Program:
    """Gradient descent (F13): w_new = w - lr·g, with g regularised as the module docstring says.
    Without regularisation it is the catalog's `sgd_update` formula, reused."""
    name = f"sgd{_suffix(l1, l2)}_update"
    if not (l1 or l2):
        return Program([sgd_update()], name=name)
    return Program([_formula("w_new", w[i] - lr * _gradient(l1, l2), f"{name}.w", DOMAINS)], name=name)


def momentum_sgd(nesterov: bool = False, l1: bool = False, l2: bool = False) -> Program:
    """SGD with momentum, Keras `SGD(momentum=...)` form (Sutskever et al. 2013):
        v_new = momentum·v - lr·g
        w_new = w + v_new                      (classical)
        w_new = w + momentum·v_new - lr·g      (nesterov=True, Keras' Nesterov form)
    The velocity v starts at 0. PyTorch's SGD(momentum, dampening=0) keeps b = momentum·b + g
    and steps w - lr·b (Nesterov: w - lr·(g + momentum·b)): for a constant lr the same
    trajectory, with v = -lr·b."""
    name = f"{'nesterov' if nesterov else 'momentum'}{_suffix(l1, l2)}_update"
    v = sp.IndexedBase("v")
    grad = _gradient(l1, l2)
    domains = dict(DOMAINS, v=(-1.0, 1.0))  # a velocity has either sign
    v_new = momentum * v[i] - lr * grad
    step = momentum * v_new - lr * grad if nesterov else v_new
    return Program([
        _formula("v_new", v_new, f"{name}.v", domains),
        _formula("w_new", w[i] + step, f"{name}.w", domains),
    ], name=name, outputs=("w_new", "v_new"))


def rmsprop(l1: bool = False, l2: bool = False, eps_in_sqrt: bool = False) -> Program:
    """RMSprop (Tieleman & Hinton 2012), without momentum or centring:
        s_new = rho·s + (1 - rho)·g²
        w_new = w - lr·g / (sqrt(s_new) + eps)     (PyTorch RMSprop)
        w_new = w - lr·g / sqrt(s_new + eps)       (eps_in_sqrt=True: Keras/TensorFlow RMSprop)
    The mean square s starts at 0."""
    name = f"rmsprop{'_keras' if eps_in_sqrt else ''}{_suffix(l1, l2)}_update"
    s = sp.IndexedBase("s")
    grad = _gradient(l1, l2)
    s_new = rho * s[i] + (1 - rho) * grad ** 2
    denom = sp.sqrt(s_new + eps) if eps_in_sqrt else sp.sqrt(s_new) + eps
    return Program([
        _formula("s_new", s_new, f"{name}.s", DOMAINS),
        _formula("w_new", w[i] - lr * grad / denom, f"{name}.w", DOMAINS),
    ], name=name, outputs=("w_new", "s_new"))


def adam(l1: bool = False, l2: bool = False, decoupled: bool = False) -> Program:
    """Adam with bias correction, Kingma & Ba (2015) Algorithm 1 (= PyTorch Adam), step t >= 1:
        m_new = beta1·m + (1 - beta1)·g
        v_new = beta2·v + (1 - beta2)·g²
        w_new = w - lr·mhat / (sqrt(vhat) + eps),  mhat = m_new / (1 - beta1^t),
                                                    vhat = v_new / (1 - beta2^t)
    decoupled=True is AdamW (Loshchilov & Hutter 2019, Algorithm 2; = PyTorch AdamW):
        w_new = w - lr·(mhat / (sqrt(vhat) + eps) + weight_decay·w)
    The decay is scaled by lr as in PyTorch and Keras; the paper scales it by the schedule
    multiplier only (pass weight_decay/lr for that form).
    m and v start at 0. (Keras' Adam puts eps outside the bias correction of v, the paper's
    "epsilon hat" form: w - lr·sqrt(1 - beta2^t)/(1 - beta1^t)·m_new/(sqrt(v_new) + eps).)"""
    name = f"adam{'w' if decoupled else ''}{_suffix(l1, l2)}_update"
    m, v = sp.IndexedBase("m"), sp.IndexedBase("v")
    grad = _gradient(l1, l2)
    m_new = beta1 * m[i] + (1 - beta1) * grad
    v_new = beta2 * v[i] + (1 - beta2) * grad ** 2
    mhat = m_new / (1 - beta1 ** t)
    vhat = v_new / (1 - beta2 ** t)
    step = mhat / (sp.sqrt(vhat) + eps)
    if decoupled:
        step += weight_decay * w[i]
    return Program([
        _formula("m_new", m_new, f"{name}.m", DOMAINS),
        _formula("v_new", v_new, f"{name}.v", DOMAINS),
        _formula("w_new", w[i] - lr * step, f"{name}.w", DOMAINS),
    ], name=name, outputs=("w_new", "m_new", "v_new"))


def adamw(l1: bool = False, l2: bool = False) -> Program:
    """AdamW: Adam with decoupled weight decay (see `adam`)."""
    return adam(l1, l2, decoupled=True)


# Adam with L1/L2 (adam(l1=True), adam(l2=True)) and the L1 forms with a state are built and tested
# by tests/test_optimizers.py but left out of the catalog: symdl's verifier cannot yet check them
# in reasonable time (or at all), see the lead's notes on symbolic._zero and program_vjp.
_ENTRIES = {
    "momentum_update": lambda: momentum_sgd(),
    "nesterov_update": lambda: momentum_sgd(nesterov=True),
    "rmsprop_update": lambda: rmsprop(),
    "adam_update": lambda: adam(),
    "adamw_update": lambda: adamw(),
    "sgd_l1_update": lambda: sgd(l1=True),
    "sgd_l2_update": lambda: sgd(l2=True),
    "momentum_l2_update": lambda: momentum_sgd(l2=True),
    "rmsprop_l2_update": lambda: rmsprop(l2=True),
}
_SUMMARIES = {
    "momentum_update": "SGD with momentum (Keras): v = μv - lr g; w + v",
    "nesterov_update": "Nesterov momentum (Keras): v = μv - lr g; w + μv - lr g",
    "rmsprop_update": "RMSprop: s = ρs + (1-ρ)g²; w - lr g/(√s + ε)",
    "adam_update": "Adam with bias correction (Kingma & Ba Alg. 1)",
    "adamw_update": "AdamW, decoupled weight decay (Loshchilov & Hutter)",
    "sgd_l1_update": "SGD on g + λ1 sign(w) (L1 folded into the gradient)",
    "sgd_l2_update": "SGD on g + λ2 w (L2 folded into the gradient)",
    "momentum_l2_update": "momentum SGD on g + λ2 w",
    "rmsprop_l2_update": "RMSprop on g + λ2 w",
}
for _name, _build in _ENTRIES.items():
    entry(_name, "F14", _SUMMARIES[_name])(_build)
