"""Symbolic verification: the derived gradient formulas equal sympy.diff of the scalar expansion."""
from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from ..autodiff import grad_name
from .expand import Tensors, element, expand, normalise
from .inputs import _shapes, as_program_if_recurrent, default_sizes, formulas_of, random_inputs


def symbolic(target, sizes: dict | None = None, wrt=None, seed: int = 0) -> int:
    """Expand `target` (a Formula or Program) to scalars at small `sizes`, differentiate each
    scalar with sympy.diff, and require exact equality with the expansion of the derived VJP
    formulas. Raises AssertionError naming the tensor and element on any mismatch; returns the
    number of gradient elements checked.

    A target made by `symdl.passes.stabilize` is proven through its original: each rewrite's region
    is proven equal (symdl.verify.equivalent), then the original is checked as above (expanding the
    row maxima of a whole stabilized attention program takes minutes; its regions take seconds)."""
    if getattr(target, "stability", None) is not None:
        from .equivalent import rewrites_hold
        rewrites_hold(target)
        return symbolic(target.stability.original, sizes, wrt, seed)
    target = as_program_if_recurrent(target)
    sizes = {str(k): int(v) for k, v in (sizes or default_sizes(target)).items()}
    shapes = _shapes(target, sizes)
    rng = np.random.default_rng(seed)
    ints = {t.name: v for t, v in ((t, random_inputs(target, sizes, rng).get(t.name))
                                   for t in target.inputs) if t.integer}
    forward = Tensors(shapes, ints)
    for f in formulas_of(target):
        expand(f, sizes, forward)
    outs = getattr(target, "outputs", None) or (target.output.name,)
    gshapes = dict(shapes)
    for o in outs:
        gshapes[grad_name(o)] = forward.shapes[o]
    objective = sp.Add(*[_seed(o, idx) * v for o in outs for idx, v in forward.values[o].items()])
    derived = _derived(target, wrt, sizes, gshapes, ints)
    checked = 0
    for t in target.inputs:
        if t.integer or (wrt is not None and t.name not in wrt):
            continue
        for idx, got in derived[t.name].items():
            var = element(t.name, idx) if t.rank else sp.Symbol(t.name, real=True)
            want = sp.diff(objective, var)
            if not _zero(normalise(want - got)):
                raise AssertionError(f"{getattr(target, 'name', target)}: d/d{t.name}{list(idx)} at sizes "
                                     f"{sizes}:\n  sympy.diff: {want}\n  derived:    {got}")
            checked += 1
    return checked


# symdl's own functions, for lambdify (NumPy knows exp and tanh, not these)
SYMDL_FUNCTIONS = {"sigmoid": lambda x: 0.5 * (1 + np.tanh(0.5 * x)),
                   "softplus": lambda x: np.logaddexp(0.0, x)}


def _zero(diff, exact=None) -> bool:
    """Exact zero test. A difference of Piecewise expressions is zero when it vanishes exactly in
    every region its conditions carve out. The regions are found by witnesses: random points
    classify every condition (`e > 0` or `e >= 0`, e's sign fixed); each region seen is then
    substituted and must simplify to exactly 0. Ties (e = 0) have measure zero and are the
    frameworks' convention, not a property of the derivative, so they are not required to agree."""
    if diff == 0:
        return True
    rels = list(diff.atoms(sp.core.relational.Relational))
    exact = exact or _exact_zero
    if not rels:
        return exact(diff)
    canon = {r: _canonical(r) for r in rels}
    keys = sorted({k for k, _ in canon.values()}, key=sp.default_sort_key)
    symbols = sorted(set().union(*[k[0].free_symbols for k in keys]), key=str)
    evaluate = sp.lambdify(symbols, [k[0] for k in keys], modules=[SYMDL_FUNCTIONS, "numpy"],
                           dummify=True)
    rng = np.random.default_rng(0)
    regions = set()
    with np.errstate(all="ignore"):
        for scale in (2.0, 0.5, 20.0):
            for _ in range(128):
                point = rng.uniform(-scale, scale, len(symbols))
                values = evaluate(*point)
                regions.add(tuple(bool(v > 0) if op == ">" else bool(v >= 0)
                                  for v, (_, op) in zip(values, keys, strict=True)))
    for region in regions:
        truth = dict(zip(keys, region, strict=True))
        piece = diff.xreplace({r: sp.true if truth[k] == positive else sp.false
                               for r, (k, positive) in canon.items()})
        if not exact(sp.piecewise_fold(piece)):
            return False
    return True


def _exact_zero(e) -> bool:
    e = sp.expand(e)
    if e == 0:
        return True
    e = sp.cancel(sp.together(e))
    return e == 0 or sp.simplify(e) == 0


def _canonical(rel):
    """(key, positive): `rel` holds iff key holds (positive) or fails; key is (e, '>' or '>=')."""
    e = sp.expand(rel.lhs - rel.rhs)
    op = rel.rel_op
    if op in ("==", "!="):
        return ((e, op), True)
    strict = {">": True, ">=": False, "<": False, "<=": True}[op]  # a < b <=> not (a - b >= 0)
    positive = op in (">", ">=")
    if e.could_extract_minus_sign():  # e > 0 <=> not (-e >= 0)
        e, strict, positive = -e, not strict, not positive
    return ((e, ">" if strict else ">="), positive)


def _seed(o, idx):
    return element(grad_name(o), idx) if idx else sp.Symbol(grad_name(o), real=True)


def _derived(target, wrt, sizes, gshapes, ints) -> dict:
    """{input name: {index: expansion of its derived gradient}}."""
    tensors = Tensors(gshapes, ints)
    if hasattr(target, "formulas"):
        gprog = target.vjp(wrt)
        for f in gprog.formulas:
            expand(f, sizes, tensors)
        return {t.name: tensors.values[grad_name(t.name)] for t in target.inputs
                if not t.integer and (wrt is None or t.name in wrt)}
    out = {}
    for name, g in target.vjp(wrt).items():
        dims = {k: v for k, v in sizes.items()}
        t = target.input(name)
        grad_out = expand(g, dims, tensors) if True else None
        out[name] = grad_out
        tensors.values.pop(g.output.name, None)
        tensors.shapes[g.output.name] = t.shape
    return out
