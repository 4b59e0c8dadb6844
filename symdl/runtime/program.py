"""ProgramKernel: runs a Program's formula kernels in dependency order.

`run_formulas` is the one forward runner: ProgramKernel and symdl.nn's FormulaOp both call it;
`kernel_for` is the process-wide kernel cache both draw from (layers with the same formula share
one Kernel and its per-shape plans).
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from ..autodiff import grad_name
from ..backends import get as get_backend
from ..loops.lower import fusable
from .kernel import Kernel


class ProgramKernel:
    """Calls return the single output (or a dict of outputs); `vjp` runs the gradient program."""

    def __init__(self, program, backend: str = "cpu", check_finite: bool = False, check: bool = True):
        self.program, self.check_finite, self.check = program, check_finite, check
        # each formula's Kernel checks its own module on first use (runtime.selfcheck)
        self.kernels = [kernel_for(f, backend, check_finite, check) for f in program.formulas]
        self.backend = get_backend(backend)
        self._grads: dict = {}
        self.systems = system_kernels(program, self.kernels, check)  # recurrences stepping together
        self._fused = None  # independent elementwise formulas (an optimizer step): one loop nest
        if self.backend.fuses and not check_finite and fusable(program.formulas) and not any(
                f.output_bound for f in program.formulas):
            from .fused import FusedKernel
            self._fused = FusedKernel(self.kernels, program.name, check)

    def __repr__(self) -> str:
        return f"ProgramKernel({self.program.name}, {len(self.kernels)} kernels)"

    def run(self, dims: dict | None = None, given: dict | None = None, **arrays) -> dict:
        """All tensors the program computes, by name (inputs included); `dims`: the lengths no
        input carries (Kernel's dims=); `given`: values of some outputs the caller already has
        (not computed again)."""
        names = set(self.program.input_names)
        if arrays.keys() != names:
            missing, extra = sorted(names - arrays.keys()), sorted(arrays.keys() - names)
            raise ValueError(f"program {self.program.name!r}: missing {missing}, unexpected {extra}; "
                             f"it takes {sorted(names)}")
        env = dict(arrays)
        if self._fused is not None and not given:
            env.update(self._fused.run(env))
            return env
        if not given:
            return run_formulas(self.program.formulas, self.kernels, env, dims=dims, systems=self.systems)
        kept = [(f, k) for f, k in zip(self.program.formulas, self.kernels, strict=True) if f.output.name not in given]
        env.update(given)
        return run_formulas([f for f, _ in kept], [k for _, k in kept], env, dims=dims, systems=self.systems)

    def __call__(self, dims: dict | None = None, **arrays):
        env = self.run(dims, **arrays)
        outs = self.program.outputs
        return env[outs[0]] if len(outs) == 1 else {o: env[o] for o in outs}

    def vjp(self, grad, wrt=None, dims: dict | None = None, given: dict | None = None, **arrays) -> dict:
        """{input name: gradient}; `grad` is the upstream gradient of the single output, or a dict
        {output name: gradient}; `wrt` limits the inputs differentiated; `given`: forward outputs
        the caller kept for these inputs ({name: array}), read instead of computed again."""
        return self.value_and_grad(grad, wrt=wrt, dims=dims, given=given, **arrays)[1]

    def value_and_grad(self, grad, wrt=None, dims: dict | None = None, given: dict | None = None,
                       **arrays) -> tuple:
        """(outputs, {input name: gradient}) from one run of the gradient program: the forward
        values come for free with the gradients (a training step needs both)."""
        wanted = tuple(t.name for t in self.program.inputs if not t.integer) if wrt is None else tuple(wrt)
        gk = self._grads.get(wanted)
        if gk is None:
            gk = self._grads[wanted] = ProgramKernel(self.program.vjp(wanted), self.backend,
                                                     self.check_finite, self.check)
        outs = self.program.outputs
        grads = grad if isinstance(grad, dict) else {outs[0]: grad}
        if set(grads) != set(outs):
            raise ValueError(f"program {self.program.name!r}: give the upstream gradient of each output "
                             f"{list(outs)}")
        feed = dict(arrays, **{grad_name(o): g for o, g in grads.items()})
        names = gk.program.input_names
        unknown = sorted(set(feed) - set(names) - {t.name for t in self.program.inputs})
        if unknown:
            raise ValueError(f"program {self.program.name!r}: unexpected inputs {unknown}")
        if given and set(given) - set(outs):
            raise ValueError(f"program {self.program.name!r}: given= takes outputs {list(outs)}, got "
                             f"{sorted(set(given) - set(outs))}")
        env = gk.run(dims, given, **{n: feed[n] for n in names if n in feed}, **{n: feed[n] for n in names
                                                                                     if n not in feed})
        values = env[outs[0]] if len(outs) == 1 else {o: env[o] for o in outs}
        # the gradient program's outputs are the wanted gradients, in order
        return values, {n: env[o] for n, o in zip(wanted, gk.program.outputs, strict=True)}


_KERNELS: dict = {}


def kernel_for(formula, backend="cpu", check_finite: bool = False, check: bool = True) -> Kernel:
    """One Kernel per distinct formula, backend and options in the process; numba's on-disk
    cache makes later processes start warm."""
    key = (formula.key(), backend if isinstance(backend, str) else backend.name, check_finite, check)
    k = _KERNELS.get(key)
    if k is None:  # the backend object is made only here: a hit costs one dict lookup
        k = _KERNELS[key] = Kernel(formula, backend, check_finite, check)
    return k


def system_kernels(program, kernels, check: bool = True) -> dict:
    """{each state: the SystemKernel of its system} for a Program's systems of recurrences."""
    from .system import SystemKernel
    by_output = {f.output.name: k for f, k in zip(program.formulas, kernels, strict=True)}
    out = {}
    for s in program.systems:
        sk = SystemKernel([by_output[o] for o in s.outputs], s, f"{program.name}.{'_'.join(s.outputs)}", check)
        out.update(dict.fromkeys(s.outputs, sk))
    return out


def run_formulas(formulas, kernels, env: dict, buffers: dict | None = None, scalars_to_host: bool = False,
                 dims: dict | None = None, systems: dict | None = None) -> dict:
    """Each formula's kernel in order, every output added to `env` (which holds the inputs).
    `buffers`: outputs reused by the next run with the same input shapes (callers copy what they
    keep); `scalars_to_host`: rank-0 results (a loss) come back as NumPy, even from a device;
    `dims`: lengths the caller gives (those no input carries, or those the runs that computed the
    values `env` holds already bound); `systems` (system_kernels): each system runs as one kernel
    where its first state not yet in `env` comes."""
    dims, dtype = {k: int(v) for k, v in (dims or {}).items()}, arrays_dtype(env)
    for n, (f, k) in enumerate(zip(formulas, kernels, strict=True)):
        name = f.output.name
        if name in env:
            continue  # a state its system wrote, or a forward value the caller kept
        if systems and name in systems:
            env.update(systems[name].run(env, dims))
            dims.update(systems[name].last_dims)
            continue
        args = {t.name: scalar_argument(env[t.name], t.rank) for t in f.inputs}
        if f.body is sp.S.Zero:  # a gradient no path reaches: zeros of the program's dtype
            env[name] = np.zeros(tuple(_dim(d, dims, k) for d in f.output.shape), dtype=dtype)
            continue
        if f.output_bound:  # lengths only the program knows (a gradient's broadcast axis)
            known = {str(d): dims[str(d)] for d in f.dims if str(d) in dims}
            if {s.name for d in f.output.shape for s in sp.sympify(d).free_symbols} - set(dims):
                # the rest from its inputs (a recurrence whose length the caller gave: T, with N from x)
                known = k.binder.bind({t.name: np.shape(args[t.name]) for t in f.inputs}, known, None)
                dims.update(known)
            out = np.empty(tuple(_dim(d, dims, k) for d in f.output.shape), dtype=arrays_dtype(args))
            env[name] = _as_program_dtype(k(out=out, dims=known, **args), f, dtype)
        elif not f.output.rank:
            value = k(**args)
            env[name] = k.backend.to_host(value) if scalars_to_host else _as_program_dtype(value, f, dtype)
        elif buffers is None:
            env[name] = _as_program_dtype(k(**args), f, dtype)
        else:
            key = (n, k.backend.name, dtype, tuple(np.shape(a) for a in args.values()))  # a dtype's own
            buf = buffers.get(key)
            env[name] = buffers[key] = k(**args) if buf is None else k(out=buf, **args)
        dims.update(k.last_dims)
    return env


def _dim(d, dims, k):
    missing = [s.name for s in d.free_symbols if s.name not in dims]
    if missing:
        raise ValueError(f"formula {k.formula.name!r}: the length {missing[0]} is not known from the "
                         f"program's earlier formulas")
    return int(d.xreplace({s: sp.Integer(dims[s.name]) for s in d.free_symbols}))


def arrays_dtype(args: dict) -> np.dtype:
    """The float dtype of the first float array among `args` (float64 when there is none)."""
    for v in args.values():  # NumPy arrays, or device arrays (numba's, or any __cuda_array_interface__)
        if (isinstance(v, np.ndarray) or hasattr(v, "copy_to_host") or hasattr(v, "__cuda_array_interface__")) \
                and np.dtype(v.dtype).kind == "f":
            return np.dtype(v.dtype)
    return np.dtype(np.float64)


def _as_program_dtype(value, formula, dtype):
    """A formula whose float inputs are all scalars (grad_L / B) computes in float64; its result
    takes the program's dtype, so that the gradients it is summed with do not mix dtypes."""
    if isinstance(value, np.ndarray) and value.dtype != dtype and value.dtype.kind == "f" \
            and not any(t.rank and not t.integer for t in formula.inputs):
        return value.astype(dtype)
    return value


def scalar_argument(value, rank: int):
    """A rank-0 result (a loss, a row statistic reduced to a number) feeds later kernels as a float."""
    if rank == 0 and hasattr(value, "copy_to_host"):  # a device array (cuda backend)
        value = value.copy_to_host()
    if rank == 0 and isinstance(value, np.ndarray):
        return value.reshape(()).item()
    return value
