"""SystemKernel: a system of recurrences (declare/systems.py) run as one generated function.

The step loop runs once for all the system's states (loops.lower_system): an LSTM's c and h are
written step by step in one kernel, each step reading the states the steps before it wrote.
Each member formula's own Kernel still checks the arguments and binds the dimensions; the module
is checked against the NumPy reference of the whole system (reference.evaluate_system) before
its first use.
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from ..loops.lower import lower_system
from . import trace
from .fused import GroupKernel
from .kernel import common_arguments
from .plan import CallPlan, stale
from .selfcheck import check_system


class SystemKernel(GroupKernel):
    """`run(env)` returns {output name: array} for every state of the system; `kernels` are the
    member formulas' Kernels (in step order), `system` the declare.System."""

    def __init__(self, kernels, system, name: str, check: bool = True):
        kernels = list(kernels)
        self.system = system
        self.outputs = tuple(k.formula.output.name for k in kernels)
        program = lower_system([k.formula for k in kernels], name, system.step, system.direction)
        super().__init__(kernels, program, "system", check, internal=self.outputs)
        self.last_dims: dict = {}

    def __repr__(self) -> str:
        return f"SystemKernel({self.program.name}: {', '.join(self.outputs)})"

    def run(self, env: dict, dims: dict | None = None) -> dict:
        """{state: array} from the inputs in `env`; `dims`: lengths no input carries."""
        b = self.backend
        external = {s[0]: env[s[0]] for s in self._specs}
        stand, native = b.split(external, lambda name: False)
        fast = common_arguments(self._specs, stand)
        args, dtype = (dict(zip((s[0] for s in self._specs), fast[0])), fast[1]) if fast is not None \
            else self._checked(stand)
        given = {d: int(v) for d, v in (dims or {}).items() if d in {str(s) for s in self.program.dims}}
        key = (dtype, tuple(np.shape(args[s[0]]) for s in self._specs), tuple(sorted(given.items())))
        plan = self._plans.get(key)
        if plan is None or stale(plan):
            plan = self._plans[key] = self._plan(args, dtype, given)
        self.last_dims = plan.bound
        outs = [b.empty(shape, dtype) for _, shape in plan.outputs]
        names = [t.name for t in self.program.inputs]
        placed = b.place(names, [args[n] for n in names], native)
        if trace.RECORDING is not None and b.host_memory:
            trace.note(plan.run, outs, [*placed, *plan.values], [*names, *map(str, self.program.dims)],
                       plan.parallel, any(k._gathers for k in self.kernels), self.program.name)
        b.launch(plan.run, outs[0], [*outs[1:], *placed], plan.values, plan.parallel)
        keep = bool(native)
        return {n: b.result(o, shape, keep) for (n, shape), o in zip(plan.outputs, outs, strict=True)}

    def _plan(self, args: dict, dtype, given: dict) -> CallPlan:
        dims = self.bind({n: np.shape(a) for n, a in args.items()}, given)
        outs = tuple((k.formula.output.name, _shape(k.formula.output.shape, dims)) for k in self.kernels)
        return self._call_plan(dims, outs, dtype, args, check_system)

    def bind(self, shapes: dict, given: dict | None = None) -> dict:
        """The dimensions, from the inputs' shapes (and `given`, lengths no input carries): each
        state's shape follows from the lengths its formula binds, and every member binds (and
        checks) with the others' states in place."""
        dims: dict = dict(given or {})
        for k in self.kernels:  # lone lengths of the inputs first: enough for the states' shapes
            for t, a, d in k.binder.bare:
                if t in shapes:
                    dims.setdefault(d, shapes[t][a])
        states = {k.formula.output.name: k.formula.output.shape for k in self.kernels}
        for k in self.kernels:
            full = {t.name: shapes[t.name] if t.name in shapes else _shape(states[t.name], dims)
                    for t in k.formula.inputs if t.rank}
            full.update({t.name: () for t in k.formula.inputs if not t.rank})
            for d, v in k.binder.bind(full, dims, None).items():
                if dims.setdefault(d, v) != v:
                    raise ValueError(f"system {self.program.name!r}: dimension {d} is {dims[d]} for one "
                                     f"formula and {v} for {k.formula.name!r}")
        return dims

    def _checked(self, env: dict):
        """Each member formula's own checks, in its words (the states it reads left out)."""
        args, dtype = {}, None
        for k in self.kernels:
            mine = {t.name: env[t.name] for t in k.formula.inputs if t.name not in self.outputs}
            floats = [a.dtype for a in mine.values() if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
            for t in k.formula.inputs:
                if t.name in self.outputs:  # a state the system writes: a stand-in of the right rank
                    mine[t.name] = np.zeros((1,) * t.rank, dtype=floats[0] if floats else np.float64)
            values, dt = k._arguments(mine, None)
            if dtype is not None and dt != dtype:
                raise ValueError(f"system {self.program.name!r}: inputs mix float dtypes {dtype} and {dt}")
            dtype = dt
            args.update((n, v) for n, v in zip(k._order, values, strict=True) if n not in self.outputs)
        return args, dtype


def _shape(shape, dims) -> tuple:
    missing = sorted({s.name for d in shape for s in sp.sympify(d).free_symbols} - set(dims))
    if missing:
        raise ValueError(f"dimension {missing[0]} of a system's state is not the length of any input axis")
    return tuple(int(sp.sympify(d).xreplace({s: dims[s.name] for s in sp.sympify(d).free_symbols}))
                 for d in shape)
