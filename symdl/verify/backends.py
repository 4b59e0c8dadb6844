"""Backend verification: the NumPy reference against the compiled kernels, forward and VJPs."""
from __future__ import annotations

import functools

import numpy as np

from ..autodiff import grad_name
from ..reference import evaluate, evaluate_system
from ..reference.inputs import as_program_if_recurrent, default_sizes, formulas_of, has_kinks, random_inputs
from .numeric import sizes_text

TOLERANCE = {np.float64: 1e-9, np.float32: 2e-4}


class BackendsResult(float):
    """What `backends` found: the largest relative difference (a float, as `backends` always
    returned, but true even at 0.0: a failure raises instead), with `name`, `backend`, `kernels`
    (the formulas compiled and compared: forward and gradients), `sizes`, `errors` (the largest
    difference per dtype name) and `ties` (whether inputs with ties ran too); it prints as one line."""

    def __new__(cls, worst: float = 0.0, name: str = "", backend: str = "cpu", kernels: int = 0,
                sizes: dict | None = None, errors: dict | None = None, ties: bool = False):
        self = super().__new__(cls, worst)
        self.name, self.backend, self.kernels, self.ties = name, backend, kernels, ties
        self.sizes, self.errors = dict(sizes or {}), dict(errors or {})
        return self

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        per_dtype = ", ".join(f"{e:.1e} in {d} (tolerance {TOLERANCE[np.dtype(d).type]:g})"
                              for d, e in self.errors.items())
        kernels = f"{self.kernels} kernel{'' if self.kernels == 1 else 's'}"
        return (f"backends: {kernels} of {self.name!r} (forward and gradients) on {self.backend} at "
                f"{sizes_text(self.sizes)}, worst relative difference from the NumPy reference {per_dtype}"
                + ("; inputs with ties too" if self.ties else ""))

    __repr__ = __str__


def backends(target, sizes: dict | None = None, seed: int = 0, backend: str = "cpu",
             dtypes=(np.float64, np.float32), ties: bool | None = None, parallel: bool = False) -> BackendsResult:
    """Evaluate every formula of `target` and of its gradient with the reference evaluator and
    with the compiled kernels, at each dtype; AssertionError on a difference beyond tolerance, or
    on any NaN or inf on either side. Returns the largest relative difference, as a BackendsResult
    (it also holds the worst per dtype and prints as one line).

    When a formula branches on values (Max, Abs, max reductions, a Piecewise testing a tensor;
    `inputs.has_kinks`) the check runs a second
    time on inputs with exact ties (zeros and repeated values, `random_inputs(ties=True)`): the
    reference and the kernels must agree on the conventions there (relu'(0) = 0, |x|'(0) = 0, the
    first maximiser). `ties=None` decides by the formula; True or False forces it.

    `parallel=True` (cpu) also runs each float64 kernel's parallel flavour, which a call takes only
    from 2^18 iterations (compiled) or 2^22 (backends/cpu/backend.py), at the check's sizes (`_Threaded`):
    its loops print differently (backends/statements.py `_parts_loop`). It compiles a parallel
    function per kernel, several times slower than a serial one.

    What it sees: the compiled kernels (printer, lowering, BLAS contractions, fused loops) against
    the NumPy reference, formula by formula. What it cannot see, by design: wrong gradient
    *mathematics*. The reference evaluates the same derived gradient formulas as the kernels, so a
    wrong derivative agrees with itself here; `symbolic` and `numeric` catch those."""
    target = as_program_if_recurrent(target)
    sizes = sizes or default_sizes(target)
    gradient = target.vjp()
    tie_rounds = (False, True) if (has_kinks(target) if ties is None else ties) else (False,)
    errors: dict = {}
    for tied in tie_rounds:
        for dtype in dtypes:
            worst = errors.get(np.dtype(dtype).name, 0.0)
            rng = np.random.default_rng(seed)
            env = random_inputs(target, sizes, rng, dtype, ties=tied)
            outs = _run(target, env, backend, sizes, tied, parallel)
            for o in outs:
                env[grad_name(o)] = _upstream(rng, np.shape(env[o]), dtype, tied)
            if isinstance(gradient, dict):  # a Formula: one gradient formula per input
                for g in gradient.values():
                    env.pop(g.output.name, None)
                    worst = max(worst, _compare(g, env, backend, dtype, sizes, tied, parallel))
            else:
                for unit in _units(gradient, len(formulas_of(target))):
                    worst = max(worst, _compare(unit, env, backend, dtype, sizes, tied, parallel))
            errors[np.dtype(dtype).name] = max(worst, *outs.values())
    # forward formulas and gradient formulas: a Program's gradient program holds both
    kernels = (len(formulas_of(target)) + len(gradient) if isinstance(gradient, dict)
               else len(gradient.formulas))
    return BackendsResult(max(errors.values(), default=0.0), str(getattr(target, "name", target)), backend,
                          kernels, {str(k): int(v) for k, v in sizes.items()}, errors, len(tie_rounds) > 1)


def _upstream(rng, shape, dtype, tied):
    if not shape:
        return float(rng.standard_normal())
    g = rng.standard_normal(shape)
    if tied:  # zeros in the upstream gradient too (a relu's 0 · anything)
        g[rng.random(shape) < 0.25] = 0.0
    return g.astype(dtype)


