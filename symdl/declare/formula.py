"""Formula: one equation `out[i, j] = rhs` in SymPy index notation, validated and made canonical.

    >>> import sympy as sp, symdl
    >>> B, N = sp.symbols("B N", integer=True, positive=True)
    >>> i, k = sp.Idx("i", B), sp.Idx("k", N)
    >>> x, s = sp.IndexedBase("x"), sp.IndexedBase("s")
    >>> symdl.Formula(sp.Eq(s[i], sp.Sum(x[i, k] ** 2, k)), name="sumsq").inputs
    (Tensor(name='x', shape=(B, N), integer=False),)

Canonical form: every `Idx` becomes a plain integer symbol of the same name (its range kept in
`ranges` for output indices and in the `Sum` limits for reduction indices), so that later stages
work with one kind of index and `xreplace` everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..errors import FormulaError
from .functions import ELEMENTWISE
from .indexing import affine, free_indices, index_symbol, is_lone
from .names import check_distinct, check_spelling
from .recurrence import recurrence, with_initial_state
from .reductions import REDUCTIONS, ArgMax, ReduceMax, as_symdl_sums, limits_of

# Expression nodes a formula may use; anything else is rejected at declaration.
SUPPORTED = (
    sp.Add, sp.Mul, sp.Pow, sp.Number, sp.NumberSymbol, sp.Symbol, sp.Indexed, sp.IndexedBase,
    sp.Sum, sp.Tuple, *ELEMENTWISE.values(), sp.Piecewise, sp.KroneckerDelta, sp.floor,
    sp.ceiling, sp.Mod, sp.logic.boolalg.BooleanAtom, sp.And, sp.Or, sp.Not, sp.ITE,
    sp.core.relational.Relational, sp.functions.elementary.piecewise.ExprCondPair, ReduceMax, ArgMax,
)


@dataclass(frozen=True)
class Tensor:
    """A tensor a formula reads or writes: name, one dimension expression per axis, element kind."""

    name: str
    shape: tuple
    integer: bool = False

    @property
    def rank(self) -> int:
        return len(self.shape)


class Formula:
    """One equation in index notation; see the module docstring.

    `domains` maps input names to the (low, high) interval random test inputs are drawn from
    (defaults: (-1, 1), or (0.2, 1) for tensors under log/sqrt/negative powers); `sizes` maps
    dimension symbols to the small sizes verification uses.
    """

    def __init__(self, eq: sp.Eq, name: str | None = None, *, domains: dict | None = None,
                 sizes: dict | None = None, zero_padded=(), initial: dict | None = None):
        if not isinstance(eq, sp.Eq):
            raise FormulaError(str(name), f"expected sympy.Eq(output[indices], expression), got {eq!r}")
        lhs, rhs = eq.lhs, eq.rhs
        if isinstance(lhs, sp.Indexed):
            out_name, out_idx = str(lhs.base.label), lhs.indices
        elif isinstance(lhs, sp.Symbol):
            out_name, out_idx = lhs.name, ()
        else:
            raise FormulaError(str(name), f"the left side must be an indexed tensor or a symbol, got {lhs}")
        name = name or out_name
        rename, ranges = _canonical_indices(name, eq, out_idx)
        for idx in out_idx:
            if not isinstance(idx, sp.Idx):
                raise FormulaError(name, f"output index {idx} must be a sympy.Idx with a range")
        indices = tuple(rename[idx] for idx in out_idx)
        self._strict = True
        declared = {str(b.label): b.shape for b in eq.atoms(sp.IndexedBase) if b.shape is not None}
        integer = {str(b.label) for b in eq.atoms(sp.IndexedBase) if b.is_integer}
        self._padded = tuple(zero_padded)
        rhs = rhs.xreplace(rename)
        if initial:
            rhs = with_initial_state(name, out_name, indices, rhs, initial)
        self._init(name, out_name, indices, ranges, rhs, declared, integer, domains or {}, sizes or {})

    @classmethod
    def from_parts(cls, name: str, out_name: str, indices: tuple, ranges: dict, body: sp.Expr,
                   shapes: dict | None = None, integer: set | None = None, domains: dict | None = None,
                   sizes: dict | None = None) -> "Formula":
        """Build a formula from canonical parts (what autodiff and passes produce)."""
        self = cls.__new__(cls)
        self._strict, self._padded = False, ()
        self._init(name, out_name, tuple(indices), dict(ranges), body, dict(shapes or {}),
                   set(integer or ()), dict(domains or {}), dict(sizes or {}))
        return self

    # -- construction -------------------------------------------------------------------------

    def _init(self, name, out_name, indices, ranges, body, declared, integer, domains, sizes):
        body = _real_values(as_symdl_sums(body), integer)
        self.name, self.body, self.indices = name, body, indices
        self._out_name = out_name
        self.ranges = {i: (sp.sympify(ranges[i][0]), sp.sympify(ranges[i][1])) for i in indices}
        if len(set(indices)) != len(indices):
            raise FormulaError(name, f"output indices {indices} repeat an index")
        for i in indices:
            if ranges[i][0] != 0:
                raise FormulaError(name, f"output index {i} must start at 0, it starts at {ranges[i][0]}")
        _check_nodes(name, body)
        self.reduction_indices = _sum_variables(name, body, set(indices))
        self.all_indices = set(indices) | self.reduction_indices
        tensor_names = {str(b.label) for b in body.atoms(sp.IndexedBase)} | {out_name}
        clash = sorted(i.name for i in self.all_indices if i.name in tensor_names)
        if clash:
            raise FormulaError(name, f"index {clash[0]} has the same name as a tensor; rename one of them")
        extra = free_indices(body, self.all_indices | set(ranges)) - set(indices)
        if extra:
            raise FormulaError(name, f"index {sorted(map(str, extra))} is free on the right side but "
                                     f"not on the left side {out_name}{list(indices)}; sum over it or "
                                     f"add it to the output")
        reads = _reads(body)
        self.recurrence = recurrence(name, out_name, indices, body)
        reads = [r for r in reads if str(r.base.label) != out_name]
        self.reads = reads
        self._check_index_expressions(reads, integer)
        read_names = {str(r.base.label) for r in reads}
        shape_rules = {k: v for k, v in _shape_rules(body, self.ranges, {
            t: d for t, d in declared.items() if t in read_names}, self._strict).items() if k[0] != out_name}
        self.read_checks = self._own_reads_out(read_checks(body, self.ranges, self.all_indices))
        names = list(dict.fromkeys(str(r.base.label) for r in reads))
        shapes = {}
        for t in names:
            rank = {len(r.indices) for r in reads if str(r.base.label) == t}
            if len(rank) != 1:
                raise FormulaError(name, f"tensor {t} is read with different ranks {sorted(rank)}")
            axes = []
            for a in range(rank.pop()):
                cands = shape_rules.get((t, a), [])
                if not cands:
                    raise FormulaError(name, f"the length of axis {a} of tensor {t} is unknown: it is "
                                             f"read only through index expressions; declare it with "
                                             f"sympy.IndexedBase({t!r}, shape=(...))")
                axes.append(cands[0])
            shapes[t] = tuple(axes)
        self.shape_rules = shape_rules
        unknown = [t for t in self._padded if t not in shapes]
        if unknown:
            raise FormulaError(name, f"zero_padded names {unknown[0]!r}, which the formula does not read")
        if self._padded:  # reads outside a padded tensor are zero: guard them, then check the rest
            self.body = body = _guard_padded_reads(body, set(self._padded), shapes, self.all_indices)
            self.read_checks = self._own_reads_out(read_checks(body, self.ranges, self.all_indices))
        dims = set()
        for t, shape in shapes.items():
            for d in shape:
                dims |= d.free_symbols
        for lo, hi in self.ranges.values():
            dims |= lo.free_symbols | hi.free_symbols
        for s in [*body.atoms(sp.Sum), *body.atoms(ReduceMax)]:
            for _, lo, hi in s.limits:
                dims |= (lo.free_symbols | hi.free_symbols) - self.all_indices
        self.dims = tuple(sorted(dims, key=str))
        bindable = bindable_dims(shape_rules)
        out_bare = {hi + 1 for lo, hi in self.ranges.values()}
        unbound = [d for d in self.dims if d not in bindable]
        # gradient formulas may take a length only from their output (grad_w of a convolution):
        # the caller then passes it (Kernel(..., dims=) or out=)
        # (non-strict formulas, made by autodiff, may also take lengths only their caller knows)
        self.output_bound = tuple(unbound) if not self._strict else tuple(d for d in unbound
                                                                         if d in out_bare)
        if unbound and self._strict:
            raise FormulaError(name, f"dimension {unbound[0]} is not the length of any input axis, so a "
                                     f"call cannot bind it; write output ranges as expressions of input "
                                     f"dimensions")
        tensor_names = {str(b.label) for b in body.atoms(sp.IndexedBase)}
        scalars = sorted({a for a in body.atoms(sp.Symbol) if a not in self.all_indices
                          and a not in self.dims and a.name not in tensor_names}, key=str)
        real = {a: sp.Symbol(a.name, real=True) for a in scalars if not a.is_real}
        self.body = body = body.xreplace(real)
        scalars = [real.get(a, a) for a in scalars]
        self.inputs = tuple(Tensor(t, shapes[t], t in integer) for t in names) + tuple(
            Tensor(s.name, ()) for s in scalars)
        self.scalars = tuple(scalars)
        self.output = Tensor(out_name, tuple(hi - lo + 1 for lo, hi in self.ranges.values()))
        if out_name in {t.name for t in self.inputs}:
            raise FormulaError(name, f"the output name {out_name} is also an input")
        self._check_names()
        self.domains = {t.name: domains.get(t.name, _default_domain(body, t.name)) for t in self.inputs}
        self.sizes = {sp.Symbol(str(k), integer=True, positive=True) if isinstance(k, str) else k: v
                      for k, v in sizes.items()}

    def _check_names(self):
        """Every name becomes an identifier in generated code: user names must be spelled as one,
        and no name may have two roles (symdl/declare/names.py)."""
        tensors = [t.name for t in self.inputs if t.rank] + [self.output.name]
        bare = [s.name for s in _bare_symbols(self.body) if s.name in tensors
                and s not in self.all_indices and s not in self.dims]  # x[i] * x: a tensor used as a scalar
        named = {"tensor": tensors, "scalar": [s.name for s in self.scalars] + sorted(bare),
                 "index": sorted(i.name for i in self.all_indices),
                 "dimension": [str(d) for d in self.dims]}
        if self._strict:  # formulas made by autodiff name their own tensors (grad_x, h__prev1)
            for role, names in named.items():
                check_spelling(self.name, role, names)
            seed = f"grad_{self.output.name}"  # autodiff.grad_name: the output's upstream gradient
            if seed in self.input_names:
                raise FormulaError(self.name, f"tensor name {seed!r} is the name Formula.vjp gives the "
                                              f"gradient of the output {self.output.name!r}; rename it")
        check_distinct(self.name, named)
        self.used_names = frozenset(n for names in named.values() for n in names)

    def _own_reads_out(self, checks):
        """A recurrence's reads of its own output are guarded by construction, not checked per call."""
        return [c for c in checks if c[0] != self.output_name] if self.recurrence else checks

    @property
    def output_name(self) -> str:
        return self._out_name

    def _check_index_expressions(self, reads, integer):
        for r in reads:
            for pos in r.indices:
                for inner in pos.atoms(sp.Indexed):
                    if str(inner.base.label) not in integer:
                        raise FormulaError(self.name, f"{inner} is used as an index in {r} but tensor "
                                                      f"{inner.base} is not an integer tensor; declare "
                                                      f"sympy.IndexedBase({str(inner.base)!r}, integer=True)")
                aff = affine(pos, self.all_indices)
                if aff is None:
                    raise FormulaError(self.name, f"index expression {pos} in {r} is not affine in the "
                                                  f"loop indices (allowed: i, 2*i + m - 1, t[b] for an "
                                                  f"integer tensor t)")
                for read in aff.reads:
                    if str(read.base.label) not in integer:
                        raise FormulaError(self.name, f"{read} is used as an index in {r} but tensor "
                                                      f"{read.base} is not an integer tensor; declare "
                                                      f"sympy.IndexedBase({str(read.base)!r}, integer=True)")

    # -- the public face ----------------------------------------------------------------------

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

    def vjp(self, wrt=None) -> dict:
        """Symbolic vector-Jacobian products: {input name: Formula for grad_<input>}, as a
        `Gradients` dict (a notebook shows it as the gradient equations)."""
        from ..autodiff import vjp
        return vjp(self, wrt)

    def compile(self, backend: str = "cpu", **options):
        """Compile to a callable Kernel (numpy in, numpy out); see symdl.runtime.Kernel."""
        from ..runtime import compile_formula
        return compile_formula(self, backend=backend, **options)

    def latex(self) -> str:
        return sp.latex(self.eq)

    def _repr_latex_(self) -> str:
        """A notebook shows the equation as display math, as it shows SymPy expressions."""
        return display_math([self.latex()])

    def pretty(self) -> str:
        return sp.pretty(self.eq, use_unicode=True)

    def key(self) -> str:
        """A stable text that identifies the formula's meaning (used in cache keys)."""
        return sp.srepr((self.name, self.eq, tuple(sorted((str(k), str(v)) for k, v in self.ranges.items())),
                         tuple((t.name, t.shape, t.integer) for t in self.inputs)))

    def __repr__(self) -> str:
        return f"Formula({self.name}: {sp.sstr(self.eq.lhs)} = {sp.sstr(self.body)})"

    __str__ = __repr__


