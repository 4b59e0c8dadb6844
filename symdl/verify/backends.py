"""Backend verification: the NumPy reference against the compiled kernels, forward and VJPs."""
from __future__ import annotations

import numpy as np

from ..autodiff import grad_name
from ..reference import evaluate
from .inputs import as_program_if_recurrent, default_sizes, formulas_of, random_inputs

TOLERANCE = {np.float64: 1e-9, np.float32: 2e-4}


def backends(target, sizes: dict | None = None, seed: int = 0, backend: str = "cpu",
             dtypes=(np.float64, np.float32)) -> float:
    """Evaluate every formula of `target` and of its gradient with the reference evaluator and
    with the compiled kernels, at each dtype; AssertionError on a difference beyond tolerance.
    Returns the largest relative difference."""
    target = as_program_if_recurrent(target)
    sizes = sizes or default_sizes(target)
    worst = 0.0
    for dtype in dtypes:
        rng = np.random.default_rng(seed)
        env = random_inputs(target, sizes, rng, dtype)
        outs = _run(target, env, backend, sizes)
        for o in outs:
            env[grad_name(o)] = rng.standard_normal(np.shape(env[o])).astype(dtype) if np.ndim(env[o]) \
                else float(rng.standard_normal())
        gradient = target.vjp()
        if isinstance(gradient, dict):  # a Formula: one gradient formula per input
            for g in gradient.values():
                env.pop(g.output.name, None)
                _compare(g, env, backend, dtype, sizes)
        else:
            for f in gradient.formulas[len(formulas_of(target)):]:
                worst = max(worst, _compare(f, env, backend, dtype, sizes))
        worst = max(worst, *outs.values())
    return worst


def _run(target, env, backend, sizes):
    errs = {}
    for f in formulas_of(target):
        errs[f.output.name] = _compare(f, env, backend, env_dtype(env), sizes)
    return errs


def env_dtype(env):
    for v in env.values():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            return v.dtype.type
    return np.float64


def _compare(f, env, backend, dtype, sizes) -> float:
    """Compile and evaluate `f` on `env`, store the compiled result in env, return the error."""
    args = {t.name: _arg(env[t.name], t) for t in f.inputs}
    dims = {str(k): v for k, v in sizes.items()} if sizes else None
    got = f.compile(backend=backend)(dims=dims, **args)
    want = evaluate(f, args, {d: dims[d] for d in map(str, f.dims)} if dims else None)
    scale = max(1.0, float(np.max(np.abs(want))) if np.size(want) else 1.0)
    err = float(np.max(np.abs(got - want))) / scale if np.size(want) else 0.0
    if not err <= TOLERANCE[np.dtype(dtype).type]:
        raise AssertionError(f"{f.name}: the {backend} kernel differs from the NumPy reference by {err:.2e} "
                             f"(relative, {np.dtype(dtype).name})")
    if np.ndim(got) and not any(t.rank and not t.integer for t in f.inputs):
        got = got.astype(dtype)  # only scalar float inputs (grad_L / B): float64, as a program casts it
    env[f.output.name] = got if np.ndim(got) else got.item()
    return err


def _arg(value, tensor):
    if tensor.rank == 0 and isinstance(value, np.ndarray):
        return value.item()
    return value
