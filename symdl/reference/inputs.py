"""Small sizes and random inputs for verification, drawn inside each input's domain."""
from __future__ import annotations

import itertools

import numpy as np
import sympy as sp

from ..binding import Binder


def formulas_of(target) -> list:
    return list(getattr(target, "formulas", [target]))


def as_program_if_recurrent(target):
    """A recurrence's gradient is a program (adjoint, then gradients): verify it as one."""
    if getattr(target, "recurrence", None) is None:
        return target
    from ..declare.program import Program
    return Program([target], name=target.name)


def dim_value(expr, values: dict) -> int:
    """A dimension expression's value, matching symbols by name (whatever their assumptions)."""
    e = sp.sympify(expr)
    return int(e.xreplace({s: sp.Integer(values[s.name]) for s in e.free_symbols}))


def input_shapes(target, sizes: dict) -> dict:
    values = {str(d): v for d, v in sizes.items()}
    return {t.name: tuple(dim_value(d, values) for d in t.shape) for t in target.inputs}


def valid(target, sizes: dict) -> bool:
    """Whether these sizes give every formula of `target` non-empty, in-range shapes."""
    try:
        shapes = input_shapes(target, sizes)
        if any(n < 1 for s in shapes.values() for n in s):
            return False
        known = dict(shapes)
        for s in getattr(target, "systems", ()):  # a system's states read each other: known up front
            known.update({o: tuple(dim_value(d, sizes_by_name(sizes)) for d in target.producer(o).output.shape)
                          for o in s.outputs})
        for f in formulas_of(target):
            dims = Binder(f).bind({t.name: known[t.name] for t in f.inputs}, sizes_by_name(sizes), None)
            known[f.output.name] = tuple(dim_value(d, dims) for d in f.output.shape)
        return True
    except (ValueError, TypeError, KeyError):
        return False


def sizes_by_name(sizes: dict) -> dict:
    return {str(d): int(v) for d, v in sizes.items()}


def default_sizes(target) -> dict:
    """The target's own `sizes`, completed with small distinct values that make it valid."""
    given = {str(k): v for k, v in getattr(target, "sizes", {}).items()}
    dims = [d for d in target.dims if str(d) not in given]
    options = [list(range(2, 2 + len(dims))), list(range(3, 3 + len(dims)))[::-1], [4] * len(dims),
               [5] * len(dims), [7] * len(dims)]
    options += [list(c) for c in itertools.product([2, 3, 5, 8], repeat=len(dims))][:200]
    for values in options:
        sizes = dict(given, **{str(d): v for d, v in zip(dims, values, strict=True)})
        if valid(target, sizes):
            return sizes
    raise ValueError(f"no small sizes found that make {getattr(target, 'name', target)} valid; "
                     f"give sizes= explicitly")


def random_inputs(target, sizes: dict, rng: np.random.Generator, dtype=np.float64, ties: bool = False) -> dict:
    """Float inputs uniform in their domains; integer inputs in the range their reads allow.

    With `ties`, about half of each float tensor's elements are drawn from three values instead
    (0 among them where the domain holds it), so maxima tie, relu and |x| sit at their kinks and
    Piecewise conditions meet equality: the conventions (relu'(0) = 0, |x|'(0) = 0, the first
    maximiser) that random inputs never exercise."""
    shapes = input_shapes(target, sizes)
    out = {}
    for t in target.inputs:
        if t.integer:
            continue
        lo, hi = target.domains.get(t.name, (-1.0, 1.0))
        if t.rank == 0:
            out[t.name] = float(rng.uniform(lo, hi))
        else:
            value = rng.uniform(lo, hi, size=shapes[t.name])
            if ties:
                pool = np.unique([lo + (hi - lo) * q for q in (0.25, 0.5, 0.75)] + ([0.0] if lo < 0 < hi else []))
                value = np.where(rng.random(value.shape) < 0.5, rng.choice(pool, value.shape), value)
            out[t.name] = value.astype(dtype)
    for t in target.inputs:
        if t.integer:
            out[t.name] = rng.integers(*_integer_range(target, t.name, shapes, sizes), size=shapes[t.name])
    return out


KINKS = (sp.Max, sp.Min, sp.Abs, sp.Heaviside, sp.sign)


def has_kinks(target) -> bool:
    """Whether some formula of `target` branches on *values* (Max, Min, Abs, max reductions, a
    Piecewise whose condition reads a tensor), so that inputs with ties test a convention. Index
    arithmetic (subscripts, Sum limits, zero-padding guards on indices) does not count."""
    return any(_kinked(f.body) for f in formulas_of(target))


def _kinked(e) -> bool:
    from ..declare.reductions import REDUCTIONS, ArgMax, ReduceMax
    if isinstance(e, sp.Indexed) or not e.args:
        return False
    if isinstance(e, (ReduceMax, ArgMax, *KINKS)):
        return True
    if isinstance(e, REDUCTIONS):
        return _kinked(e.function)
    if isinstance(e, sp.Piecewise):
        for value, cond in e.args:
            if _kinked(value) or any(isinstance(n, (ReduceMax, ArgMax)) or (
                    isinstance(n, sp.Indexed) and not n.base.is_integer) for n in sp.preorder_traversal(cond)):
                return True
        return False
    return any(_kinked(a) for a in e.args if isinstance(a, sp.Basic))


def _integer_range(target, name, shapes, sizes):
    """[low, high) for an integer tensor: every gather through it must stay inside its tensor."""
    lo, hi = -(1 << 30), 1 << 30
    names = sizes_by_name(sizes)
    for f in formulas_of(target):
        binder = Binder(f)
        for r in binder.reads:
            for t, c in r.gathers:
                if t != name or len(r.gathers) != 1 or abs(c) != 1:
                    continue
                n = shapes.get(r.tensor) or _produced_shape(target, r.tensor, names)
                if n is None:
                    continue
                a_lo, a_hi = r.low(**{k: names[k] for k in binder.dim_names}), r.high(
                    **{k: names[k] for k in binder.dim_names})
                lo, hi = max(lo, -a_lo), min(hi, n[r.axis] - 1 - a_hi)
    if lo > hi:
        raise ValueError(f"no valid values for integer tensor {name} at sizes {sizes}")
    return (lo if lo > -(1 << 30) else 0, (hi if hi < 1 << 30 else 10) + 1)


def _produced_shape(target, tensor: str, names: dict):
    """The shape of a tensor a formula of the program produces (a gather may read one)."""
    for f in formulas_of(target):
        if f.output.name == tensor:
            return tuple(dim_value(d, names) for d in f.output.shape)
    return None