# -- helpers ---------------------------------------------------------------------------------------

def display_math(lines: list) -> str | None:
    """LaTeX lines as notebook display math: one as is, several as the rows of a left-aligned array
    (a bare `\\\\` does not break lines in display math). None (no rich display) for no lines."""
    if len(lines) <= 1:
        return f"$${lines[0]}$$" if lines else None
    rows = " \\\\\n".join(rf"\displaystyle {line}" for line in lines)
    return f"$$\\begin{{array}}{{l}}\n{rows}\n\\end{{array}}$$"


def _canonical_indices(name, eq, out_idx):
    """Map every Idx to its canonical symbol; refuse two different ranges under one name."""
    rename, ranges, seen = {}, {}, {}
    for idx in eq.atoms(sp.Idx):
        sym = index_symbol(str(idx.label))
        if sym in seen and any(sp.expand(a - b) != 0 for a, b in ((seen[sym].lower, idx.lower),
                                                                   (seen[sym].upper, idx.upper))):
            raise FormulaError(name, f"index {sym} is declared with two ranges: "
                                     f"[{seen[sym].lower}, {seen[sym].upper}] and [{idx.lower}, {idx.upper}]")
        if idx.lower is None:
            raise FormulaError(name, f"index {sym} has no range: declare it as sympy.Idx({str(sym)!r}, N)")
        seen[sym] = idx
        rename[idx] = sym
        ranges[sym] = (sp.sympify(idx.lower), sp.sympify(idx.upper))
    for s in [*eq.atoms(sp.Sum), *eq.atoms(ReduceMax)]:
        for var, _, _ in s.limits:
            if not isinstance(var, sp.Idx) and var not in rename:
                rename[var] = index_symbol(str(var))
    return rename, ranges


