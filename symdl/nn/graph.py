"""Running a Formula or Program forward and backward, one compiled kernel per formula.

The forward pass keeps every intermediate tensor (the layer's saved activations); the backward
pass walks the formulas in reverse, calling each kernel's `vjp` for the inputs that lead to a
wanted gradient and summing contributions with a compiled add kernel. On the cpu a Program's
formulas run as one generated module instead where they chain (runtime/chain.py): the forward
formulas, and backward its gradient program's formulas on the kept forward values (a softmax is
then one numba function each way, not four and eight: fewer to compile in a cold first step). A Sequential model chains
these per layer on its tape, so every number of a training step comes from symdl kernels.

Device arrays in (a model on device="cuda", symdl/nn/device.py) select each formula's cuda Kernel:
host arrays among the inputs (labels) are copied in once, every call then passes device arrays
and gets device arrays back, so nothing returns to the host between kernels. Rank-0 results (a
loss) are the exception: they come back as NumPy scalars, the small copy a training step reports.
"""
from __future__ import annotations

import numpy as np

from symdl.declare import Formula, Program
from symdl.errors import FormulaError
from symdl.formulas.tensor_ops import flat_elementwise as elementwise
from symdl.autodiff import grad_name
from symdl.runtime.chain import chain_kernel
from symdl.runtime.program import (ProgramKernel, arrays_dtype, kernel_for, run_formulas, scalar_argument,
                                   system_kernels)

from .device import is_device_array, to_device, zeros

def _backend(*arrays) -> str:
    return "cuda" if any(is_device_array(a) for a in arrays) else "cpu"


def add(a, b):
    """a + b by the compiled vec_add kernel (gradient accumulation); on the device for device arrays."""
    return _elementwise(_ADD, a, b)


def multiply(a, b):
    """a * b elementwise by the compiled vec_mul kernel (dropout masks); on the device for device arrays."""
    return _elementwise(_MUL, a, b)


