"""How a Formula is built: named canonicalisation steps, each a small function.

`declared` reads what a user wrote (`sympy.Eq(out[i, j], rhs)` with `Idx` indices, `zero_padded=`,
`initial=`) into canonical parts; `canonical` turns canonical parts (a user's, or those autodiff
and the passes give `Formula.from_parts`) into the fields of a Formula. Each step returns what it
adds and raises FormulaError for what it refuses. They run in the order a reader checks a
formula: the equation's form, its indices, its nodes, its reads, its shapes, its dimensions, its
names, its test inputs; so that is also the order of the errors a user sees.

Canonical form: every `Idx` becomes a plain integer symbol of the same name (its range kept in
`ranges` for output indices and in the `Sum` limits for reduction indices), so that later stages
work with one kind of index and `xreplace` everywhere.
"""
from __future__ import annotations

import sympy as sp

from ..errors import FormulaError
from .functions import ELEMENTWISE
from .indexing import affine, free_indices, index_symbol
from .names import check_distinct, check_spelling
from .reads import bindable_dims, guard_padded_reads, read_checks, reads_of, shape_rules
from .recurrence import pad_neighbour_reads, recurrence, with_initial_state
from .reductions import REDUCTIONS, VALUE_REDUCTIONS, ArgMax, ReduceMax, ReduceProduct, as_symdl_sums, limits_of
from .value import Tensor

# Expression nodes a formula may use; anything else is rejected at declaration.
SUPPORTED = (
    sp.Add, sp.Mul, sp.Pow, sp.Number, sp.NumberSymbol, sp.Symbol, sp.Indexed, sp.IndexedBase,
    sp.Sum, sp.Tuple, *ELEMENTWISE.values(), sp.Piecewise, sp.KroneckerDelta, sp.floor,
    sp.ceiling, sp.Mod, sp.logic.boolalg.BooleanAtom, sp.And, sp.Or, sp.Not, sp.ITE,
    sp.core.relational.Relational, sp.functions.elementary.piecewise.ExprCondPair, ReduceMax, ArgMax,
    ReduceProduct,
)


# -- a user's declaration -> canonical parts ---------------------------------------------------------

def declared(eq, name, zero_padded=(), initial=None) -> dict:
    """The canonical parts of `Formula(eq, name, zero_padded=, initial=)`: keyword arguments of
    `canonical` (less domains and sizes), with every Idx a plain symbol."""
    name, out_name, out_idx, rhs = parse_equation(eq, name)
    rename, ranges = canonical_indices(name, eq, out_idx)
    indices = output_indices(name, out_idx, rename)
    shapes, integer = declared_tensors(eq)
    body = pad_neighbour_reads(name, out_name, indices, ranges, rhs.xreplace(rename))
    if initial:
        body = with_initial_state(name, out_name, indices, body, initial)
        more, _ = declared_tensors(body)  # initial states declared with a shape
        shapes = dict(more, **shapes)
    return dict(name=name, out_name=out_name, indices=indices, ranges=ranges, body=body, declared=shapes,
                integer=integer, strict=True, padded=tuple(zero_padded))


def parse_equation(eq, name):
    """(name, output name, output indices, right side): a formula is one equation whose left side
    is the tensor (or scalar) it writes; its name defaults to the output's."""
    if not isinstance(eq, sp.Eq):
        raise FormulaError(str(name), f"expected sympy.Eq(output[indices], expression), got {eq!r}")
    lhs = eq.lhs
    if isinstance(lhs, sp.Indexed):
        out_name, out_idx = str(lhs.base.label), lhs.indices
    elif isinstance(lhs, sp.Symbol):
        out_name, out_idx = lhs.name, ()
    else:
        raise FormulaError(str(name), f"the left side must be an indexed tensor or a symbol, got {lhs}")
    return name or out_name, out_name, out_idx, eq.rhs


def canonical_indices(name, eq, out_idx):
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
    for s in [a for a in sp.preorder_traversal(eq) if isinstance(a, VALUE_REDUCTIONS)]:
        for var, _, _ in s.limits:
            if not isinstance(var, sp.Idx) and var not in rename:
                rename[var] = index_symbol(str(var))
    return rename, ranges


def output_indices(name, out_idx, rename) -> tuple:
    """The output's canonical indices: each must be an Idx, whose range is the output's extent."""
    for idx in out_idx:
        if not isinstance(idx, sp.Idx):
            raise FormulaError(name, f"output index {idx} must be a sympy.Idx with a range")
    return tuple(rename[idx] for idx in out_idx)


