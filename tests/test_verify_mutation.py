"""Mutation tests of symdl.verify itself: each injected fault must be caught by the check whose job
it is. Wrong gradient mathematics (sign flips, dropped terms, shifted indices, wrong constants, a
wrong function) go to `symbolic` and `numeric`; printer changes (a comparison, a constant) go to
`backends`, which compares the compiled kernels with the NumPy reference on inputs with ties."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.verify.expand import element

symbolic_module = importlib.import_module("symdl.verify.symbolic")
kernel_module = importlib.import_module("symdl.runtime.kernel")

B, N, M = sp.symbols("B N M", integer=True, positive=True)


def layer():
    """y[i, j] = tanh(Σ_k x[i, k] W[k, j] + b[j]) + relu(x[i, j]) at 1x2x2: every kind of term."""
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, b, y = (sp.IndexedBase(s) for s in ("x", "W", "b", "y"))
    body = sp.tanh(sp.Sum(x[i, k] * W[k, j], k) + b[j]) + symdl.relu(x[i, j])
    return symdl.Formula(sp.Eq(y[i, j], body), name="mutation_layer", sizes={B: 1, N: 2, M: 2})


def _first_term(e):
    terms = sp.Add.make_args(sp.expand(e))
    return sp.Add(*terms[1:]) if len(terms) > 1 else sp.Integer(0)


MATH_MUTANTS = {
    "sign flip": lambda e: -e,
    "dropped term": _first_term,
    "shifted index": lambda e: e.xreplace({element("x", (0, 0)): element("x", (0, 1)),
                                           element("x", (0, 1)): element("x", (0, 0))}),
    "wrong constant": lambda e: e * sp.Rational(1_000_001, 1_000_000),
    "wrong function": lambda e: e.replace(sp.tanh, lambda z: sp.tanh(2 * z)),
}


@pytest.mark.parametrize("mutant", sorted(MATH_MUTANTS))
def test_symbolic_catches_wrong_gradient_mathematics(mutant, monkeypatch):
    real = symbolic_module.derived_gradients
    change = MATH_MUTANTS[mutant]

    def mutated(*args, **kwargs):
        grads = real(*args, **kwargs)
        return {n: {idx: (change(e) if n == "x" or mutant in ("sign flip", "wrong constant") else e)
                    for idx, e in g.items()} for n, g in grads.items()}

    monkeypatch.setattr(symbolic_module, "derived_gradients", mutated)
    with pytest.raises(AssertionError, match="differs from sympy.diff at the point"):
        symdl.verify.symbolic(layer())


def _mutated_vjp(change):
    """Formula.vjp with each gradient formula's body changed: what the compiled gradients run."""
    real = symdl.Formula.vjp

    def vjp(self, *args, **kwargs):
        grads = real(self, *args, **kwargs)
        if self.name != "mutation_layer":
            return grads
        return {n: symdl.Formula.from_parts(g.name + ".mutant", g.output.name, g.indices, g.ranges, change(g),
                                            shapes={t.name: t.shape for t in g.inputs},
                                            integer={t.name for t in g.inputs if t.integer})
                for n, g in grads.items()}
    return vjp


NUMERIC_MUTANTS = {
    "sign flip": lambda g: -g.body,
    "wrong constant": lambda g: g.body * sp.Rational(11, 10),
    "dropped term": lambda g: sp.Add(*sp.Add.make_args(sp.expand(g.body))[1:]) or sp.Integer(0),
    "shifted index": lambda g: g.body.xreplace({g.indices[-1]: g.ranges[g.indices[-1]][1] - g.indices[-1]}),
}


@pytest.mark.parametrize("mutant", sorted(NUMERIC_MUTANTS))
def test_numeric_catches_wrong_compiled_gradients(mutant, monkeypatch):
    monkeypatch.setenv("SYMDL_CHECK", "0")
    monkeypatch.setattr(symdl.Formula, "vjp", _mutated_vjp(NUMERIC_MUTANTS[mutant]))
    with pytest.raises(AssertionError, match="disagrees with finite differences"):
        symdl.verify.numeric(layer())


def test_numeric_catches_a_nan_gradient(monkeypatch):
    real = kernel_module.Kernel.vjp

    def nan_vjp(self, *args, **kwargs):
        return {k: np.where(np.arange(np.size(v)).reshape(np.shape(v)) == 0, np.nan, v)
                for k, v in real(self, *args, **kwargs).items()}

    monkeypatch.setattr(kernel_module.Kernel, "vjp", nan_vjp)
    with pytest.raises(AssertionError, match="relative error nan"):
        symdl.verify.numeric(layer())


def relu_formula():
    i, j = sp.Idx("i", B), sp.Idx("j", N)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    return symdl.Formula(sp.Eq(y[i, j], symdl.relu(x[i, j])), name="mutation_relu", sizes={B: 3, N: 4})


def max_pool():
    from symdl.formulas.pooling import pool2d
    return pool2d("max", name="mutation_max_pool")


PRINTER_MUTANTS = {  # (formula, source text replaced, replacement)
    "relu'(0): > becomes >=": (relu_formula, " > ", " >= "),
    "first arg-max: > becomes >=": (max_pool, " > best", " >= best"),
    "a constant: 0 becomes 1": (relu_formula, "else F(0)", "else F(1)"),
}


@pytest.mark.parametrize("mutant", sorted(PRINTER_MUTANTS))
def test_backends_catches_printer_changes(mutant, monkeypatch):
    make, old, new = PRINTER_MUTANTS[mutant]
    real = kernel_module.load_module
    changed = []

    def mutated(source):
        if old in source and "mutation_" in source:
            changed.append(source)
            source = source.replace(old, new)
        return real(source)

    monkeypatch.setenv("SYMDL_CHECK", "0")  # the compile-time self-check would see some of these first
    monkeypatch.setattr(kernel_module, "load_module", mutated)
    with pytest.raises(AssertionError, match="differs from the NumPy reference"):
        symdl.verify.backends(make(), dtypes=(np.float64,))
    assert changed  # the mutation was applied to a generated module


def test_backends_by_design_cannot_see_wrong_gradient_mathematics(monkeypatch):
    # the reference evaluates the same (wrong) derived formula as the kernel: they agree; numeric sees it
    monkeypatch.setenv("SYMDL_CHECK", "0")
    monkeypatch.setattr(symdl.Formula, "vjp", _mutated_vjp(NUMERIC_MUTANTS["sign flip"]))
    assert symdl.verify.backends(layer(), dtypes=(np.float64,)) < 1e-9
    with pytest.raises(AssertionError, match="disagrees with finite differences"):
        symdl.verify.numeric(layer())
