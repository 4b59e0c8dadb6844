"""Every catalog formula compiled for cuda agrees with symdl.reference (every formula of the entry
and of its gradient, float64) and with the cpu kernel (the entry's public calls, forward and vjp,
float32), at the verifier's small sizes. Each dtype is checked against one peer: the simulator
runs every GPU thread in Python, and this file must stay at about a minute."""
from __future__ import annotations

import numpy as np
import pytest

import symdl
from symdl import formulas
from symdl.reference.inputs import default_sizes, random_inputs

TOL = {np.float64: 1e-9, np.float32: 2e-4}


def _close(got, want, dtype, what):
    got = got.copy_to_host() if hasattr(got, "copy_to_host") else np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - want))) / scale if want.size else 0.0
    assert err <= TOL[dtype], f"{what}: cuda differs from cpu by {err:.2e} (relative, {np.dtype(dtype).name})"


@pytest.mark.parametrize("name", formulas.names())
def test_catalog(name):
    target = formulas.get(name)
    # NumPy reference vs cuda kernel, every formula of the entry and of its gradient
    symdl.verify.backends(target, backend="cuda", dtypes=(np.float64,))
    # the public calls (Kernel or ProgramKernel, forward and vjp) give the cpu backend's results
    sizes = default_sizes(target)
    dims = {str(k): int(v) for k, v in sizes.items()} if hasattr(target, "indices") else None
    extra = {"dims": dims} if dims else {}
    cpu, gpu = target.compile(), target.compile(backend="cuda")
    for dtype in (np.float32,):
        rng = np.random.default_rng(1)
        inputs = random_inputs(target, sizes, rng, dtype)
        want = cpu(**extra, **inputs)
        got = gpu(**extra, **inputs)
        outs = want if isinstance(want, dict) else {"out": want}
        gots = got if isinstance(got, dict) else {"out": got}
        grads = {}
        for o, w in outs.items():
            _close(gots[o], w, dtype, f"{name} output {o}")
            grads[o] = rng.standard_normal(np.shape(w)).astype(dtype)
        grad = grads if isinstance(want, dict) else grads["out"]
        gw = cpu.vjp(grad, **extra, **inputs)
        gg = gpu.vjp(grad, **extra, **inputs)
        assert gg.keys() == gw.keys()
        for k in gw:
            _close(gg[k], gw[k], dtype, f"{name} gradient {k}")
