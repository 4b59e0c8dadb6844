"""The NumPy reference evaluator: the living definition of what a formula means.

It walks the SymPy expression with NumPy broadcasting, one array axis per index, and shares
nothing with the loop IR or the backends; every backend is tested against it. Reads outside a
tensor are zero (so guarded reads in gradient formulas need no special case here).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import sympy as sp

from ..declare.functions import sigmoid, softplus
from ..declare.reductions import ArgMax, ReduceMax, ReduceProduct, Sum

FUNCTIONS = {
    sp.exp: np.exp, sp.log: np.log, sp.tanh: np.tanh, sp.sin: np.sin, sp.cos: np.cos,
    sp.sinh: np.sinh, sp.cosh: np.cosh, sp.atan: np.arctan,
    sp.erf: np.vectorize(math.erf, otypes=[np.float64]),  # NumPy has no erf (SciPy's is not a dependency)
    sp.Abs: np.abs, sp.sign: np.sign, sp.floor: np.floor, sp.ceiling: np.ceil,
    sigmoid: lambda x: np.exp(-np.logaddexp(0.0, -x)), softplus: lambda x: np.logaddexp(0.0, x),
    sp.Heaviside: lambda x: (x > 0).astype(np.float64),
}


def evaluate(formula, arrays: dict, dims: dict | None = None) -> np.ndarray:
    """out[I] for every I, in float64. `dims` are bound from the arrays' shapes when not given."""
    if dims is None:
        from ..binding import Binder
        shapes = {t.name: np.shape(arrays[t.name]) for t in formula.inputs}
        dims = Binder(formula).bind(shapes, None, None)
    ev, env, shape = _setup(formula, dict(arrays), dims)
    if formula.recurrence is None:
        return _block(ev.eval(formula.body, env), shape)
    # a recurrence: one step of its axis at a time, each reading the steps already written
    rec = formula.recurrence
    out = ev.arrays[formula.output.name] = np.zeros(shape)
    steps = range(shape[rec.axis]) if rec.direction > 0 else reversed(range(shape[rec.axis]))
    for step in steps:
        _step(ev, env, formula, rec.axis, step, out)
    return out


def evaluate_system(formulas, system, arrays: dict, dims: dict) -> dict:
    """{state: array} for a system of recurrences (declare/systems.py): step by step, each step
    evaluating the formulas in order, each reading the states written so far (zero elsewhere)."""
    arrays, setups, outs = dict(arrays), [], {}
    for f in formulas:
        ev, env, shape = _setup(f, arrays, dims)
        ev.arrays = arrays  # one dictionary: every formula sees every state
        outs[f.output.name] = arrays[f.output.name] = np.zeros(shape)
        axis = next(a for a, i in enumerate(f.indices) if i.name == system.step)
        setups.append((f, ev, env, axis))
    n = outs[formulas[0].output.name].shape[setups[0][3]]
    for step in (range(n) if system.direction > 0 else reversed(range(n))):
        for f, ev, env, axis in setups:
            _step(ev, env, f, axis, step, outs[f.output.name])
    return outs


def _setup(formula, arrays: dict, dims: dict):
    """(evaluator, environment of the output indices, output shape)."""
    names = {str(d): int(v) for d, v in dims.items()}
    symbols = [*formula.indices, *sorted(formula.reduction_indices, key=str)]
    ev = _Evaluator({s: a for a, s in enumerate(symbols)}, len(symbols), arrays, names)
    env = {}
    for a, i in enumerate(formula.indices):
        lo, hi = formula.ranges[i]
        env[i] = ev.place(np.arange(int(ev.scalar(lo, env)), int(ev.scalar(hi, env)) + 1), a)
    shape = tuple(int(ev.scalar(hi, env)) + 1 for _, hi in formula.ranges.values())
    return ev, env, shape


def _step(ev, env, formula, axis: int, step: int, out) -> None:
    """out at one step of `axis`, from the body with that step's index."""
    at = ev.place(np.array([step]), axis)
    where = tuple(slice(step, step + 1) if a == axis else slice(None) for a in range(out.ndim))
    out[where] = _block(ev.eval(formula.body, {**env, formula.indices[axis]: at}), out[where].shape)


def _block(value, shape) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if value.ndim:  # axes past the output's are summed out (size 1)
        value = value.reshape(value.shape[:len(shape)])
    return np.array(np.broadcast_to(value, shape), dtype=np.float64)


