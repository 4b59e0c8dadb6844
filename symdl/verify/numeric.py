"""Numeric verification: compiled forward and VJP against central finite differences (float64)."""
from __future__ import annotations

import numpy as np

from ..reference.inputs import default_sizes, random_inputs


class NumericResult(float):
    """What `numeric` found: the worst relative error (a float, as `numeric` always returned, but
    true even at 0.0: a failure raises instead), with `name`, `gradients` (the inputs checked),
    `errors` (each one's relative error), `sizes` and `rtol`; it prints as one line."""

    def __new__(cls, worst: float = 0.0, name: str = "", errors: dict | None = None,
                sizes: dict | None = None, rtol: float = 1e-6):
        self = super().__new__(cls, worst)
        self.name, self.errors, self.sizes, self.rtol = name, dict(errors or {}), dict(sizes or {}), rtol
        return self

    @property
    def gradients(self) -> tuple:
        return tuple(self.errors)

    def __bool__(self) -> bool:
        return True

    def __str__(self) -> str:
        n = len(self.errors)
        return (f"numeric: {n} gradient{'' if n == 1 else 's'} of {self.name!r} at {sizes_text(self.sizes)}, "
                f"worst relative error {float(self):.1e} (rtol {self.rtol:g})")

    __repr__ = __str__


def sizes_text(sizes: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sizes.items())


def numeric(target, sizes: dict | None = None, seed: int = 0, rtol: float = 1e-6, eps: float = 1e-6,
            backend: str = "cpu") -> NumericResult:
    """Check <VJP(g), v> against (f(x + eps v) - f(x - eps v)) / 2eps · g for each input, along a
    random direction v, with the compiled kernels in float64. Raises AssertionError beyond `rtol`
    (relative to the scale of the terms), and on any NaN or inf in either side (a gradient that
    evaluates to NaN is never "within tolerance"); returns the largest relative error seen, as a
    NumericResult: `numeric: 3 gradients of 'dense' at B=2, M=3, N=4, worst relative error 7.9e-11
    (rtol 1e-06)`.

    What it sees: the compiled gradient against the compiled forward pass, so wrong gradient
    mathematics and wrong gradient kernels alike. What it cannot see: a forward kernel that is
    itself wrong (both sides use it: `backends` checks it against the reference), and behaviour at
    kinks (relu at 0, ties of a max): the inputs are random and finite differences across a kink
    mean nothing; ties are checked by `backends`."""
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
    errors = {}
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
        err = abs(fd - an) / scale if np.isfinite(fd) and np.isfinite(an) else float("nan")
        errors[t.name] = err
        if not err <= rtol:  # NaN compares False: a NaN gradient fails
            raise AssertionError(f"{getattr(target, 'name', target)}: gradient of {t.name} disagrees with "
                                 f"finite differences: <vjp, v> = {an!r}, finite difference = {fd!r} "
                                 f"(relative error {err:.2e} > {rtol:.0e}) at sizes {sizes}")
    return NumericResult(max(errors.values(), default=0.0), str(getattr(target, "name", target)), errors,
                         {str(k): int(v) for k, v in sizes.items()}, rtol)


def _forward(call, inputs, target) -> dict:
    out = call(**inputs)
    if isinstance(out, dict):
        return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    outs = getattr(target, "outputs", None) or (target.output.name,)
    return {outs[0]: np.asarray(out, dtype=np.float64)}
