"""ChainKernel: a Program's formulas, each reading those before it, run as one generated module.

A model's softmax (max, exp, sum, divide), its loss (clip, cross-entropy) and their gradient
programs are chains of small kernels; a cold first step compiles each as a numba function. Chained
(loops/chain.py), their nests run one after another in one driver and compile as one function, so
a cold start compiles a few functions where it compiled a dozen. Each member formula's Kernel still
binds its dimensions and checks its gathers; the module is checked against the reference of the
formulas run in order before its first use (runtime.selfcheck.check_chain).
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from ..loops.chain import lower_chain
from . import trace
from .fused import GroupKernel
from .kernel import common_arguments
from .plan import CallPlan, stale
from .selfcheck import check_chain


def chain_kernel(kernels, name: str, check: bool = True) -> "ChainKernel | None":
    """The ChainKernel of member Kernels (in dependency order), or None where the formulas do not
    chain: fewer than two, not on a backend that fuses, a recurrence, a formula with a zero body,
    or programs loops/chain.py refuses."""
    kernels = list(kernels)
    if len(kernels) < 2 or not kernels[0].backend.fuses or any(
            k.formula.recurrence is not None or k.formula.body is sp.S.Zero
            or k.check_finite for k in kernels):
        return None
    program = lower_chain([k.program for k in kernels], name)
    return None if program is None else ChainKernel(kernels, program, check)


class ChainKernel(GroupKernel):
    """`run(env)` returns {output name: array} for every member formula's output, or None where
    the call is not the common one (inputs of one float dtype, the declared ranks) or the members
    bind a dimension to different lengths: the caller then runs the members one by one, whose
    checks word any error."""

    def __init__(self, kernels, program, check: bool = True):
        self.outputs = tuple(k.formula.output.name for k in kernels)
        super().__init__(kernels, program, "chain", check, internal=self.outputs)

    def __repr__(self) -> str:
        return f"ChainKernel({self.program.name}: {', '.join(self.outputs)})"

    def run(self, env: dict) -> dict | None:
        b = self.backend
        external = {s[0]: env.get(s[0]) for s in self._specs}
        fast = common_arguments(self._specs, external)
        if fast is None or not b.host_memory:
            return None
        args, dtype = dict(zip((s[0] for s in self._specs), fast[0])), fast[1]
        key = (dtype, tuple(np.shape(a) for a in fast[0]))
        plan = self._plans.get(key)
        if plan is None or stale(plan):
            plan = self._plans[key] = self._plan(args, dtype)
        if plan is False:
            return None
        if self._gathers:
            self._check_gathers(args, plan)
        outs = [b.empty(shape or (1,), dtype) for _, shape in plan.outputs]  # a scalar: one element
        names = [t.name for t in self.program.inputs]
        placed = [args[n] for n in names]
        if trace.RECORDING is not None:
            trace.note(plan.run, outs, [*placed, *plan.values], [*names, *map(str, self.program.dims)],
                       plan.parallel, self._gathers, self.program.name)
        b.launch(plan.run, outs[0], [*outs[1:], *placed], plan.values, plan.parallel)
        return {n: o.reshape(shape) if not shape else o for (n, shape), o in zip(plan.outputs, outs, strict=True)}

    @property
    def _gathers(self) -> bool:
        return any(k._gathers for k in self.kernels)

    def _plan(self, args: dict, dtype):
        """The CallPlan, or False where the members disagree on a length or one refuses its shapes."""
        try:
            dims, shapes = self.bind({n: np.shape(a) for n, a in args.items()})
        except ValueError:
            return False
        return self._call_plan(dims, [(n, shapes[n]) for n in self.outputs], dtype, args, check_chain)

    def bind(self, shapes: dict) -> tuple[dict, dict]:
        """(the dimensions, every tensor's shape): each member binds its inputs' shapes (the outputs
        of the members before it included) in order, given the lengths those before it bound (a
        gradient's broadcast axis has no input of its own); ValueError where two bind a length apart."""
        dims, shapes = {}, dict(shapes)
        for k in self.kernels:
            known = {str(d): dims[str(d)] for d in k.formula.dims if str(d) in dims}
            bound = k.binder.bind({t.name: shapes[t.name] for t in k.formula.inputs}, known, None)
            for d, v in bound.items():
                if dims.setdefault(d, v) != v:
                    raise ValueError(f"chain {self.program.name!r}: dimension {d} is {dims[d]} for one "
                                     f"formula and {v} for {k.formula.name!r}")
            shapes[k.formula.output.name] = tuple(fn(**bound) for fn, _ in k.binder.out_shape)
        return dims, shapes

    def _check_gathers(self, args: dict, plan: CallPlan) -> None:
        """Each member's gather check before anything runs: its integer tensors are inputs of the
        chain (outputs are floats); a member's output it reads stands in by its shape alone."""
        shapes = dict(plan.outputs)
        for k in self.kernels:
            if k._gathers:
                arrays = {t.name: args[t.name] if t.name in args else np.broadcast_to(np.float32(0), shapes[t.name])
                          for t in k.formula.inputs}
                k.binder.check_gathers(arrays, plan.bound)
