"""Binding dimensions from argument shapes, and every check a call makes before a kernel runs.

The rules come from the formula (declared shapes, lone-index ranges, affine reads); they are
printed once into small Python functions of the dimensions, so a call costs microseconds.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy as sp

from .declare.formula import Formula
from .declare.reads import linear_in, walk_reads
from .declare.indexing import affine, is_lone
from .declare.reductions import ArgMax, ReduceMax
from .printing import python_function


def _compile_int(expr, dims) -> callable:
    return python_function(expr, dims, dims)


@dataclass(frozen=True)
class ReadCheck:
    tensor: str
    axis: int
    low: callable
    high: callable
    gathers: tuple  # (integer tensor name, coefficient)
    text: str
    spans: callable  # smallest hi - lo over the index ranges involved: < 0 means no read happens


@dataclass(frozen=True)
class NestedRead:
    """A read whose index ranges depend on other indices (a gradient's Sum from Max(0, p - 2)), or
    that sits under a condition on values rather than on indices (an arg-max test guards nothing):
    its lowest and highest positions at given dimensions, found by eliminating the innermost
    indices (an affine position is lowest at one end of each index's range) and enumerating the
    few outer ones that remain. `extent(dims)` is (lo, hi), or None when no read happens."""
    tensor: str
    axis: int
    text: str
    extent: callable


MAX_POINTS = 1 << 20  # outer index points enumerated per nested read; beyond, the read is not checked


class Binder:
    """Shape rules of one formula, compiled."""

    def __init__(self, f: Formula):
        self.formula = f
        dims = f.dims
        self.dim_names = [str(d) for d in dims]
        self.bare, self.rules, self.solvable = [], [], []
        for (t, a), cands in f.shape_rules.items():
            for c in cands:
                if isinstance(c, sp.Symbol) and c in dims:
                    self.bare.append((t, a, str(c)))
                else:
                    self.rules.append((t, a, _compile_int(c, dims), str(c)))
                    for d in c.free_symbols:
                        if linear_in(c, d):  # length = a·d + rest: d = (length - rest) / a
                            a_coeff = sp.Poly(c, d).all_coeffs()[0]
                            rest = sp.expand(c - a_coeff * d)
                            self.solvable.append((t, a, str(d), int(a_coeff), _compile_int(rest, dims),
                                                  [str(r) for r in rest.free_symbols]))
        self.out_shape = [(_compile_int(d, dims), str(d)) for d in f.output.shape]
        self.out_bare = {str(d): a for a, d in enumerate(f.output.shape) if str(d) in map(str, f.output_bound)}
        self.reads = []
        for t, a, aff, scope in f.read_checks:
            lo = aff.const + sum(c * (scope[v][0] if c > 0 else scope[v][1]) for v, c in aff.coeffs.items())
            hi = aff.const + sum(c * (scope[v][1] if c > 0 else scope[v][0]) for v, c in aff.coeffs.items())
            spans = [scope[v][1] - scope[v][0] for v in aff.coeffs] or [sp.Integer(0)]
            gathers = tuple((str(r.base.label), int(c) if c.is_Integer else c) for r, c in aff.reads.items())
            self.reads.append(ReadCheck(t, a, _compile_int(lo, dims), _compile_int(hi, dims), gathers,
                                        str(aff.expr()), _compile_int(sp.Min(*spans), dims)))
        checked = {_read_key(t, a, aff, scope) for t, a, aff, scope in f.read_checks}
        self.nested = nested_reads(f, checked)
        self._extents: dict = {}

    def bind(self, shapes: dict, given: dict | None, out_shape) -> dict:
        """Dimension values from the shapes; ValueError naming the tensor on any contradiction."""
        name = self.formula.name
        dims, source = {}, {}
        for d, v in (given or {}).items():
            if str(d) in self.dim_names:
                dims[str(d)], source[str(d)] = int(v), "dims="
        for t, a, d in self.bare:
            v = shapes[t][a]
            if d in dims and dims[d] != v:
                raise ValueError(f"formula {name!r}: tensor {t!r} axis {a} has length {v}, but {d} = "
                                 f"{dims[d]} from {source[d]}")
            dims.setdefault(d, v)
            source.setdefault(d, f"{t!r} axis {a}")
        changed = True
        while changed:  # lengths such as 2·n: solve for the one unknown
            changed = False
            for t, a, d, coeff, rest, needs in self.solvable:
                if d not in dims and all(r in dims for r in needs):
                    full = {k: dims.get(k, 0) for k in self.dim_names}
                    value, rem = divmod(shapes[t][a] - rest(**full), coeff)
                    if rem:
                        raise ValueError(f"formula {name!r}: tensor {t!r} axis {a} has length "
                                         f"{shapes[t][a]}, which is not of the form it must have")
                    dims[d], source[d] = value, f"{t!r} axis {a}"
                    changed = True
        if out_shape is not None:
            for d, a in self.out_bare.items():
                dims.setdefault(d, out_shape[a])
                source.setdefault(d, f"out axis {a}")
        missing = [d for d in self.dim_names if d not in dims]
        if missing:
            raise ValueError(f"formula {name!r}: dimension {missing[0]} is not the length of any input "
                             f"axis; pass dims={{{missing[0]!r}: ...}} or out=")
        for t, a, fn, text in self.rules:
            want = fn(**dims)
            if shapes[t][a] != want:
                bound = ", ".join(f"{d}={dims[d]} (from {source[d]})" for d in self.dim_names)
                raise ValueError(f"formula {name!r}: tensor {t!r} axis {a} has length {shapes[t][a]}, "
                                 f"expected {text} = {want} with {bound}")
        for a, (fn, text) in enumerate(self.out_shape):
            if fn(**dims) < 1:
                bound = ", ".join(f"{d}={dims[d]} (from {source[d]})" for d in self.dim_names)
                raise ValueError(f"formula {name!r}: output axis {a} would have length {text} = "
                                 f"{fn(**dims)} with {bound}; the inputs are too small")
        for r in self.reads:
            if r.spans(**dims) < 0:
                continue
            lo, hi = r.low(**dims), r.high(**dims)
            n = shapes[r.tensor][r.axis]
            if not r.gathers and (lo < 0 or hi > n - 1):
                raise ValueError(f"formula {name!r}: tensor {r.tensor!r} is read at axis {r.axis} with "
                                 f"{r.text} from {lo} to {hi}, outside its length {n} (dims {dims})")
        if self.nested:
            key = tuple(dims[d] for d in self.dim_names)
            if key not in self._extents:
                self._extents[key] = [r.extent(dims) for r in self.nested]
            for r, extent in zip(self.nested, self._extents[key], strict=True):
                if extent is None:
                    continue
                lo, hi = extent
                n = shapes[r.tensor][r.axis]
                if lo < 0 or hi > n - 1:
                    raise ValueError(f"formula {name!r}: tensor {r.tensor!r} is read at axis {r.axis} with "
                                     f"{r.text} from {lo} to {hi}, outside its length {n} (dims {dims}); "
                                     f"the index ranges of the formula allow reads "
                                     f"{'below 0' if lo < 0 else 'past the end'}")
        return dims

    def check_gathers(self, arrays: dict, dims: dict) -> None:
        """Integer tensors used as indices must keep every read inside its tensor."""
        for r in self.reads:
            if not r.gathers or r.spans(**dims) < 0:
                continue
            lo, hi = r.low(**dims), r.high(**dims)
            for t, c in r.gathers:
                v = arrays[t]
                if v.size == 0:
                    continue
                vmin, vmax = int(v.min()), int(v.max())
                lo += c * (vmin if c > 0 else vmax)
                hi += c * (vmax if c > 0 else vmin)
            n = arrays[r.tensor].shape[r.axis]
            if lo < 0 or hi > n - 1:
                names = ", ".join(t for t, _ in r.gathers)
                raise ValueError(f"formula {self.formula.name!r}: values of integer tensor {names} make "
                                 f"{r.tensor}[...{r.text}...] read positions {lo}..{hi} at axis {r.axis}, "
                                 f"outside its length {n}")


def float_dtype(formula_name: str, arrays: dict, tensors) -> np.dtype:
    """The one float dtype of the call: float32 or float64, never a silent mix."""
    found = {}
    for t in tensors:
        if t.rank and not t.integer:
            if arrays[t.name].dtype.kind != "f":
                raise ValueError(f"formula {formula_name!r}: tensor {t.name!r} has dtype "
                                 f"{arrays[t.name].dtype}; kernels take float32 or float64")
            found.setdefault(arrays[t.name].dtype, t.name)
    if not found:
        return np.dtype(np.float64)
    if len(found) > 1:
        desc = ", ".join(f"{n!r} is {d}" for d, n in found.items())
        raise ValueError(f"formula {formula_name!r}: inputs mix float dtypes ({desc}); cast them to one "
                         f"of float32/float64")
    (dtype,) = found
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"formula {formula_name!r}: tensor {found[dtype]!r} has dtype {dtype}; kernels "
                         f"take float32 or float64")
    return dtype


# -- reads whose ranges depend on other indices ---------------------------------------------------

def nested_reads(f: Formula, checked: set) -> list:
    """NestedRead checks for the affine reads of `f` that `f.read_checks` leaves out: those whose
    index ranges depend on other indices, and those under a Piecewise whose conditions test values
    (only conditions on indices guard a read). `checked` holds the `_read_key`s already checked."""
    found, seen = [], set(checked)
    dims = list(f.dims)
    for read, scope, guarded in walk_reads(f.body, dict(f.ranges), False, _index_guard):
        if guarded:
            continue
        t = str(read.base.label)
        if t == f.output.name:
            continue
        for a, pos in enumerate(read.indices):
            aff = affine(pos, f.all_indices)
            if aff is None or aff.reads or not aff.coeffs or any(v not in scope for v in aff.coeffs):
                continue
            if is_lone(pos, f.all_indices) and scope[pos][0] == 0 and not (
                    scope[pos][1].free_symbols & f.all_indices):
                continue  # the shape rules bind this axis to the index's range
            key = _read_key(t, a, aff, scope)
            if key in seen:
                continue
            seen.add(key)
            extent = _extent_function(aff.expr(), scope, dims)
            if extent is not None:
                found.append(NestedRead(t, a, str(aff.expr()), extent))
    return found


def _read_key(tensor, axis, aff, scope) -> tuple:
    return (tensor, axis, str(aff.expr()), tuple(sorted((str(v), str(scope[v][0]), str(scope[v][1]))
                                                        for v in aff.coeffs)))


def _index_guard(cond, scope) -> bool:
    """A Piecewise condition that guards reads at call time: on indices (and integer tensors),
    never on values (an arg-max test guards nothing)."""
    if cond is sp.true or cond is sp.false or not (cond.free_symbols & set(scope)):
        return False
    return not any(isinstance(n, (ArgMax, ReduceMax)) or (isinstance(n, sp.Indexed) and not n.base.is_integer)
                   for n in sp.preorder_traversal(cond))


def _np_eval(e, env: dict):
    """An index expression (+, ·, integer powers, Max, Min, floor, ceiling of rationals) on arrays,
    exact for integers below 2**52 (a rational factor p/q is applied as ·p then /q)."""
    if e.is_Integer:
        return int(e)
    if e.is_Rational:
        return e.p / e.q
    if e.is_Symbol:
        return env[e.name]
    if isinstance(e, (sp.floor, sp.ceiling)):  # exactly, as num // den: in floats 7/3 + 2/3 < 3
        num, den = sp.fraction(sp.together(e.args[0]))
        if den.is_Integer and den > 0 and num.is_integer:
            n = np.asarray(_np_eval(sp.expand(num), env)).astype(np.int64)
            return np.floor_divide(n, int(den)) if isinstance(e, sp.floor) else -np.floor_divide(-n, int(den))
    args = [_np_eval(a, env) for a in e.args if not (isinstance(e, sp.Mul) and a.is_Rational)]
    if isinstance(e, sp.Add):
        return functools.reduce(np.add, args)
    if isinstance(e, sp.Mul):
        c = e.as_coeff_Mul()[0] if e.args[0].is_Rational else sp.Integer(1)
        out = functools.reduce(np.multiply, args, 1)
        return out * int(c.p) / int(c.q) if c.q != 1 else out * int(c.p)
    if isinstance(e, sp.Pow) and e.exp.is_Integer and e.exp >= 0:
        return args[0] ** int(e.exp)
    if isinstance(e, (sp.Max, sp.Min)):
        return functools.reduce(np.maximum if isinstance(e, sp.Max) else np.minimum, args)
    if isinstance(e, sp.floor):
        return np.floor(args[0])
    if isinstance(e, sp.ceiling):
        return np.ceil(args[0])
    raise TypeError(f"index expression {e} ({type(e).__name__}) cannot be bounded")


def _extent_function(position, scope: dict, dims: list):
    """dims -> (lowest, highest) value of `position` over the nested ranges in `scope`, or None."""
    names = [v for v in scope if v in position.free_symbols]
    todo = list(names)
    while todo:  # every index whose range the others depend on
        v = todo.pop()
        for w in scope[v][0].free_symbols | scope[v][1].free_symbols:
            if w in scope and w not in names:
                names.append(w)
                todo.append(w)
    order = [v for v in scope if v in names]  # outer indices first
    sides = []
    for lowest in (True, False):
        expr, conds, left = _eliminate(position, scope, order, lowest)
        if expr is None:
            return None
        sides.append((expr, conds, left))

    def fn(expr, args):
        names = [a.name for a in args]
        return lambda *values: _np_eval(expr, dict(zip(names, values, strict=True)))

    compiled = []
    for expr, conds, left in sides:
        args = [*left, *dims]
        bounds = [(fn(scope[v][0], args), fn(scope[v][1], args)) for v in left]
        compiled.append((fn(expr, args), [fn(c, args) for c in conds], left, bounds))

    def extent(values: dict):
        try:
            return _extent(values)
        except (TypeError, KeyError, ValueError, OverflowError):  # a bound _np_eval cannot evaluate
            return None  # unchecked, as before nested reads were checked

    def _extent(values: dict):
        dvals = [values[str(d)] for d in dims]
        result = []
        for k, (value, conds, left, bounds) in enumerate(compiled):
            grid = _enumerate(left, bounds, dvals)
            if grid is None:
                return None  # too many points to enumerate: left to the kernel, as before
            if grid and np.size(grid[0]) == 0:
                return None  # an empty range: no read happens
            ok = np.ones(np.shape(grid[0]) if grid else (), dtype=bool)
            for c in conds:
                ok = ok & (np.asarray(c(*grid, *dvals)) >= 0)
            if not np.any(ok):
                return None
            v = np.broadcast_to(np.asarray(value(*grid, *dvals), dtype=np.float64), np.shape(ok))[ok]
            result.append(int(np.min(v)) if k == 0 else int(np.max(v)))
        return tuple(result)

    return extent


def _eliminate(position, scope, order, lowest: bool):
    """(expr, conditions >= 0, indices left): `position` at its lowest (or highest) over the
    innermost indices it is affine in, each replaced by the end of its range, with the condition
    that the range is not empty; the indices left are enumerated."""
    expr, conds, left = position, [], list(order)
    progress = True
    while progress:
        progress = False
        for v in reversed(left):
            if any(v in (scope[w][0].free_symbols | scope[w][1].free_symbols) for w in left if w != v):
                continue  # another index's range depends on v: enumerate v
            if any(v in c.free_symbols for c in conds):
                continue
            aff = affine(expr, {v})
            if aff is None:
                continue
            lo, hi = scope[v]
            c = aff.coeffs.get(v, 0)
            if c != 0:
                expr = expr.xreplace({v: lo if (c > 0) == lowest else hi})
            conds.append(sp.sympify(hi - lo))
            left.remove(v)
            progress = True
            break
    if len(left) > 3:
        return None, None, None
    return expr, conds, left


def _enumerate(left, bounds, dvals):
    """Arrays of every point of the nested ranges of `left` (outer first), or None when too many."""
    grid = []
    for v, (lo_fn, hi_fn) in zip(left, bounds, strict=True):
        lo = np.asarray(lo_fn(*grid, *([0] * (len(left) - len(grid))), *dvals), dtype=np.float64)
        hi = np.asarray(hi_fn(*grid, *([0] * (len(left) - len(grid))), *dvals), dtype=np.float64)
        count = np.maximum(hi - lo + 1, 0).astype(np.int64)
        if grid:
            lo, hi, count = (np.broadcast_to(x, grid[0].shape) for x in (lo, hi, count))
        total = int(np.sum(count))
        if total > MAX_POINTS:
            return None
        if not grid:
            grid = [np.arange(int(lo), int(lo) + int(count))]
            continue
        starts = np.repeat(lo.astype(np.int64), count)
        offsets = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        grid = [np.repeat(g, count) for g in grid] + [starts + offsets]
    return grid