def _elementwise(formula, a, b):
    backend = _backend(a, b)
    if backend == "cuda":
        a, b = to_device(a), to_device(b)
    return kernel_for(formula, backend)(a=a.reshape(-1), b=b.reshape(-1)).reshape(a.shape)


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
        self._cuda_kernels: list | None = None  # built on the first call with device arrays
        self._systems: dict = {}  # on device -> system_kernels (a Program with systems of recurrences)
        self._gradients: dict = {}  # (wrt, on device) -> the gradient ProgramKernel (systems only)
        self.reuse_buffers = reuse_buffers
        self._buffers: dict = {}  # (formula position, on device, input shapes) -> the output to reuse
        self._chains: dict = {}  # None (forward) or wrt -> (gradient formulas, their ChainKernel or None)

    def kernels_on(self, on_device: bool) -> list:
        """The formulas' kernels for host (cpu) or device (cuda) arrays."""
        if not on_device:
            return self.kernels
        if self._cuda_kernels is None:
            self._cuda_kernels = [kernel_for(f, "cuda") for f in self.formulas]
        return self._cuda_kernels

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def forward(self, **inputs) -> dict:
        """Every tensor by name (inputs included). Outputs live in buffers reused by the next call
        with the same shapes: callers copy what they keep beyond the next call. With any device
        array among the inputs, the others are copied in and every kernel runs on the device."""
        env = dict(inputs)
        on_device = any(is_device_array(a) for a in env.values())
        if not on_device and not self.systems_on(False):  # a Program's formulas as one module
            chain = self._chain(None, self.formulas)
            outs = None if chain is None else chain.run(env)
            if outs is not None:
                env.update(outs)
                return env
        if on_device:  # host arrays (labels): one copy in, so that every kernel sees device arrays
            env = {n: to_device(a) if isinstance(a, np.ndarray) and a.ndim else a for n, a in env.items()}
        return run_formulas(self.formulas, self.kernels_on(on_device), env,
                            self._buffers if self.reuse_buffers else None, scalars_to_host=True,
                            systems=self.systems_on(on_device))

    def systems_on(self, on_device: bool) -> dict:
        """{state: its SystemKernel} for a Program with systems of recurrences ({} otherwise)."""
        if not getattr(self.source, "systems", ()):
            return {}
        if on_device not in self._systems:
            self._systems[on_device] = system_kernels(self.source, self.kernels_on(on_device))
        return self._systems[on_device]

    def _system_backward(self, env: dict, grads: dict, wrt: list, on_device: bool) -> dict:
        """A system's gradient is the adjoint system, not per-formula VJPs: the gradient program's
        kernels after the forward's, on the forward values kept in `env`."""
        key = (tuple(wrt), on_device)
        if key not in self._gradients:
            self._gradients[key] = ProgramKernel(self.source.vjp(wrt), "cuda" if on_device else "cpu")
        gk = self._gradients[key]
        feed = dict(env, **{grad_name(o): g for o, g in grads.items()})
        missing = [o for o in self.outputs if grad_name(o) not in feed]
        for o in missing:  # an output no loss reads: a zero upstream gradient
            feed[grad_name(o)] = zeros(np.shape(env[o]), arrays_dtype(env), on_device)
        dims = {}
        for k in [*self.kernels_on(on_device), *self.systems_on(on_device).values()]:
            dims.update(k.last_dims)  # what the forward run bound
        out = run_formulas(gk.program.formulas, gk.kernels, feed, systems=gk.systems, dims=dims)
        return {n: out[o] for n, o in zip(wrt, gk.program.outputs, strict=True)}

    def backward(self, env: dict, grads: dict, wrt) -> dict:
        """{name: gradient} for the tensors in `wrt`, given the forward `env` and the upstream
        gradients `grads` {output name: array}; an input no path reaches gets zeros."""
        wrt = list(wrt)
        live = set(wrt)  # tensors whose gradient is needed: wrt and everything computed from them
        for f in self.formulas:
            if any(t.name in live for t in f.inputs):
                live.add(f.output.name)
        acc = dict(grads)
        on_device = any(is_device_array(a) for a in env.values())
        if getattr(self.source, "systems", ()):
            return self._system_backward(env, grads, wrt, on_device)
        if not on_device and len(self.formulas) > 1:
            chained = self._chain_backward(env, grads, wrt)
            if chained is not None:
                return chained
        kernels = self.kernels_on(on_device)
        for f, k in zip(reversed(self.formulas), reversed(kernels), strict=True):
            g = acc.pop(f.output.name, None)
            want = [t.name for t in f.inputs if t.name in live and not t.integer]
            if g is None or not want:
                continue
            args = {t.name: scalar_argument(env[t.name], t.rank) for t in f.inputs}
            dtype = arrays_dtype(args)
            g = np.asarray(g, dtype=dtype) if np.ndim(g) == 0 else g
            if on_device and isinstance(g, np.ndarray) and g.ndim:
                g = to_device(g)
            kept = env.get(f.output.name) if f.recurrence is not None else None  # its states: not run again
            for name, gx in k.vjp(g, wrt=want, forward=kept, **args).items():
                acc[name] = add(acc[name], gx) if name in acc else gx
        return {n: acc[n] if n in acc else zeros(np.shape(env[n]), arrays_dtype(env), on_device)
                for n in wrt}

    def value_and_grad(self, inputs: dict, grads: dict, wrt) -> tuple[dict, dict]:
        """(every tensor by name, {name: gradient}): `forward` then `backward`, for a caller that
        has the upstream gradients before the forward pass runs (a loss: d L / d L = 1). On the cpu
        a Program's whole gradient program runs as one generated module where it chains."""
        if len(self.formulas) > 1 and set(grads) == set(self.outputs) and \
                not any(is_device_array(a) for a in inputs.values()):
            env = dict(inputs)
            got = self._chain_backward(env, grads, list(wrt), whole=True)
            if got is not None:
                return env, got
        env = self.forward(**inputs)
        return env, self.backward(env, grads, wrt)

    def _chain(self, key, formulas, suffix: str = ""):
        """The ChainKernel of `formulas` (the forward's, or a gradient program's), made once per key;
        None where they do not chain (runtime/chain.py)."""
        if key not in self._chains:
            name = getattr(self.source, "name", "chain") + suffix
            self._chains[key] = chain_kernel([kernel_for(f) for f in formulas], name)
        return self._chains[key]

    def gradient_chain(self, wrt, whole: bool = False):
        """The ChainKernel of the Program's gradient program for `wrt` (with its forward formulas:
        `whole`), made once; None where it does not chain."""
        key = ("vjp", tuple(wrt), whole)
        if key not in self._chains:
            try:
                program = self.source.vjp(list(wrt))
            except (FormulaError, ValueError, KeyError, TypeError):  # the formula by formula way words it
                self._chains[key] = None
                return None
            done = set(self.input_names) | (set() if whole else {f.output.name for f in self.formulas})
            members = [f for f in program.formulas if f.output.name not in done]
            self._chains[("outputs", key)] = program.outputs
            self._chain(key, members, ".value_and_grad" if whole else ".vjp")
        return self._chains[key]

    def _chain_backward(self, env: dict, grads: dict, wrt: list, whole: bool = False) -> dict | None:
        """{name: gradient} from the Program's gradient program run as one ChainKernel: its gradient
        formulas on the forward values in `env`, or (`whole`) its forward formulas too, adding the
        forward's tensors to `env`; None where it does not chain or run."""
        chain = self.gradient_chain(wrt, whole)
        if chain is None:
            return None
        key = ("vjp", tuple(wrt), whole)
        feed = dict(env)
        for o in self.outputs:  # an output no loss reads: a zero upstream gradient
            g = grads.get(o)
            if g is None:
                g = zeros(np.shape(env[o]), arrays_dtype(env), False)
            feed[grad_name(o)] = float(g) if np.ndim(g) == 0 else g  # a scalar's goes by value
        out = chain.run(feed)
        if out is None:
            return None
        if whole:
            env.update((f.output.name, out[f.output.name]) for f in self.formulas)
        return {n: out[o] for n, o in zip(wrt, self._chains[("outputs", key)], strict=True)}
