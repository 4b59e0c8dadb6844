"""Binding dimensions from argument shapes, and every check a call makes before a kernel runs.

The rules come from the formula (declared shapes, lone-index ranges, affine reads); they are
printed once into small Python functions of the dimensions, so a call costs microseconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..backends.cpu.printer import python_function
from ..declare.formula import Formula, linear_in


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
            gathers = tuple((str(r.base.label), c) for r, c in aff.reads.items())
            self.reads.append(ReadCheck(t, a, _compile_int(lo, dims), _compile_int(hi, dims), gathers,
                                        str(aff.expr()), _compile_int(sp.Min(*spans), dims)))

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
