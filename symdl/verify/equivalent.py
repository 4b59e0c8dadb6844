"""Equivalence: two formulas or programs compute the same outputs and the same gradients, exactly.

    symdl.verify.equivalent(naive_softmax, stable_softmax, sizes={B: 2, N: 3})

Both sides are expanded to scalars at small sizes (expand.py), forward and derived VJP, and each
difference must vanish in every region its max/guard conditions carve out (symbolic._zero). The
zero test knows what the stability rewrites rely on: every input x under an exp is written
x = log u with u > 0, so exp(x - m) = u / u_m, sigmoid and softplus become rational functions and
logarithms of u, and logs of products split (log arguments are positive where a formula is defined).
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from ..autodiff import grad_name
from ..declare.functions import sigmoid, softplus
from ..declare.program import Program
from .expand import Tensors, expand, normalise
from ..reference.inputs import input_shapes, default_sizes, formulas_of, random_inputs, valid
from .symbolic import _derived, _exact_zero, _zero


def equivalent(a, b, sizes: dict | None = None, seed: int = 0) -> int:
    """Require that `a` and `b` (same inputs, same outputs) agree exactly: every output element
    and every derived gradient element (for symbolic upstream gradients). Raises AssertionError
    naming the tensor and element that differ; returns the number of elements compared."""
    names = lambda t: sorted(x.name for x in t.inputs)  # noqa: E731
    if names(a) != names(b) or set(_outputs(a)) != set(_outputs(b)):
        raise AssertionError(f"{_name(a)} and {_name(b)} differ in inputs {names(a)} / {names(b)} or "
                             f"outputs {_outputs(a)} / {_outputs(b)}")
    sizes = {str(k): int(v) for k, v in (sizes or default_sizes(a)).items()}
    shapes = input_shapes(a, sizes)
    rng = np.random.default_rng(seed)
    ints = {t.name: v for t, v in ((t, random_inputs(a, sizes, rng).get(t.name)) for t in a.inputs)
            if t.integer}
    forward = []
    for side in (a, b):
        tensors = Tensors(shapes, ints)
        for f in formulas_of(side):
            expand(f, sizes, tensors)
        forward.append(tensors)
    checked = 0
    for o in _outputs(a):
        for idx, want in forward[0].values[o].items():
            _require(want, forward[1].values[o][idx], f"{o}{list(idx)}", a, b, sizes)
            checked += 1
    gshapes = dict(shapes)
    for o in _outputs(a):
        gshapes[grad_name(o)] = forward[0].shapes[o]
    grads = [_derived(side, None, sizes, gshapes, ints) for side in (a, b)]
    for t in a.inputs:
        if t.integer:
            continue
        for idx, want in grads[0][t.name].items():
            _require(want, grads[1][t.name][idx], f"{grad_name(t.name)}{list(idx)}", a, b, sizes)
            checked += 1
    return checked


def rewrites_hold(target, sizes: dict | None = None) -> int:
    """Prove a stabilized target (`symdl.passes.stabilize`) equal to its original, rewrite by
    rewrite: each rewrite's `after` formulas compute what its `before` formulas computed for the
    rest of the program (the tensors the region hands on), forward and gradients, and the rewrites
    replayed on the original give exactly the target's formulas. Since reverse mode composes
    formula by formula, the target's outputs and gradients are then the original's. Returns the
    number of elements compared."""
    stability = target.stability
    checked = 0
    state = list(formulas_of(stability.original))  # the program as each rewrite found it
    outputs = set(_outputs(stability.original))
    for rw in stability.rewrites:
        missing = [f.name for f in rw.before if f not in state]
        if missing:
            raise AssertionError(f"rewrite {rw} replaces formulas the program does not have: {missing}")
        rest = [f for f in state if f not in rw.before]
        inside = {f.output.name for f in rw.before}
        handed_on = sorted(inside & ({t for f in rest for t in f.input_names} | outputs))
        before = Program(rw.before, name=f"{rw.rule}.before", outputs=handed_on)
        after = Program(rw.after, name=f"{rw.rule}.after", outputs=handed_on)
        checked += equivalent(before, after, sizes or _small(before, after))
        state = rest + list(rw.after)
    if {id(f) for f in state} != {id(f) for f in formulas_of(target)}:
        raise AssertionError(f"{_name(target)}: its formulas are not the original's with the recorded "
                             f"rewrites applied")
    return checked


def _small(before, after) -> dict:
    """Size 2 for every dimension (each maximum then has two regions: enough to tell them apart),
    else 3, else the verifier's default sizes."""
    dims = {str(d) for side in (before, after) for d in side.dims}
    for n in (2, 3):
        sizes = {d: n for d in dims}
        if valid(before, sizes) and valid(after, sizes):
            return sizes
    return default_sizes(before)


def _require(want, got, where, a, b, sizes):
    if not _zero(normalise(want - got), exact=exact_zero):
        raise AssertionError(f"{_name(a)} and {_name(b)} differ at {where}, sizes {sizes}:\n"
                             f"  {_name(a)}: {want}\n  {_name(b)}: {got}")


def exact_zero(e) -> bool:
    """Exact zero test for expressions of exp, log, sigmoid and softplus (see the module doc)."""
    if _exact_zero_fast(e):
        return True
    e = e.replace(sigmoid, lambda x: 1 / (1 + sp.exp(-x))).replace(softplus, lambda x: sp.log(1 + sp.exp(x)))
    under_exp = set().union(*[x.args[0].free_symbols for x in e.atoms(sp.exp)]) if e.has(sp.exp) else set()
    logs = {x: sp.log(sp.Symbol(f"_u_{x.name}", positive=True)) for x in under_exp}
    e = sp.expand(e.xreplace(logs), power_exp=True, log=False)
    e = e.replace(lambda x: isinstance(x, sp.log), lambda x: sp.log(sp.factor(sp.together(x.args[0]))))
    e = sp.expand(sp.expand_log(e, force=True))
    return e == 0 or sp.cancel(sp.together(e)) == 0 or _exact_zero(e)


def _exact_zero_fast(e) -> bool:
    e = sp.expand(e)
    return e == 0 or sp.cancel(sp.together(e)) == 0


def _outputs(t) -> tuple:
    return tuple(getattr(t, "outputs", None) or (t.output.name,))


def _name(t) -> str:
    return getattr(t, "name", str(t))


__all__ = ["equivalent", "exact_zero", "rewrites_hold"]
