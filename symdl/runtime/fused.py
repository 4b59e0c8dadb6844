"""FusedKernel: a Program of independent elementwise formulas run as one loop nest.

An optimizer step (Adam: m_new, v_new, w_new from w, g, m, v) is three formulas over one index; as
three kernels it reads g three times and recomputes the new moments for the weight. Fused, each
element is read once and every output written in the same iteration (loops.lower_fused).
"""
from __future__ import annotations

import numpy as np

from ..version import __version__
from ..backends.base import parallel_for
from ..debug import show
from ..loops.ir import check as check_ir
from ..loops.ir import format_ir
from ..loops.lower import lower_fused
from .cache import load_module
from . import trace
from .kernel import common_arguments
from .plan import CallPlan, stale, waiting
from .kept import printed
from .selfcheck import check_fused


class GroupKernel:
    """Several formulas' Kernels (argument checks, dimension binding) run as one generated module
    from the LoopProgram `program`; the inputs are the members' inputs less `internal` (tensors the
    group writes itself). FusedKernel and runtime/system.py's SystemKernel are the two kinds."""

    def __init__(self, kernels, program, what: str, check: bool = True, internal=()):
        self.kernels, self.check = list(kernels), check
        self.backend = self.kernels[0].backend
        specs = {spec[0]: spec for k in self.kernels for spec in k._specs  # one name, one declaration
                 if spec[0] not in internal}
        self._specs = tuple(specs.values())
        self.program = program
        check_ir(program)
        show(f"{what} loop IR", lambda: format_ir(program))
        self._modules: dict = {}
        self._plans: dict = {}

    def source(self, dtype="float32") -> str:
        return printed(self.backend, self.program, np.dtype(dtype).name, __version__)

    def _call_plan(self, dims: dict, outs, dtype, args: dict, check, program=None) -> CallPlan:
        """The CallPlan at the bound `dims`: the flavour from `program`'s counted work (the group's
        own by default), the module for `dtype`, checked once by `check` where asked."""
        b = self.backend
        module = self._module(dtype)
        parallel = parallel_for(b, program or self.program, dims, module)
        if self.check:
            check(self, module, dtype, b.flavour(parallel), args)
        values = tuple(dims[str(d)] for d in self.program.dims)
        return CallPlan(dims, tuple(outs), values, parallel, module.run, waiting(module, parallel))

    def _module(self, dtype):
        if dtype not in self._modules:
            self._modules[dtype] = load_module(self.source(dtype))
        return self._modules[dtype]


class FusedKernel(GroupKernel):
    """Runs the formulas of `kernels` (their Kernels, on a backend that fuses) as one generated
    function; `run(env)` returns {output name: array}. With `check` (the default) the fused
    module is run against each formula's NumPy reference before its first use."""

    def __init__(self, kernels, name: str, check: bool = True):
        kernels = list(kernels)
        super().__init__(kernels, lower_fused([k.formula for k in kernels], name), "fused", check)

    def run(self, env: dict) -> dict:
        b = self.backend
        stand, native = b.split({s[0]: env[s[0]] for s in self._specs}, lambda name: False)
        fast = common_arguments(self._specs, stand)  # the common call: every input checked once
        if fast is not None:
            args, dtype = dict(zip((s[0] for s in self._specs), fast[0])), fast[1]
        else:
            args, dtype = self._checked(stand)
        shapes = tuple(np.shape(args[t.name]) for t in self.program.inputs)
        plan = self._plans.get((dtype, shapes))
        if plan is None or stale(plan):
            plan = self._plans[(dtype, shapes)] = self._plan(args, dtype)
        outs = [b.empty(shape, dtype) for _, shape in plan.outputs]
        names = [t.name for t in self.program.inputs]
        placed = b.place(names, [args[n] for n in names], native)
        if trace.RECORDING is not None and b.host_memory:
            trace.note(plan.run, outs, [*placed, *plan.values], [*names, *map(str, self.program.dims)],
                       plan.parallel, False, self.program.name)
        b.launch(plan.run, outs[0], [*outs[1:], *placed], plan.values, plan.parallel)
        keep = bool(native)  # device inputs: device outputs (as a Kernel's call)
        return {n: b.result(o, shape, keep) for (n, shape), o in zip(plan.outputs, outs, strict=True)}

    def _plan(self, args: dict, dtype) -> CallPlan:
        dims, outs = {}, []
        for k in self.kernels:
            bound = k.binder.bind({t.name: np.shape(args[t.name]) for t in k.formula.inputs}, None, None)
            clash = [d for d in bound if d in dims and dims[d] != bound[d]]
            if clash:
                raise ValueError(f"program {self.program.name!r}: dimension {clash[0]} is "
                                 f"{dims[clash[0]]} for one formula and {bound[clash[0]]} for "
                                 f"{k.formula.name!r}")
            dims.update(bound)
            outs.append((k.formula.output.name, tuple(fn(**bound) for fn, _ in k.binder.out_shape)))
        return self._call_plan(dims, outs, dtype, args, check_fused, self.kernels[0].program)

    def _checked(self, env: dict):
        """Each formula's own checks, in its words."""
        args, dtype = {}, None
        for k in self.kernels:
            values, dt = k._arguments({t.name: env[t.name] for t in k.formula.inputs}, None)
            if dtype is not None and dt != dtype:
                raise ValueError(f"program {self.program.name!r}: inputs mix float dtypes {dtype} and {dt}")
            dtype = dt
            args.update(zip(k._order, values, strict=True))
        return args, dtype
