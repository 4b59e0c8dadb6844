"""F15 L1 and L2 penalties, added to a loss: λ Σ |w| and λ Σ w²."""
import sympy as sp

from symdl.declare import Formula

from . import entry
from .common import N, idx

i = idx("i", N)
w, lam, R = sp.IndexedBase("w"), sp.Symbol("lam"), sp.Symbol("R")


def l1_penalty() -> Formula:
    """R = λ Σ_i |w[i]| (its gradient λ sign(w), 0 at 0)."""
    return Formula(sp.Eq(R, lam * sp.Sum(sp.Abs(w[i]), i)), name="l1_penalty")


def l2_penalty() -> Formula:
    """R = λ Σ_i w[i]²."""
    return Formula(sp.Eq(R, lam * sp.Sum(w[i] ** 2, i)), name="l2_penalty")


entry("l1_penalty", "F15", "L1 penalty λ Σ |w|")(l1_penalty)
entry("l2_penalty", "F15", "L2 penalty λ Σ w²")(l2_penalty)
