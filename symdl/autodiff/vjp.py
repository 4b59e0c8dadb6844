"""Reverse mode, symbolic: the VJP formulas of a formula, and the gradient program of a Program."""
from __future__ import annotations

import sympy as sp

from ..declare.formula import Formula, display_math
from ..declare.functions import heaviside_to_step, max_min_to_piecewise
from ..declare.program import Program
from ..declare.reductions import VALUE_REDUCTIONS
from ..errors import FormulaError
from .eliminate import build, eliminate_deltas
from .terms import NotDifferentiable, base_name, flatten, fresh_index


def grad_name(tensor: str) -> str:
    return f"grad_{tensor}"


class Gradients(dict):
    """What Formula.vjp returns: {input name: gradient Formula (a Program for a recurrence)}, a
    plain dict in every way but one: a notebook shows it as the gradient equations, a line each."""

    def _repr_latex_(self) -> str | None:
        return display_math([f.latex() for g in self.values()
                             for f in (g.formulas if isinstance(g, Program) else (g,))])


# (formula.key(), input, reuse_output) -> gradient Formula: each gradient is derived once per
# meaning (the key names everything _vjp_one reads: body, ranges, inputs, domains, sizes).
_VJPS: dict = {}
CACHE_SIZE = 4096  # formulas are values: an evicted entry is only derived again
# Derived gradients kept across processes (get(key) -> value or None, put(key, value)): symdl.api
# installs the kernel cache's store, keyed also by the code that derives them (runtime/cache.py).
STORE = None


def remember(cache: dict, key, value):
    """cache[key] = value, dropping the oldest entry past CACHE_SIZE."""
    if key not in cache and len(cache) >= CACHE_SIZE:
        del cache[next(iter(cache))]
    cache[key] = value


def vjp(formula: Formula, wrt=None, reuse_output: bool = False) -> Gradients:
    """{input name: Formula computing grad_<input>[P] = Σ_I grad_<out>[I] ∂out[I]/∂input[P]}.

    A recurrence's VJPs are Programs (its adjoint recurrence, then the gradient; see
    autodiff/recurrence.py). `reuse_output`: where the derivative repeats the whole right side
    (tanh' = 1 - tanh²), read the forward output instead of recomputing it."""
    names = [t.name for t in formula.inputs if not t.integer] if wrt is None else list(wrt)
    if formula.recurrence is not None:
        from .recurrence import recurrence_vjp
        return Gradients(recurrence_vjp(formula, names))
    out, key = Gradients(), formula.key()
    for n in names:
        g = _VJPS.get((key, n, reuse_output)) or (STORE and STORE.get(("vjp", key, n, reuse_output)))
        if g is None:
            g = _vjp_one(formula, formula.input(n), reuse_output)
            if STORE:
                STORE.put(("vjp", key, n, reuse_output), g)
        out[n] = g
        remember(_VJPS, (key, n, reuse_output), g)
    return out


def _vjp_one(f: Formula, x, reuse_output: bool = False) -> Formula:
    if x.integer:
        raise FormulaError(f.name, f"{x.name} is an integer tensor: it has no gradient")
    out = f.output
    g = sp.IndexedBase(grad_name(out.name), real=True)
    outer = {i: fresh_index(i.name) for i in f.indices}
    body = f.body.xreplace(outer)
    if x.rank == 0:
        target, p = next(s for s in f.scalars if s.name == x.name), ()
    else:
        base = next(b for b in f.body.atoms(sp.IndexedBase) if str(b.label) == x.name)
        p = tuple(fresh_index("p") for _ in range(x.rank))
        target = base[p]
    try:
        derivative = heaviside_to_step(sp.diff(max_min_to_piecewise(body), target))
        if reuse_output and f.indices:
            forward = sp.IndexedBase(out.name, real=True)[tuple(outer[i] for i in f.indices)]
            derivative = derivative.xreplace({body: forward, **_relu_tests(max_min_to_piecewise(body),
                                                                           forward)})
        terms = flatten(derivative)
    except NotDifferentiable as err:
        raise FormulaError(f.name, f"d/d{x.name}: {err}") from None
    seed = g[tuple(outer[i] for i in f.indices)] if f.indices else sp.Symbol(grad_name(out.name), real=True)
    out_sums = [(outer[i], lo, hi) for i, (lo, hi) in f.ranges.items()]
    free_ranges = {pi: (sp.Integer(0), d - 1) for pi, d in zip(p, x.shape, strict=True)}
    total = sp.Integer(0)
    for t in terms:
        t.coeff, t.sums = t.coeff * seed, out_sums + t.sums
        t = eliminate_deltas(t, set(p))
        if t is not None:
            total += build(t, free_ranges)
    names = _index_names(f, x, p)
    total, names = _tidy(total, names, f)
    shapes = {t.name: t.shape for t in f.inputs if t.rank}
    if f.indices:
        shapes[g.name] = out.shape
        if reuse_output:
            shapes[out.name] = out.shape
    integer = {t.name for t in f.inputs if t.integer}
    ranges = {names[pi]: (0, d - 1) for pi, d in zip(p, x.shape, strict=True)}
    domains = dict(f.domains, **{g.name: (-1.0, 1.0)})
    return Formula.from_parts(f"{f.name}.vjp.{x.name}", grad_name(x.name), tuple(names[pi] for pi in p),
                              ranges, total, shapes, integer, domains, f.sizes)


