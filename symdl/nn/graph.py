"""Running a Formula or Program forward and backward, one compiled kernel per formula.

The forward pass keeps every intermediate tensor (the layer's saved activations); the backward
pass walks the formulas in reverse, calling each kernel's `vjp` for the inputs that lead to a
wanted gradient and summing contributions with a compiled add kernel. A Sequential model chains
these per layer on its tape, so every number of a training step comes from symdl kernels.
"""
from __future__ import annotations

import numpy as np

from symdl import Formula, Program
from symdl.runtime import Kernel

from .formulas import elementwise

_KERNELS: dict[str, Kernel] = {}


def kernel_for(formula: Formula) -> Kernel:
    """One Kernel per distinct formula in the process: layers with the same formula share it
    (and its per-shape plans); numba's on-disk cache makes later processes start warm."""
    key = formula.key()
    k = _KERNELS.get(key)
    if k is None:
        k = _KERNELS[key] = Kernel(formula)
    return k


def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a + b by the compiled vec_add kernel (gradient accumulation)."""
    k = kernel_for(_ADD)
    return k(a=a.reshape(-1), b=b.reshape(-1)).reshape(a.shape)


def multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b elementwise by the compiled vec_mul kernel (dropout masks)."""
    k = kernel_for(_MUL)
    return k(a=a.reshape(-1), b=b.reshape(-1)).reshape(a.shape)


_ADD, _MUL = elementwise("add"), elementwise("mul")


class FormulaOp:
    """A Formula or Program made callable forward (`forward`) and backward (`backward`)."""

    def __init__(self, formula_or_program: Formula | Program, reuse_buffers: bool = True):
        if isinstance(formula_or_program, Formula):
            self.formulas = [formula_or_program]
            self.outputs = (formula_or_program.output.name,)
            self.inputs = formula_or_program.inputs
        elif isinstance(formula_or_program, Program):
            self.formulas = list(formula_or_program.formulas)
            self.outputs = formula_or_program.outputs
            self.inputs = formula_or_program.inputs
        else:
            raise TypeError(f"expected a symdl Formula or Program, got {type(formula_or_program).__name__}")
        self.source = formula_or_program
        self.kernels = [kernel_for(f) for f in self.formulas]
        self.reuse_buffers = reuse_buffers
        self._buffers: dict = {}  # (formula position, input shapes) -> the output array to reuse

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def forward(self, **inputs) -> dict:
        """Every tensor by name (inputs included). Outputs live in buffers reused by the next call
        with the same shapes: callers copy what they keep beyond the next call."""
        env = dict(inputs)
        for n, (f, k) in enumerate(zip(self.formulas, self.kernels, strict=True)):
            args = {t.name: _scalar(env[t.name], t.rank) for t in f.inputs}
            if not f.output.rank or not self.reuse_buffers:
                env[f.output.name] = k(**args)
                continue
            key = (n, tuple(np.shape(a) for a in args.values()))
            buf = self._buffers.get(key)
            env[f.output.name] = self._buffers[key] = k(**args) if buf is None else k(out=buf, **args)
        return env

    def backward(self, env: dict, grads: dict, wrt) -> dict:
        """{name: gradient} for the tensors in `wrt`, given the forward `env` and the upstream
        gradients `grads` {output name: array}; an input no path reaches gets zeros."""
        wrt = list(wrt)
        live = set(wrt)  # tensors whose gradient is needed: wrt and everything computed from them
        for f in self.formulas:
            if any(t.name in live for t in f.inputs):
                live.add(f.output.name)
        acc = dict(grads)
        for f, k in zip(reversed(self.formulas), reversed(self.kernels), strict=True):
            g = acc.pop(f.output.name, None)
            want = [t.name for t in f.inputs if t.name in live and not t.integer]
            if g is None or not want:
                continue
            args = {t.name: _scalar(env[t.name], t.rank) for t in f.inputs}
            dtype = _float_dtype(args)
            g = np.asarray(g, dtype=dtype) if np.ndim(g) == 0 else g
            for name, gx in k.vjp(g, wrt=want, **args).items():
                acc[name] = add(acc[name], gx) if name in acc else gx
        return {n: acc[n] if n in acc else np.zeros(np.shape(env[n]), dtype=_float_dtype(env))
                for n in wrt}


def _scalar(value, rank: int):
    """A rank-0 result (a loss, a row statistic reduced to a number) feeds kernels as a float."""
    if rank == 0 and isinstance(value, np.ndarray):
        return value.reshape(()).item()
    return value


def _float_dtype(arrays: dict) -> np.dtype:
    for v in arrays.values():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f":
            return v.dtype
    return np.dtype(np.float64)