def linear_in(expr, sym) -> bool:
    """Whether `expr` is a·sym + c with a non-zero integer a and c free of sym."""
    try:
        poly = sp.Poly(expr, sym)
    except sp.PolynomialError:
        return False
    return poly.degree() == 1 and poly.all_coeffs()[0].is_Integer


def bindable_dims(shape_rules) -> set:
    """Dimensions a call can bind: bare lengths, then lengths linear in one unknown (2·n)."""
    found = {c for cands in shape_rules.values() for c in cands if isinstance(c, sp.Symbol)}
    changed = True
    while changed:
        changed = False
        for cands in shape_rules.values():
            for c in cands:
                unknown = c.free_symbols - found
                if len(unknown) == 1 and linear_in(c, next(iter(unknown))):
                    found |= unknown
                    changed = True
    return found


def _guard_padded_reads(body, padded: set, shapes: dict, indices: set):
    """x[e] for a zero-padded x becomes Piecewise((x[e], 0 <= e <= len - 1), (0, True)), so the
    padding is ordinary notation: autodiff turns these guards into loop bounds like any other."""
    def visit(e):
        if isinstance(e, sp.Indexed):
            name = str(e.base.label)
            if name not in padded:
                return e
            conds = []
            for pos, n in zip(e.indices, shapes[name], strict=True):
                if not is_lone(pos, indices):
                    conds += [sp.Ge(pos, 0), sp.Le(pos, n - 1)]
            return sp.Piecewise((e, sp.And(*conds)), (0, True)) if conds else e
        if not e.args:
            return e
        return e.func(*[visit(a) for a in e.args])
    return visit(body)


