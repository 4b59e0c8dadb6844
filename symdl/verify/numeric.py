"""Numeric verification: compiled forward and VJP against central finite differences (float64)."""
from __future__ import annotations

import numpy as np

from .inputs import default_sizes, random_inputs


def numeric(target, sizes: dict | None = None, seed: int = 0, rtol: float = 1e-6, eps: float = 1e-6,
            backend: str = "cpu") -> float:
    """Check <VJP(g), v> against (f(x + eps v) - f(x - eps v)) / 2eps · g for each input, along a
    random direction v, with the compiled kernels in float64. Raises AssertionError beyond `rtol`
    (relative to the scale of the terms); returns the largest relative error seen."""
    sizes = sizes or default_sizes(target)
    rng = np.random.default_rng(seed)
    kern = target.compile(backend=backend)
    inputs = random_inputs(target, sizes, rng)
    dims = {str(k): int(v) for k, v in sizes.items()} if hasattr(target, "indices") else None
    call = (lambda **a: kern(dims=dims, **a)) if dims else kern
    y = _forward(call, inputs, target)
    grads = {o: rng.standard_normal(np.shape(v)) for o, v in y.items()}
    single = len(y) == 1
    extra = {"dims": dims} if dims else {}
    vjp = kern.vjp(next(iter(grads.values())) if single else grads, **extra, **inputs)
    worst = 0.0
    for t in target.inputs:
        if t.integer:
            continue
        v = rng.standard_normal(np.shape(inputs[t.name]))
        plus, minus = dict(inputs), dict(inputs)
        plus[t.name] = inputs[t.name] + eps * v
        minus[t.name] = inputs[t.name] - eps * v
        fp, fm = _forward(call, plus, target), _forward(call, minus, target)
        fd = sum(float(np.sum((fp[o] - fm[o]) * grads[o])) for o in y) / (2 * eps)
        an = float(np.sum(np.asarray(vjp[t.name]) * v))
        scale = max(1.0, abs(fd), abs(an))
        err = abs(fd - an) / scale
        worst = max(worst, err)
        if err > rtol:
            raise AssertionError(f"{getattr(target, 'name', target)}: gradient of {t.name} disagrees with "
                                 f"finite differences: <vjp, v> = {an!r}, finite difference = {fd!r} "
                                 f"(relative error {err:.2e} > {rtol:.0e}) at sizes {sizes}")
    return worst


def _forward(call, inputs, target) -> dict:
    out = call(**inputs)
    if isinstance(out, dict):
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    outs = getattr(target, "outputs", None) or (target.output.name,)
    return {outs[0]: np.asarray(out, dtype=np.float64)}