def _relu_tests(body, forward) -> dict:
    """For out = max(u, 0) (Piecewise((0, u <= 0), (u, True))), the tests u <= 0 and u > 0 are
    out <= 0 and out > 0: the gradient reads the output instead of recomputing u."""
    if not isinstance(body, sp.Piecewise) or len(body.args) != 2:
        return {}
    (a, cond), (b, last) = body.args
    if last is not sp.true or not isinstance(cond, (sp.Le, sp.Gt)) or cond.rhs != 0:
        return {}
    u = cond.lhs
    if {a, b} != {sp.Integer(0), u} or (a == 0) != isinstance(cond, sp.Le):
        return {}
    return {cond: cond.func(forward, 0), cond.negated: cond.negated.func(forward, 0)}


def _index_names(f: Formula, x, p) -> dict:
    """Name gradient indices after the indices the forward formula reads the input with."""
    names = {}
    used = {t.name for t in f.inputs} | {str(d) for d in f.dims} | {f.output.name, grad_name(f.output.name)}
    for read in f.reads:
        if str(read.base.label) != x.name:
            continue
        for pi, pos in zip(p, read.indices, strict=True):
            if pi not in names and isinstance(pos, sp.Symbol) and pos.name not in used:
                names[pi] = pos.name
                used.add(pos.name)
    letters = iter("pqrsuvwabcdefghlmnoxyz")
    for pi in p:
        if pi not in names:
            n = next(letters)
            while n in used:
                n = next(letters)
            names[pi] = n
            used.add(n)
    return names


def _tidy(expr, names: dict, f: Formula):
    """Give fresh symbols readable names: gradient indices first, then each summation index its
    original name unless taken."""
    taken = set(names.values()) | {str(d) for d in f.dims} | {t.name for t in f.inputs}
    mapping = {p: sp.Symbol(n, integer=True) for p, n in names.items()}
    for s in [a for a in sp.preorder_traversal(expr) if isinstance(a, VALUE_REDUCTIONS)]:
        for var, _, _ in s.limits:
            if var in mapping:
                continue
            n, k = base_name(var), 2
            candidate = n
            while candidate in taken:
                candidate, k = f"{n}{k}", k + 1
            taken.add(candidate)
            mapping[var] = sp.Symbol(candidate, integer=True)
    return expr.xreplace(mapping), {p: mapping[p] for p in names}


def rename(f: Formula, tensors: dict, name: str | None = None) -> Formula:
    """The same formula with tensors renamed (inputs and output)."""
    swap = {b: sp.IndexedBase(tensors[str(b.label)], shape=b.shape, real=b.is_real, integer=b.is_integer)
            for b in f.body.atoms(sp.IndexedBase) if str(b.label) in tensors}
    swap.update({s: sp.Symbol(tensors[s.name], real=True) for s in f.scalars if s.name in tensors})
    shapes = {tensors.get(t.name, t.name): t.shape for t in f.inputs if t.rank}
    integer = {tensors.get(t.name, t.name) for t in f.inputs if t.integer}
    domains = {tensors.get(k, k): v for k, v in f.domains.items()}
    return Formula.from_parts(name or f.name, tensors.get(f.output.name, f.output.name), f.indices,
                              f.ranges, f.body.xreplace(swap), shapes, integer, domains, f.sizes)