def _real_values(body, integer):
    """Tensors and scalars hold real numbers (so d|x|/dx is sign(x)); integer tensors stay integer."""
    swap = {}
    for b in body.atoms(sp.IndexedBase):
        if str(b.label) in integer or b.is_integer:
            integer.add(str(b.label))
        elif not b.is_real:
            swap[b] = sp.IndexedBase(str(b.label), shape=b.shape, real=True)
    body = body.xreplace(swap)
    return body


def _bare_symbols(expr) -> set:
    """Symbols outside tensor names (free_symbols counts x of x[i] for some IndexedBases)."""
    if isinstance(expr, sp.IndexedBase):
        return set()
    if isinstance(expr, sp.Symbol):
        return {expr}
    return set().union(*(_bare_symbols(a) for a in expr.args))


def _check_nodes(name, expr):
    for node in sp.preorder_traversal(expr):
        if not isinstance(node, SUPPORTED):
            raise FormulaError(name, f"unsupported term {node} ({type(node).__name__}); supported: "
                                     f"+ - * / **, sqrt, {', '.join(ELEMENTWISE)}, Piecewise, "
                                     f"KroneckerDelta, Sum, ReduceMax and ArgMax over indices; floor, "
                                     f"ceiling and Mod in index arithmetic")


def _sum_variables(name, expr, outer: set, found: set | None = None) -> set:
    """All Sum variables; a Sum may not reuse an index that is already in scope."""
    found = set() if found is None else found
    if isinstance(expr, REDUCTIONS):
        scope = set(outer)
        for var, lo, hi in limits_of(expr):
            if var in scope:
                raise FormulaError(name, f"Sum over {var} in {expr} reuses an index already in scope")
            scope.add(var)
            found.add(var)
        _sum_variables(name, expr.function, scope, found)
        return found
    for arg in expr.args:
        if isinstance(arg, sp.Basic):
            _sum_variables(name, arg, outer, found)
    return found