def declared_tensors(eq):
    """({tensor: declared shape}, {integer tensors}): what the IndexedBases say of themselves, the
    only source of a length that no lone index gives."""
    shapes = {str(b.label): b.shape for b in eq.atoms(sp.IndexedBase) if b.shape is not None}
    integer = {str(b.label) for b in eq.atoms(sp.IndexedBase) if b.is_integer}
    return shapes, integer


# -- canonical parts -> a Formula's fields -----------------------------------------------------------

def canonical(name, out_name, indices, ranges, body, declared=None, integer=(), domains=None, sizes=None,
              strict=False, padded=()) -> dict:
    """The fields of a Formula, by the steps below in order. `strict`: a user's declaration, whose
    names and dimensions are checked in full (autodiff's formulas name their own tensors and may take
    lengths only their caller knows); `padded`: the tensors read as zero outside their extent."""
    indices, declared = tuple(indices), dict(declared or {})
    body, integer = canonical_body(body, integer)
    out_ranges = output_ranges(name, indices, ranges)
    check_nodes(name, body)
    reduction = reduction_indices(name, body, set(indices))
    all_indices = set(indices) | reduction
    check_index_scope(name, body, out_name, indices, ranges, all_indices)
    rec, reads = own_reads(name, out_name, indices, body)
    check_index_expressions(name, reads_of(body) if rec else reads, integer, all_indices)  # own reads too
    rules = axis_rules(body, out_ranges, declared, reads, out_name, strict, padded)
    shapes = input_shapes(name, reads, rules)
    body = zero_padding(name, body, padded, shapes, all_indices)
    checks = [c for c in read_checks(body, out_ranges, all_indices) if not (rec and c[0] == out_name)]
    dims = dimensions(shapes, out_ranges, body, all_indices)
    output_bound = binding(dims, rules)
    body, scalars = real_scalars(body, all_indices, dims)
    inputs, output = tensors(name, out_name, shapes, integer, scalars, out_ranges)
    used = check_names(name, body, inputs, output, scalars, all_indices, dims, strict)
    return dict(name=name, body=body, indices=indices, ranges=out_ranges, reduction_indices=reduction,
                all_indices=all_indices, recurrence=rec, reads=reads, shape_rules=rules, read_checks=checks,
                dims=dims, output_bound=output_bound, inputs=inputs, scalars=scalars, output=output,
                used_names=used, domains=input_domains(body, inputs, domains or {}),
                sizes=size_symbols(sizes or {}), _out_name=out_name, _strict=strict, _padded=tuple(padded))


def canonical_body(body, integer):
    """(body, integer tensors): Sums and maxima as symdl's own nodes, and tensors holding real
    numbers (so d|x|/dx is sign(x)); integer tensors stay integer."""
    body, integer, swap = as_symdl_sums(body), set(integer), {}
    for b in body.atoms(sp.IndexedBase):
        if str(b.label) in integer or b.is_integer:
            integer.add(str(b.label))
        elif not b.is_real:
            swap[b] = sp.IndexedBase(str(b.label), shape=b.shape, real=True)
    return body.xreplace(swap), integer


def output_ranges(name, indices, ranges) -> dict:
    """{output index: (0, hi)}: distinct indices, each from 0, so the output is a plain array."""
    out = {i: (sp.sympify(ranges[i][0]), sp.sympify(ranges[i][1])) for i in indices}
    if len(set(indices)) != len(indices):
        raise FormulaError(name, f"output indices {indices} repeat an index")
    for i in indices:
        if ranges[i][0] != 0:
            raise FormulaError(name, f"output index {i} must start at 0, it starts at {ranges[i][0]}")
    return out


def check_nodes(name, body) -> None:
    """Every node is one symdl can differentiate, lower and print (SUPPORTED)."""
    for node in sp.preorder_traversal(body):
        if not isinstance(node, SUPPORTED):
            raise FormulaError(name, f"unsupported term {node} ({type(node).__name__}); supported: "
                                     f"+ - * / **, sqrt, {', '.join(ELEMENTWISE)}, Piecewise, "
                                     f"KroneckerDelta, Sum, Max, Min, Product and ArgMax over indices; "
                                     f"floor, ceiling and Mod in index arithmetic")


def reduction_indices(name, expr, outer: set, found: set | None = None) -> set:
    """All Sum variables; a Sum may not reuse an index that is already in scope (each index is one
    loop)."""
    found = set() if found is None else found
    if isinstance(expr, REDUCTIONS):
        scope = set(outer)
        for var, lo, hi in limits_of(expr):
            if var in scope:
                raise FormulaError(name, f"Sum over {var} in {expr} reuses an index already in scope")
            scope.add(var)
            found.add(var)
        reduction_indices(name, expr.function, scope, found)
        return found
    for arg in expr.args:
        if isinstance(arg, sp.Basic):
            reduction_indices(name, arg, outer, found)
    return found