class _Evaluator:
    def __init__(self, axes, ndim, arrays, dims):
        self.axes, self.ndim, self.arrays, self.dims = axes, ndim, arrays, dims

    def place(self, values, axis):
        shape = [1] * self.ndim
        shape[axis] = len(values)
        return values.reshape(shape)

    def scalar(self, e, env):
        v = self.eval(e, env)
        return np.asarray(v)

    def eval(self, e, env):
        exact = self.exact_integer(e, env)
        if exact is not None:
            return exact
        if e.is_Number:
            return float(e) if not e.is_Integer else int(e)
        if isinstance(e, sp.NumberSymbol):
            return float(e)
        if isinstance(e, sp.Symbol):
            if e in env:
                return env[e]
            if e.name in self.dims:
                return self.dims[e.name]
            return float(self.arrays[e.name])
        if isinstance(e, sp.Indexed):
            return self.read(e, env)
        if isinstance(e, sp.Sum):
            return self.sum(e, env)
        if isinstance(e, ReduceMax):
            return self.maximum(e, env)
        if isinstance(e, ArgMax):
            return self.argmax(e, env)
        if isinstance(e, ReduceProduct):
            return self.product(e, env)
        if isinstance(e, sp.Add):
            return functools.reduce(np.add, [self.eval(a, env) for a in e.args])
        if isinstance(e, sp.Mul):
            return functools.reduce(np.multiply, [self.eval(a, env) for a in e.args])
        if isinstance(e, sp.Pow):
            base, ex = self.eval(e.base, env), self.eval(e.exp, env)
            with np.errstate(all="ignore"):
                return np.power(np.asarray(base, dtype=np.float64), ex)
        if isinstance(e, (sp.Max, sp.Min)):
            op = np.maximum if isinstance(e, sp.Max) else np.minimum
            return functools.reduce(op, [self.eval(a, env) for a in e.args])
        if isinstance(e, sp.Piecewise):
            out = 0.0
            for value, cond in reversed(e.args):
                v = self.eval(value, env)
                out = v if cond is sp.true else np.where(self.eval(cond, env), v, out)
            return out
        if isinstance(e, sp.KroneckerDelta):
            return (np.asarray(self.eval(e.args[0], env)) == self.eval(e.args[1], env)).astype(np.float64)
        if isinstance(e, sp.Mod):
            return np.mod(self.eval(e.args[0], env), self.eval(e.args[1], env))
        if isinstance(e, sp.core.relational.Relational):
            a, b = self.eval(e.lhs, env), self.eval(e.rhs, env)
            return {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
                    ">": np.greater, ">=": np.greater_equal}[e.rel_op](a, b)
        if isinstance(e, sp.And):
            return functools.reduce(np.logical_and, [self.eval(a, env) for a in e.args])
        if isinstance(e, sp.Or):
            return functools.reduce(np.logical_or, [self.eval(a, env) for a in e.args])
        if isinstance(e, sp.Not):
            return np.logical_not(self.eval(e.args[0], env))
        if isinstance(e, sp.ITE):
            return np.where(*(self.eval(a, env) for a in e.args))
        if e is sp.true or e is sp.false:
            return bool(e)
        for cls, fn in FUNCTIONS.items():
            if isinstance(e, cls):
                with np.errstate(all="ignore"):
                    return fn(np.asarray(self.eval(e.args[0], env), dtype=np.float64))
        raise NotImplementedError(f"the reference evaluator does not know {type(e).__name__}: {e}")

    def exact_integer(self, e, env):
        """Index arithmetic with rational coefficients (`floor(W/3 + 2/3)`, `p/3 - m/3 >= 2`) in
        exact integers: `num // den` of its integer numerator and denominator. In floats,
        7/3 + 2/3 is 2.9999999999999996 and its floor one too small. None for anything else."""
        if not isinstance(e, (sp.floor, sp.ceiling, sp.Add, sp.Mul, sp.core.relational.Relational)):
            return None
        if isinstance(e, sp.core.relational.Relational):
            d = e.lhs - e.rhs
            if not _rational_index(d):
                return None
            num, den = sp.fraction(sp.together(d))  # den > 0: the comparison keeps its sense
            a = np.asarray(self.eval(sp.expand(num), env))
            return {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
                    ">": np.greater, ">=": np.greater_equal}[e.rel_op](a, 0)
        arg = e.args[0] if isinstance(e, (sp.floor, sp.ceiling)) else e
        if not _rational_index(arg):
            return None
        num, den = sp.fraction(sp.together(arg))
        n = np.asarray(self.eval(sp.expand(num), env)).astype(np.int64)
        if isinstance(e, sp.ceiling):
            return -np.floor_divide(-n, int(den))
        return np.floor_divide(n, int(den))  # a bare rational index is exact by its guards: floor is its value

    def index_values(self, e, env):
        v = np.asarray(self.eval(e, env))
        return np.floor(v).astype(np.int64) if v.dtype.kind == "f" else v.astype(np.int64)

    def read(self, e: sp.Indexed, env):
        name = str(e.base.label)
        arr = np.asarray(self.arrays[name])
        idx = np.broadcast_arrays(*[self.index_values(i, env) for i in e.indices])
        valid = np.ones(idx[0].shape, dtype=bool)
        for a, ix in enumerate(idx):
            valid &= (ix >= 0) & (ix < arr.shape[a])
        clipped = tuple(np.clip(ix, 0, max(arr.shape[a] - 1, 0)) for a, ix in enumerate(idx))
        values = arr[clipped] if arr.size else np.zeros(idx[0].shape)
        if arr.dtype.kind in "iu":
            return np.where(valid, values, 0)
        return np.where(valid, values.astype(np.float64), 0.0)

    def sum(self, e: sp.Sum, env):
        (var, lo, hi), *rest = e.limits
        inner = Sum(e.function, *rest) if rest else e.function
        lo_v, hi_v = np.asarray(self.eval(lo, env)), np.asarray(self.eval(hi, env))
        start, stop = int(np.min(lo_v)), int(np.max(hi_v))
        if stop < start:
            return 0.0
        axis = self.axes[var]
        values = self.place(np.arange(start, stop + 1), axis)
        body = self.eval(inner, {**env, var: values})
        mask = (values >= lo_v) & (values <= hi_v)
        body = np.where(mask, body, 0.0)
        body = np.broadcast_to(body, np.broadcast_shapes(np.shape(body), mask.shape))
        return body.sum(axis=axis, keepdims=True) if body.ndim == self.ndim else body.sum()

    def _window(self, var, lo, hi, env):
        """The values of a reduction variable (on its axis) and the mask of its per-element range."""
        lo_v, hi_v = np.asarray(self.eval(lo, env)), np.asarray(self.eval(hi, env))
        start, stop = int(np.min(lo_v)), int(np.max(hi_v))
        values = self.place(np.arange(start, max(stop, start - 1) + 1), self.axes[var])
        return values, (values >= lo_v) & (values <= hi_v)

    def maximum(self, e, env):
        (var, lo, hi), *rest = e.limits
        inner = ReduceMax(e.function, *rest) if rest else e.function
        values, mask = self._window(var, lo, hi, env)
        body = np.where(mask, self.eval(inner, {**env, var: values}), -np.inf)
        body = np.broadcast_to(body, np.broadcast_shapes(np.shape(body), mask.shape))
        return body.max(axis=self.axes[var], keepdims=True)

    def product(self, e, env):
        (var, lo, hi), *rest = e.limits
        inner = ReduceProduct(e.function, *rest) if rest else e.function
        values, mask = self._window(var, lo, hi, env)
        body = np.where(mask, self.eval(inner, {**env, var: values}), 1.0)
        body = np.broadcast_to(body, np.broadcast_shapes(np.shape(body), mask.shape))
        return body.prod(axis=self.axes[var], keepdims=True)

    def argmax(self, e, env):
        """Coordinate k of the first maximiser in the lexicographic order of the limits."""
        inner_env, masks, sizes = dict(env), [], []
        for var, lo, hi in e.limits:
            values, mask = self._window(var, lo, hi, inner_env)
            inner_env[var] = values
            masks.append(mask)
        body = self.eval(e.function, inner_env)
        for mask in masks:
            body = np.where(mask, body, -np.inf)
        axes = [self.axes[v] for v in e.variables]
        shape = np.broadcast_shapes(np.shape(body), *[np.shape(inner_env[v]) for v in e.variables])
        body = np.moveaxis(np.broadcast_to(body, shape), axes, range(-len(axes), 0))
        flat = body.reshape(body.shape[:-len(axes)] + (-1,)).argmax(axis=-1)
        coords = np.unravel_index(flat, body.shape[-len(axes):])
        start = int(np.min(np.asarray(self.eval(e.limits[e.coordinate][1], env))))
        return np.expand_dims(coords[e.coordinate] + start, sorted(axes))


def _rational_index(e) -> bool:
    """An integer-valued combination of indices and dimensions with a non-integer rational
    coefficient and an integer denominator."""
    if not any(not r.is_Integer for r in e.atoms(sp.Rational)):
        return False
    if any(isinstance(n, sp.Function) and not isinstance(n, (sp.floor, sp.ceiling)) for n in sp.preorder_traversal(e)):
        return False
    if not all(s.is_integer for s in e.free_symbols) or any(not getattr(r.base, "is_integer", False)
                                                             for r in e.atoms(sp.Indexed)):
        return False
    den = sp.fraction(sp.together(e))[1]
    return den.is_Integer and den > 1  # den 1: the rationals sit inside a floor, evaluated there