def _reads(expr) -> list:
    """Indexed reads in order of first appearance (integer reads inside index positions included)."""
    out = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Indexed) and node not in out:
            out.append(node)
    return out


def walk_reads(expr, scope: dict, guarded: bool = False):
    """Yield (read, scope, guarded) for each Indexed read: `scope` maps every index in scope to its
    (lo, hi) range, `guarded` says the read sits under a Piecewise condition on indices (its own
    branch's or an earlier branch's)."""
    if isinstance(expr, sp.Indexed):
        yield expr, scope, guarded
        for pos in expr.indices:
            yield from walk_reads(pos, scope, guarded)
        return
    if isinstance(expr, REDUCTIONS):
        inner = dict(scope)
        for var, lo, hi in limits_of(expr):
            inner[var] = (lo, hi)
        yield from walk_reads(expr.function, inner, guarded)
        return
    if isinstance(expr, sp.Piecewise):  # a branch runs only where the conditions before it failed
        tested = False
        for value, cond in expr.args:
            tested = tested or (bool(cond.free_symbols & set(scope)) if cond is not sp.true else False)
            yield from walk_reads(value, scope, guarded or tested)
            yield from walk_reads(cond, scope, guarded)
        return
    for arg in expr.args:
        if isinstance(arg, sp.Basic):
            yield from walk_reads(arg, scope, guarded)


def _shape_rules(body, ranges, declared, strict: bool = True) -> dict:
    """(tensor, axis) -> candidate length expressions: the declared shape, then the ranges of lone
    indices that start at 0 and do not depend on other indices. Formulas made by autodiff declare
    every shape and may sum over part of an axis (t in [0, 0]): only their declarations count."""
    rules: dict = {}
    for t, shape in declared.items():
        for a, d in enumerate(shape):
            rules.setdefault((t, a), []).append(sp.sympify(d))
    for read, scope, _ in walk_reads(body, ranges):
        if not strict and str(read.base.label) in declared:
            continue
        for a, pos in enumerate(read.indices):
            if is_lone(pos, set(scope)):
                lo, hi = scope[pos]
                if lo == 0 and not (hi.free_symbols & set(scope)):
                    cands = rules.setdefault((str(read.base.label), a), [])
                    if hi + 1 not in cands:
                        cands.append(hi + 1)
    return rules


def read_checks(body, ranges, all_indices) -> list:
    """(tensor, axis, Affine, scope) for every read whose range must be checked against the
    tensor's length at call time: affine positions and gathers, outside index guards."""
    checks = []
    for read, scope, guarded in walk_reads(body, ranges):
        if guarded:
            continue
        for a, pos in enumerate(read.indices):
            aff = affine(pos, all_indices)
            if aff is None:
                continue
            if any(v not in scope or ({*scope[v][0].free_symbols, *scope[v][1].free_symbols} & all_indices)
                   for v in aff.coeffs):
                continue  # bounds that depend on other indices come from autodiff, correct by construction
            lone = is_lone(pos, all_indices) and scope[pos][0] == 0
            if not lone or aff.reads:
                check = (str(read.base.label), a, aff, {v: scope[v] for v in aff.coeffs})
                if check not in checks:
                    checks.append(check)
    return checks


def _default_domain(body, name):
    """Draw inputs where the formula is defined: positive under log, sqrt and negative powers."""
    for node in sp.preorder_traversal(body):
        inner = None
        if isinstance(node, (sp.log,)):
            inner = node.args[0]
        elif isinstance(node, sp.Pow) and (not node.exp.is_integer or node.exp.is_negative):
            inner = node.base
        if inner is not None and any(str(r.base.label) == name for r in inner.atoms(sp.Indexed)):
            return (0.2, 1.0)
    return (-1.0, 1.0)