def check_index_scope(name, body, out_name, indices, ranges, all_indices) -> None:
    """No index shares a tensor's name, and every index free on the right is an output index:
    otherwise the loop nest would not say what the formula means."""
    tensor_names = {str(b.label) for b in body.atoms(sp.IndexedBase)} | {out_name}
    clash = sorted(i.name for i in all_indices if i.name in tensor_names)
    if clash:
        raise FormulaError(name, f"index {clash[0]} has the same name as a tensor; rename one of them")
    extra = free_indices(body, all_indices | set(ranges)) - set(indices)
    if extra:
        raise FormulaError(name, f"index {sorted(map(str, extra))} is free on the right side but "
                                 f"not on the left side {out_name}{list(indices)}; sum over it or "
                                 f"add it to the output")


def own_reads(name, out_name, indices, body):
    """(Recurrence or None, reads of other tensors): a formula may read its own output only as a
    recurrence (an earlier step of one axis); its inputs are everything else it reads."""
    reads = reads_of(body)
    rec = recurrence(name, out_name, indices, body)
    return rec, [r for r in reads if str(r.base.label) != out_name]


def check_index_expressions(name, reads, integer, all_indices) -> None:
    """Index positions are affine in the loop indices, and gathers read integer tensors: what the
    loop IR can bound and the runtime can range-check."""
    def refuse_non_integer(inner, r):
        if str(inner.base.label) not in integer:
            raise FormulaError(name, f"{inner} is used as an index in {r} but tensor {inner.base} is not "
                                     f"an integer tensor; declare sympy.IndexedBase({str(inner.base)!r}, "
                                     f"integer=True)")
    for r in reads:
        for pos in r.indices:
            for inner in pos.atoms(sp.Indexed):
                refuse_non_integer(inner, r)
            aff = affine(pos, all_indices)
            if aff is None:
                raise FormulaError(name, f"index expression {pos} in {r} is not affine in the loop "
                                         f"indices (allowed: i, 2*i + m - 1, t[b] for an integer tensor t)")
            for read in aff.reads:
                refuse_non_integer(read, r)


def axis_rules(body, out_ranges, declared, reads, out_name, strict, padded=()) -> dict:
    """(input, axis) -> candidate lengths (reads.shape_rules), for the tensors the formula reads:
    how a call binds dimensions from its arrays."""
    read_names = {str(r.base.label) for r in reads}
    rules = shape_rules(body, out_ranges, {t: d for t, d in declared.items() if t in read_names}, strict,
                        padded)
    return {k: v for k, v in rules.items() if k[0] != out_name}


def input_shapes(name, reads, rules) -> dict:
    """{input: shape}, in order of first read: one rank per tensor, and a known length per axis
    (its first candidate)."""
    shapes = {}
    for t in dict.fromkeys(str(r.base.label) for r in reads):
        rank = {len(r.indices) for r in reads if str(r.base.label) == t}
        if len(rank) != 1:
            raise FormulaError(name, f"tensor {t} is read with different ranks {sorted(rank)}")
        axes = []
        for a in range(rank.pop()):
            cands = rules.get((t, a), [])
            if not cands:
                raise FormulaError(name, f"the length of axis {a} of tensor {t} is unknown: it is "
                                         f"read only through index expressions; declare it with "
                                         f"sympy.IndexedBase({t!r}, shape=(...))")
            axes.append(cands[0])
        shapes[t] = tuple(axes)
    return shapes


def zero_padding(name, body, padded, shapes, all_indices):
    """Reads outside a zero-padded tensor are zero: guard them (reads.guard_padded_reads)."""
    unknown = [t for t in padded if t not in shapes]
    if unknown:
        raise FormulaError(name, f"zero_padded names {unknown[0]!r}, which the formula does not read")
    return guard_padded_reads(body, set(padded), shapes, all_indices) if padded else body


def dimensions(shapes, out_ranges, body, all_indices) -> tuple:
    """The dimension symbols (B, N, ...): in input shapes, output ranges and reduction limits, and
    the integer symbols a body uses as values (N·Σ_k a[k]; its gradient N·grad_y names no range)."""
    tensor_names = {str(b.label) for b in body.atoms(sp.IndexedBase)}
    dims = {s for s in _bare_symbols(body) if s.is_integer and s not in all_indices
            and s.name not in tensor_names}
    for shape in shapes.values():
        for d in shape:
            dims |= d.free_symbols
    for lo, hi in out_ranges.values():
        dims |= lo.free_symbols | hi.free_symbols
    for s in [a for a in sp.preorder_traversal(body) if isinstance(a, VALUE_REDUCTIONS)]:
        for _, lo, hi in s.limits:
            dims |= (lo.free_symbols | hi.free_symbols) - all_indices
    return tuple(sorted(dims, key=str))


