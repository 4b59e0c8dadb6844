"""F1 linear regression with its MSE loss, F2 logistic regression with binary cross-entropy."""
import sympy as sp

from symdl.declare import Formula, Program, sigmoid

from . import entry
from .common import B, N, idx

i, k = idx("i", B), idx("k", N)
x, w, y, t, yhat, p = (sp.IndexedBase(n) for n in "x w y t yhat p".split())
w0, L = sp.Symbol("w0"), sp.Symbol("L")


def linear_regression() -> Formula:
    """yhat[i] = w0 + Σ_k w[k] x[i, k]."""
    return Formula(sp.Eq(yhat[i], w0 + sp.Sum(w[k] * x[i, k], k)), name="linear_regression")


def linear_regression_loss() -> Program:
    """The MSE of linear regression: L = 1/B Σ_i (yhat[i] - y[i])²."""
    loss = Formula(sp.Eq(L, sp.Sum((yhat[i] - y[i]) ** 2, i) / B), name="linear_regression.mse")
    return Program([linear_regression(), loss], name="linear_regression_mse")


def logistic_regression() -> Formula:
    """P(y = 1 | x) = σ(w0 + Σ_k w[k] x[i, k])."""
    return Formula(sp.Eq(p[i], sigmoid(w0 + sp.Sum(w[k] * x[i, k], k))), name="logistic_regression")


def logistic_regression_loss() -> Program:
    """Binary cross-entropy of logistic regression, labels t in {0, 1}."""
    loss = Formula(sp.Eq(L, -sp.Sum(t[i] * sp.log(p[i]) + (1 - t[i]) * sp.log(1 - p[i]), i) / B),
                   name="logistic_regression.bce", domains={"t": (0.0, 1.0)})
    return Program([logistic_regression(), loss], name="logistic_regression_bce")


entry("linear_regression", "F1", "yhat = w0 + Σ w x")(linear_regression)
entry("linear_regression_mse", "F1", "linear regression with its MSE loss")(linear_regression_loss)
entry("logistic_regression", "F2", "p = σ(w0 + Σ w x)")(logistic_regression)
entry("logistic_regression_bce", "F2", "logistic regression with binary cross-entropy")(
    logistic_regression_loss)
