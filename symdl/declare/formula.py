"""Formula: one equation `out[i, j] = rhs` in SymPy index notation, validated and made canonical.

    >>> import sympy as sp, symdl
    >>> B, N = sp.symbols("B N", integer=True, positive=True)
    >>> i, k = sp.Idx("i", B), sp.Idx("k", N)
    >>> x, s = sp.IndexedBase("x"), sp.IndexedBase("s")
    >>> symdl.Formula(sp.Eq(s[i], sp.Sum(x[i, k] ** 2, k)), name="sumsq").inputs
    (Tensor(name='x', shape=(B, N), integer=False),)

A Formula is an immutable value: canonical.py builds its fields by named steps (canonical form,
shapes, binding rules, domains) and nothing changes them after. It knows no transformation: the
verbs (symdl.vjp, symdl.compile, symdl.stabilize, symdl.api.verify) live in symdl/api.py, and
`f.vjp()`, `f.compile()`, ... are one-line conveniences that call them (declare/verbs.py).
"""
from __future__ import annotations

from functools import cached_property

import sympy as sp

from . import verbs
from .canonical import canonical, declared
from .value import Frozen, Tensor

__all__ = ["Formula", "Tensor", "display_math"]


class Formula(Frozen):
    """One equation in index notation; see the module docstring.

    `domains` maps input names to the (low, high) interval random test inputs are drawn from
    (defaults: (-1, 1), or (0.2, 1) for tensors under log/sqrt/negative powers); `sizes` maps
    dimension symbols to the small sizes verification uses; `zero_padded` names the inputs read as
    zero outside their extent; `initial` maps a recurrence's output (or another tensor the formula
    reads at an earlier step: a system of recurrences, declare/systems.py) to its initial state.

    Fields (canonical.canonical says how each is found): name, body, indices, ranges (of the output
    indices), reduction_indices, all_indices, recurrence, reads, shape_rules, read_checks, dims,
    output_bound, inputs, scalars, output, used_names, domains, sizes.
    """

    def __init__(self, eq: sp.Eq, name: str | None = None, *, domains: dict | None = None,
                 sizes: dict | None = None, zero_padded=(), initial: dict | None = None):
        parts = declared(eq, name, zero_padded, initial)
        self._assign(canonical(**parts, domains=domains, sizes=sizes))

    @classmethod
    def from_parts(cls, name: str, out_name: str, indices: tuple, ranges: dict, body: sp.Expr,
                   shapes: dict | None = None, integer: set | None = None, domains: dict | None = None,
                   sizes: dict | None = None) -> "Formula":
        """Build a formula from canonical parts (what autodiff and passes produce)."""
        self = cls.__new__(cls)
        self._assign(canonical(name, out_name, tuple(indices), dict(ranges), body, shapes,
                               set(integer or ()), domains, sizes))
        return self

    # -- the public face ----------------------------------------------------------------------

    @property
    def output_name(self) -> str:
        return self._out_name

    @property
    def eq(self) -> sp.Eq:
        lhs = sp.IndexedBase(self.output.name)[self.indices] if self.indices else sp.Symbol(self.output.name)
        return sp.Eq(lhs, self.body, evaluate=False)

    @property
    def input_names(self) -> tuple:
        return tuple(t.name for t in self.inputs)

    def input(self, name: str) -> Tensor:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(f"formula {self.name!r} has no input {name!r}; inputs: {self.input_names}")

    # -- conveniences: the verbs of symdl/api.py --------------------------------------------------

    def vjp(self, wrt=None) -> dict:
        """Symbolic vector-Jacobian products: {input name: Formula for grad_<input>}, as a
        `Gradients` dict (a notebook shows it as the gradient equations). `symdl.vjp(self, wrt)`."""
        return verbs.call("vjp", self, wrt)

    def compile(self, backend: str = "cpu", **options):
        """Compile to a callable Kernel (numpy in, numpy out); see symdl.runtime.Kernel.
        `symdl.compile(self, backend, **options)`."""
        return verbs.call("compile", self, backend=backend, **options)

    def stabilize(self):
        """The formula with every stability rewrite applied (a Program when one adds a stage), or
        itself when none applies. `symdl.stabilize(self)`."""
        return verbs.call("stabilize", self)

    def verify(self, **options):
        """symbolic, numeric and backend checks in order (symdl.verify.all). `symdl.api.verify(self)`."""
        return verbs.call("verify", self, **options)

    @property
    def stability(self):
        """What symdl.stabilize did to make this formula (a passes.Stabilized: the original and the
        rewrites), or None when it was not made by stabilize."""
        return verbs.call("stability", self)

    # -- display and identity ------------------------------------------------------------------

    def latex(self) -> str:
        return sp.latex(self.eq)

    def _repr_latex_(self) -> str:
        """A notebook shows the equation as display math, as it shows SymPy expressions."""
        return display_math([self.latex()])

    def pretty(self) -> str:
        return sp.pretty(self.eq, use_unicode=True)

    def key(self) -> str:
        """A stable text that identifies the formula's meaning, and everything a stage derives from
        it (the keys of their caches): name, equation, ranges, inputs, domains, sizes, how lengths
        bind, and whether it was declared (checked in full) or made by a stage."""
        return self._key

    @cached_property
    def _key(self) -> str:  # the value never changes, so its key is computed once
        return sp.srepr((
            self.name, self.eq, tuple(sorted((str(k), str(v)) for k, v in self.ranges.items())),
            tuple((t.name, t.shape, t.integer) for t in self.inputs),
            tuple(sorted((t, repr(d)) for t, d in self.domains.items())),
            tuple(sorted((str(d), repr(v)) for d, v in self.sizes.items())),
            tuple(sorted((f"{t}.{a}", tuple(c)) for (t, a), c in self.shape_rules.items())),
            self._strict))

    def __repr__(self) -> str:
        return f"Formula({self.name}: {sp.sstr(self.eq.lhs)} = {sp.sstr(self.body)})"

    __str__ = __repr__


def display_math(lines: list) -> str | None:
    """LaTeX lines as notebook display math: one as is, several as the rows of a left-aligned array
    (a bare `\\\\` does not break lines in display math). None (no rich display) for no lines."""
    if len(lines) <= 1:
        return f"$${lines[0]}$$" if lines else None
    rows = " \\\\\n".join(rf"\displaystyle {line}" for line in lines)
    return f"$$\\begin{{array}}{{l}}\n{rows}\n\\end{{array}}$$"