def binding(dims, rules) -> tuple:
    """The dimensions a call cannot bind from its inputs (the output_bound: the caller passes them,
    Kernel(..., dims=) or out=): a loop length the user gives at call time, a gradient's length
    taken only from its output (grad_w of a convolution), or one only the program knows."""
    bindable = bindable_dims(rules)
    return tuple(d for d in dims if d not in bindable)


def real_scalars(body, all_indices, dims):
    """(body, scalars): the free symbols that are neither indices, dimensions nor tensors are scalar
    inputs, holding real numbers."""
    tensor_names = {str(b.label) for b in body.atoms(sp.IndexedBase)}
    scalars = sorted({a for a in body.atoms(sp.Symbol) if a not in all_indices
                      and a not in dims and a.name not in tensor_names}, key=str)
    real = {a: sp.Symbol(a.name, real=True) for a in scalars if not a.is_real}
    return body.xreplace(real), tuple(real.get(a, a) for a in scalars)


def tensors(name, out_name, shapes, integer, scalars, out_ranges):
    """(inputs, output): the tensors read, then the scalars; the output is none of them."""
    inputs = tuple(Tensor(t, shape, t in integer) for t, shape in shapes.items()) + tuple(
        Tensor(s.name, ()) for s in scalars)
    output = Tensor(out_name, tuple(hi - lo + 1 for lo, hi in out_ranges.values()))
    if out_name in {t.name for t in inputs}:
        raise FormulaError(name, f"the output name {out_name} is also an input")
    return inputs, output


def check_names(name, body, inputs, output, scalars, all_indices, dims, strict) -> frozenset:
    """Every name becomes an identifier in generated code: user names must be spelled as one,
    and no name may have two roles (symdl/declare/names.py). Returns every name used."""
    tensor_names = [t.name for t in inputs if t.rank] + [output.name]
    bare = [s.name for s in _bare_symbols(body) if s.name in tensor_names
            and s not in all_indices and s not in dims]  # x[i] * x: a tensor used as a scalar
    named = {"tensor": tensor_names, "scalar": [s.name for s in scalars] + sorted(bare),
             "index": sorted(i.name for i in all_indices), "dimension": [str(d) for d in dims]}
    if strict:  # formulas made by autodiff name their own tensors (grad_x, h__prev1)
        for role, names in named.items():
            check_spelling(name, role, names)
        seed = f"grad_{output.name}"  # autodiff.grad_name: the output's upstream gradient
        if seed in {t.name for t in inputs}:
            raise FormulaError(name, f"tensor name {seed!r} is the name Formula.vjp gives the "
                                     f"gradient of the output {output.name!r}; rename it")
    check_distinct(name, named)
    return frozenset(n for names in named.values() for n in names)


def input_domains(body, inputs, domains) -> dict:
    """{input: (low, high)} random test inputs are drawn from: as given, else where the formula is
    defined (positive under log, sqrt and negative powers)."""
    return {t.name: domains.get(t.name, _default_domain(body, t.name)) for t in inputs}


def size_symbols(sizes) -> dict:
    """{dimension symbol: small size for verification}; a name stands for its positive integer symbol."""
    return {sp.Symbol(str(k), integer=True, positive=True) if isinstance(k, str) else k: v
            for k, v in sizes.items()}


def _bare_symbols(expr) -> set:
    """Symbols outside tensor names (free_symbols counts x of x[i] for some IndexedBases)."""
    if isinstance(expr, sp.IndexedBase):
        return set()
    if isinstance(expr, sp.Symbol):
        return {expr}
    return set().union(*(_bare_symbols(a) for a in expr.args))


def _default_domain(body, name):
    """Positive inputs under log, sqrt and negative powers; (-1, 1) elsewhere."""
    for node in sp.preorder_traversal(body):
        inner = None
        if isinstance(node, (sp.log,)):
            inner = node.args[0]
        elif isinstance(node, sp.Pow) and (not node.exp.is_integer or node.exp.is_negative):
            inner = node.base
        if inner is not None and any(str(r.base.label) == name for r in inner.atoms(sp.Indexed)):
            return (0.2, 1.0)
    return (-1.0, 1.0)