def program_vjp(prog: Program, wrt=None) -> Program:
    """Reverse mode through the DAG: forward formulas, then each formula's VJPs in reverse order,
    with contributions to a tensor read by several formulas summed."""
    wanted = [t.name for t in prog.inputs if not t.integer] if wrt is None else list(wrt)
    formulas = list(prog.formulas)
    produced = {f.output.name for f in prog.formulas}
    consumers: dict[str, int] = {}
    for f in prog.formulas:
        for t in f.input_names:
            consumers[t] = consumers.get(t, 0) + 1
    contributions: dict[str, list] = {o: [grad_name(o)] for o in prog.outputs}
    # dead paths: a computed tensor that no wanted input reaches needs no gradient
    live = set(wanted)
    for _ in range(1 + len(prog.systems)):  # a system's states reach each other through later steps
        for f in prog.formulas:
            if any(t in live for t in f.input_names):
                live.add(f.output.name)
    system_of = {o: s for s in prog.systems for o in s.outputs}
    shapes = {t.name: t.shape for t in prog.inputs}
    shapes.update({f.output.name: f.output.shape for f in prog.formulas})
    for f in reversed(prog.formulas):
        if f.output.name in system_of:  # the adjoint system, once, where its last state comes
            if f.output.name == system_of[f.output.name].outputs[-1]:
                _system_vjp(prog, system_of[f.output.name], formulas, contributions, live, shapes, consumers)
            continue
        parts = contributions.get(f.output.name)
        if not parts or f.output.name not in live:
            continue  # does not reach an output, or no wanted input reaches it
        g = _accumulate(formulas, f.output.name, parts, shapes[f.output.name], f)
        upstream = {grad_name(f.output.name): g}
        if f.recurrence is not None:  # gradients read the adjoint recurrence, not grad_<out>
            from .recurrence import adjoint, adjoint_name, input_vjp
            total = f"{g}__bptt"
            formulas.append(rename(adjoint(f), {**upstream, adjoint_name(f): total},
                                   name=f"{prog.name}.bptt.{f.output.name}"))
            upstream = {adjoint_name(f): total}
        for x in f.inputs:
            if x.integer or x.name not in live:
                continue
            gf = input_vjp(f, x.name) if f.recurrence is not None else vjp(f, [x.name])[x.name]
            if gf.body == 0:
                continue  # this path contributes nothing (a constant branch)
            k = len(contributions.setdefault(x.name, []))
            alone = consumers[x.name] == 1 and x.name not in prog.outputs
            target = grad_name(x.name) if alone else f"{grad_name(x.name)}__{k}"
            formulas.append(rename(gf, {**upstream, grad_name(x.name): target},
                                   name=f"{prog.name}.vjp.{f.output.name}.{x.name}"))
            contributions[x.name].append(target)
    outs = []
    for n in wanted:
        if n not in produced and not any(n in f.input_names for f in prog.formulas):
            raise FormulaError(prog.name, f"input {n} does not reach the outputs {prog.outputs}")
        parts = contributions.get(n) or []
        outs.append(_accumulate(formulas, n, parts, shapes[n], None))
    return Program(formulas, name=f"{prog.name}.vjp", outputs=outs)


def _system_vjp(prog, system, formulas, contributions, live, shapes, consumers) -> None:
    """The adjoint system of a system of recurrences (autodiff/systems.py) and the gradients of
    its inputs, appended to `formulas`; contributions as for any formula."""
    from .systems import SystemGradient
    members = [prog.producer(o) for o in system.outputs]
    if not any(o in live for o in system.outputs):
        return
    sg = SystemGradient(members, system, f"{prog.name}.{'_'.join(system.outputs)}")
    upstream = {o: _accumulate(formulas, o, contributions[o], shapes[o], None)
                for o in system.outputs if contributions.get(o)}
    formulas += sg.adjoints(upstream)
    inputs = {t.name: t for f in members for t in f.inputs if t.name not in system.outputs}
    for x in inputs.values():
        if x.integer or x.name not in live:
            continue
        gf = sg.input_gradient(x.name)
        if gf is None:
            continue
        k = len(contributions.setdefault(x.name, []))
        outside = sum(1 for f in prog.formulas if x.name in f.input_names and f.output.name not in system.outputs)
        alone = outside == 0 and x.name not in prog.outputs
        target = grad_name(x.name) if alone else f"{grad_name(x.name)}__{k}"
        formulas.append(rename(gf, {grad_name(x.name): target}) if target != gf.output.name else gf)
        contributions[x.name].append(target)


def _accumulate(formulas, tensor, parts, shape, _f):
    """Name of the tensor that holds the total gradient of `tensor`, adding a sum formula if needed
    (no parts: the gradient is zero)."""
    if len(parts) == 1:
        return parts[0]
    target = grad_name(tensor) if grad_name(tensor) not in parts else f"{grad_name(tensor)}__total"
    idx = tuple(sp.Symbol(f"i{a}", integer=True) for a in range(len(shape)))
    reads = [sp.IndexedBase(p, real=True)[idx] if idx else sp.Symbol(p, real=True) for p in parts]
    shapes = {p: shape for p in parts} if idx else {}
    formulas.append(Formula.from_parts(f"accumulate.{tensor}", target, idx,
                                       {i: (0, d - 1) for i, d in zip(idx, shape, strict=True)},
                                       sp.Add(*reads), shapes))
    return target