def _run(target, env, backend, sizes, tied=False, parallel=False):
    errs = {}
    for unit in _units(target, 0):
        errs[unit.output.name] = _compare(unit, env, backend, env_dtype(env), sizes, tied, parallel)
    return errs


def _units(target, start: int) -> list:
    """The formulas of `target` from position `start`, each system of recurrences as one
    _System (it compiles and evaluates as one)."""
    systems = {s.outputs[0]: s for s in getattr(target, "systems", ())}
    skip, out = set(), []
    for f in formulas_of(target)[start:]:
        if f.output.name in systems:
            out.append(_System([target.producer(o) for o in systems[f.output.name].outputs],
                               systems[f.output.name]))
            skip |= set(systems[f.output.name].outputs)
        elif f.output.name not in skip:
            out.append(f)
    return out


class _System:
    """A system of recurrences, checked like a formula: its kernel against evaluate_system."""

    def __init__(self, members, system):
        self.members, self.system = members, system
        self.output, self.name = members[-1].output, "+".join(f.name for f in members)
        self.dims = tuple(sorted({d for f in members for d in f.dims}, key=str))
        states = {f.output.name for f in members}
        self.inputs = tuple({t.name: t for f in members for t in f.inputs if t.name not in states}.values())

    def run(self, backend, args, dims):
        from ..runtime.program import kernel_for
        from ..runtime.system import SystemKernel
        kernels = [kernel_for(f, backend) for f in self.members]
        got = SystemKernel(kernels, self.system, self.name).run(dict(args))
        want = evaluate_system(self.members, self.system, args, dims or SystemKernel(
            kernels, self.system, self.name, check=False).bind({n: np.shape(a) for n, a in args.items()}))
        return got, want


def env_dtype(env):
    for v in env.values():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            return v.dtype.type
    return np.float64


def _compare(f, env, backend, dtype, sizes, tied=False, parallel=False) -> float:
    """Compile and evaluate `f` on `env`, store the compiled result in env, return the error."""
    if parallel and backend == "cpu" and np.dtype(dtype) == np.float64 and not isinstance(f, _System):
        _compare(f, dict(env), _threaded(), dtype, sizes, tied)  # the same, through the parallel flavour
    args = {t.name: _arg(env[t.name], t) for t in f.inputs}
    dims = {str(k): v for k, v in sizes.items()} if sizes else None
    if isinstance(f, _System):
        got, want = f.run(backend, args, dims)
        for o in list(got)[:-1]:  # every state but the last (stored below, like a formula's output)
            env[o] = np.asarray(got[o]).astype(dtype)
            w = np.asarray(want[o], dtype=np.float64)
            if not np.allclose(got[o], w, rtol=0, atol=TOLERANCE[np.dtype(dtype).type] * max(1.0, np.abs(w).max())):
                raise AssertionError(f"{f.name}: the {backend} kernel differs from the NumPy reference in {o}"
                                     f"{_first_difference(np.asarray(got[o], dtype=np.float64), w)}")
        got, want = got[f.output.name], want[f.output.name]
    else:
        got = f.compile(backend=backend)(dims=dims, **args)
        want = evaluate(f, args, {d: dims[d] for d in map(str, f.dims)} if dims else None)
    g64, w64 = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if not np.size(w64):
        err = 0.0
    elif not (np.all(np.isfinite(g64)) and np.all(np.isfinite(w64))):
        err = float("nan")  # a NaN or inf on either side is never "within tolerance"
    else:
        err = float(np.max(np.abs(g64 - w64))) / max(1.0, float(np.max(np.abs(w64))))
    if not err <= TOLERANCE[np.dtype(dtype).type]:  # NaN compares False: a NaN fails
        first = _first_difference(g64, w64)
        raise AssertionError(f"{f.name}: the {backend} kernel differs from the NumPy reference by {err:.2e} "
                             f"(relative, {np.dtype(dtype).name}{', inputs with ties' if tied else ''})"
                             f"{first}")
    if np.ndim(got) and not any(t.rank and not t.integer for t in f.inputs):
        got = got.astype(dtype)  # only scalar float inputs (grad_L / B): float64, as a program casts it
    env[f.output.name] = got if np.ndim(got) else got.item()
    return err


@functools.cache
def _threaded():
    """The cpu backend taking every kernel's parallel flavour, whatever the sizes and thread count."""
    from ..backends.cpu import CpuBackend

    class _Threaded(CpuBackend):
        def parallel(self, program, dims, module=None):
            return True

        def flavour(self, parallel: bool) -> bool:
            return parallel

        def __str__(self) -> str:
            return "cpu (parallel flavour)"

    return _Threaded()


def _first_difference(got, want) -> str:
    if not np.ndim(want):
        return f": kernel {got}, reference {want}"
    bad = ~np.isclose(got, want, rtol=1e-6, atol=1e-6) | ~np.isfinite(got) | ~np.isfinite(want)
    if not bad.any():
        return ""
    idx = tuple(int(i) for i in np.argwhere(bad)[0])
    return f"; first at {list(idx)}: kernel {got[idx]!r}, reference {want[idx]!r}"


def _arg(value, tensor):
    if tensor.rank == 0 and isinstance(value, np.ndarray):
        return value.item()
    return value
