"""Program: a DAG of formulas whose outputs feed later formulas (softmax = exp, row sum, divide)."""
from __future__ import annotations

import sympy as sp

from ..errors import FormulaError
from . import verbs
from .formula import Formula, Tensor, display_math
from .names import check_distinct
from .systems import schedule
from .value import Frozen


class Program(Frozen):
    """Formulas in dependency order. Inputs are the tensors no formula produces; outputs default
    to the tensors no formula consumes. An immutable value, like Formula. Formulas that read each
    other's earlier steps (c reads h[t-1], h reads c[t]: an LSTM) form a `System` (systems.py),
    listed in `systems` and run as one kernel.

        >>> prog = symdl.Program([exp_f, sum_f, div_f], name="softmax")
        >>> prog.compile()(z=Z)            # -> the output array
    """

    def __init__(self, formulas, name: str = "program", outputs=None):
        formulas, systems = schedule(name, list(formulas))
        produced = {f.output.name: f for f in formulas}
        system_of = {o: s for s in systems for o in s.outputs}  # a system's own reads leave outputs be
        consumed = {t for f in formulas for t in f.input_names
                    if system_of.get(t) is None or system_of.get(t) is not system_of.get(f.output.name)}
        outputs = tuple(outputs) if outputs else tuple(
            f.output.name for f in formulas if f.output.name not in consumed)
        for o in outputs:
            if o not in produced:
                raise FormulaError(name, f"output {o!r} is not produced by any formula of the program")
        inputs: dict[str, Tensor] = {}
        for f in formulas:
            for t in f.inputs:
                if t.name not in produced:
                    inputs.setdefault(t.name, t)
        _check_names(name, formulas, tuple(inputs.values()), outputs)
        domains: dict = {}
        for f in formulas:
            for t, dom in f.domains.items():
                if t in inputs:
                    domains.setdefault(t, dom)
        sizes: dict = {}
        for f in formulas:
            sizes.update(f.sizes)
        self._assign(dict(
            name=name, formulas=tuple(formulas), systems=systems, outputs=outputs, inputs=tuple(inputs.values()), domains=domains,
            sizes=sizes, dims=tuple(sorted({d for f in formulas for d in f.dims}, key=str)),
            scalars=tuple(sp.Symbol(t.name) for t in inputs.values() if t.rank == 0)))

    @property
    def input_names(self) -> tuple:
        return tuple(t.name for t in self.inputs)

    @property
    def output(self) -> Tensor:
        """The single output's tensor (programs with several outputs have no single `output`)."""
        if len(self.outputs) != 1:
            raise ValueError(f"program {self.name!r} has outputs {self.outputs}, not one")
        return self.producer(self.outputs[0]).output

    def producer(self, name: str) -> Formula:
        for f in self.formulas:
            if f.output.name == name:
                return f
        raise KeyError(name)

    # -- conveniences: the verbs of symdl/api.py --------------------------------------------------

    def vjp(self, wrt=None) -> "Program":
        """The gradient program: forward formulas, then reverse-mode gradient formulas; its outputs
        are grad_<input> for each input, its extra input grad_<output>. `symdl.vjp(self, wrt)`."""
        return verbs.call("vjp", self, wrt)

    def compile(self, backend: str = "cpu", **options):
        """A callable ProgramKernel. `symdl.compile(self, backend, **options)`."""
        return verbs.call("compile", self, backend=backend, **options)

    def stabilize(self):
        """The program with every stability rewrite applied, or itself. `symdl.stabilize(self)`."""
        return verbs.call("stabilize", self)

    def verify(self, **options):
        """symbolic, numeric and backend checks in order (symdl.verify.all). `symdl.api.verify(self)`."""
        return verbs.call("verify", self, **options)

    @property
    def stability(self):
        """What symdl.stabilize did to make this program (a passes.Stabilized), or None."""
        return verbs.call("stability", self)

    def key(self) -> str:
        """A stable text that identifies the program: its name, formulas (their keys) and outputs."""
        return "|".join([repr(self.name), *(f.key() for f in self.formulas), ",".join(self.outputs)])

    def __repr__(self) -> str:
        return f"Program({self.name}:\n" + "\n".join(f"  {f!r}" for f in self.formulas) + ")"

    def pretty(self) -> str:
        return "\n".join(f.pretty() for f in self.formulas)

    def latex(self) -> str:
        return " \\\\\n".join(f.latex() for f in self.formulas)

    def _repr_latex_(self) -> str | None:
        """A notebook shows the formulas as display math, one line each."""
        return display_math([f.latex() for f in self.formulas])


def _check_names(name, formulas, inputs, outputs):
    """Each formula checks its own names; across formulas a tensor keeps one rank and no name is
    both a tensor and a dimension (a fused kernel takes them side by side)."""
    ranks: dict = {}
    for f in formulas:
        for t in (*f.inputs, f.output):
            if ranks.setdefault(t.name, (t.rank, f.name))[0] != t.rank:
                raise FormulaError(name, f"tensor {t.name!r} has rank {ranks[t.name][0]} in formula "
                                         f"{ranks[t.name][1]!r} and rank {t.rank} in formula {f.name!r}")
    check_distinct(name, {"tensor": list(ranks), "dimension": sorted({str(d) for f in formulas
                                                                      for d in f.dims})})
    for t in inputs:
        if t.name.startswith("grad_") and t.name[5:] in outputs:  # autodiff.grad_name
            raise FormulaError(name, f"input name {t.name!r} is the name Program.vjp gives the gradient "
                                     f"of the output {t.name[5:]!r}; rename it")
