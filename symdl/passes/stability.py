"""Stability rewrites: formulas that overflow or lose precision become equal ones that do not.

    >>> stable = stabilize(symdl.formulas.activations.softmax())     # Program in, Program out
    >>> [str(r) for r in stable.stability.rewrites]
    ['max-shift: p.exp, p.sum, p.divide -> p.max, p.exp, p.sum, p.divide']

Each rewrite replaces a small region of a Program (a few formulas) by formulas that compute the same
values, and records both sides (`Rewrite.before`, `Rewrite.after`), so that the verifier can prove
every region equal, forward and gradients (symdl.verify.equivalent), instead of expanding the whole
stabilized program. The rules, applied to a fixed point:

- `log-sigmoid`: log σ(x) -> -softplus(-x), log(1 - σ(x)) -> -softplus(x), log(1 + exp x) ->
  softplus(x), 1/(1 + exp(-x)) -> σ(x); softplus(x) and softplus(-x) in one sum merge as
  softplus(-x) = softplus(x) - x (so BCE on logits becomes softplus(z) - t z). A sigmoid stage read
  only under log is inlined into its readers first. The cpu backend prints σ and softplus stably.
- `log-softmax`: log(p) of a softmax stage p = exp(a) / Σ exp(a) -> a - log Σ exp(a) (the divide
  is dropped when nothing else reads p): cross-entropy on logits, log-softmax.
- `max-shift`: an exp stage e = exp(a) whose row sum S = Σ_s e is read only as ratios e / S or as
  log S gets the row maximum m = max_s a subtracted: e = exp(a - m), log S -> log S + m. Nothing
  overflows, and the derived gradient divides by S² only with S in [1, N]. Under a mask
  (Piecewise((exp(a), cond), (0, True))) the maximum runs over the unmasked entries.
- `logsumexp`: log(Σ_k exp(a)) inside a formula -> log(Σ_k exp(a - m)) + m, m a new max stage.

The gradient of the maximum cancels exactly (the shifted formulas do not depend on m); autodiff
routes a rounding-sized residual to the arg-max, which is harmless.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..declare.formula import Formula
from ..declare.functions import sigmoid, softplus
from ..declare.indexing import free_indices, index_symbol
from ..declare.program import Program
from ..declare.reductions import REDUCTIONS, ReduceMax, Sum


@dataclass(frozen=True)
class Rewrite:
    """One applied rule: the formulas it replaced and those that replace them (a closed region:
    the tensors `before` produces for the rest of the program are produced by `after` too)."""

    rule: str
    before: tuple
    after: tuple

    def __str__(self) -> str:
        return (f"{self.rule}: {', '.join(f.name for f in self.before)} -> "
                f"{', '.join(f.name for f in self.after)}")


@dataclass(frozen=True)
class Stabilized:
    """What `stabilize` did: the naive target and the rewrites, in order."""

    original: object
    rewrites: tuple


# What stabilize made, by the result's key(): the record behind `result.stability` (symdl show and
# the verifier read it). A value's key identifies its meaning; the rules make their formulas with
# Formula.from_parts, and key() tells those from declared ones.
_RECORDS: dict[str, Stabilized] = {}


def stabilize(target):
    """The target (Formula or Program) with every stability rewrite applied, or the target itself
    when none applies. `stability_of(result)` (`result.stability`) gives the `Stabilized` record
    for `symdl show` and for the verifier. A Formula comes back as a Program when a rewrite adds a
    stage."""
    prog = target if isinstance(target, Program) else Program([target], name=target.name)
    rewrites: list[Rewrite] = []
    for rule in RULES:
        while True:
            found = rule(prog)
            if found is None:
                break
            prog, rewrite = found
            rewrites.append(rewrite)
    if not rewrites:
        return target
    result = prog.formulas[0] if isinstance(target, Formula) and len(prog.formulas) == 1 else prog
    _RECORDS[result.key()] = Stabilized(target, tuple(rewrites))
    return result


def stability_of(target) -> Stabilized | None:
    """The record of the stabilize call that made `target`, None when stabilize did not make it."""
    return _RECORDS.get(target.key())


# -- expression rules --------------------------------------------------------------------------------

def _log_rule(e):
    """log σ(x) = -softplus(-x); log(1 - σ(x)) = -softplus(x); log(1 + exp(x)) = softplus(x)."""
    arg = e.args[0]
    if isinstance(arg, sigmoid):
        return -softplus(-arg.args[0])
    if isinstance(arg, sp.Add) and len(arg.args) == 2 and sp.Integer(1) in arg.args:
        other = arg.args[1] if arg.args[0] == 1 else arg.args[0]
        coeff, rest = other.as_coeff_Mul()
        if coeff == -1 and isinstance(rest, sigmoid):
            return -softplus(rest.args[0])
        if isinstance(other, sp.exp):
            return softplus(other.args[0])
    return e


def _reciprocal_rule(e):
    """1 / (1 + exp(-x)) = σ(x)."""
    base = e.base
    if isinstance(base, sp.Add) and len(base.args) == 2 and sp.Integer(1) in base.args:
        other = base.args[1] if base.args[0] == 1 else base.args[0]
        if isinstance(other, sp.exp):
            return sigmoid(-other.args[0])
    return e


def _merge_softplus(expr):
    """softplus(x) and softplus(-x) in one expression: softplus(-x) -> softplus(x) - x, products
    expanded, so t softplus(-z) + (1 - t) softplus(z) becomes softplus(z) - t z."""
    atoms = expr.atoms(softplus)
    # for s = softplus(y) with y = -x: softplus(y) = softplus(-y) + y
    swap = {s: softplus(-s.args[0]) + s.args[0] for s in atoms
            if s.args[0].could_extract_minus_sign() and softplus(-s.args[0]) in atoms}
    if not swap:
        return expr

    def visit(e):  # expand the body of each Sum, never a Sum itself (SymPy would split it)
        if isinstance(e, sp.Sum):
            return Sum(visit(e.function), *e.limits)
        if not e.has(sp.Sum):
            return sp.expand_mul(e)
        return e.func(*[visit(a) for a in e.args])
    return visit(expr.xreplace(swap))


def _expression_rules(body):
    new = body.replace(lambda e: isinstance(e, sp.log), _log_rule)
    new = new.replace(lambda e: isinstance(e, sp.Pow) and e.exp == -1, _reciprocal_rule)
    return _merge_softplus(new) if new != body else new


def rule_log_sigmoid(prog: Program):
    """Inline a sigmoid stage read under log, then the expression rules, in one formula."""
    for p in prog.formulas:
        if isinstance(p.body, sigmoid) and not p.body.has(*REDUCTIONS):
            readers = _readers(prog, p.output.name)
            if not readers:
                continue
            changed = [(c, _inline_log_reads(c.body, p)) for c in readers]
            if any(b == c.body for c, b in changed):
                continue  # a reader that never takes its log: leave this stage alone
            keep = _still_read(p, changed, prog)
            after = ([p] if keep else []) + [_remake(c, _merge_softplus(_expression_rules(b)), prog)
                                             for c, b in changed]
            return _replace(prog, [p, *readers], after, "log-sigmoid")
    for f in prog.formulas:
        body = _expression_rules(f.body)
        if body != f.body:
            return _replace(prog, [f], [_remake(f, body, prog)], "log-sigmoid")
    return None


def _inline_log_reads(body, p: Formula):
    """log(p[J]) and log(1 - p[J]) for a sigmoid stage p, written on its argument."""
    name = p.output.name

    def rule(e):
        arg = e.args[0]
        inner = [r for r in arg.atoms(sp.Indexed) if str(r.base.label) == name]
        if len(inner) != 1:
            return e
        read = inner[0]
        if arg != read and arg != 1 - read:
            return e
        value = p.body.xreplace(dict(zip(p.indices, read.indices, strict=True)))
        return _log_rule(sp.log(arg.xreplace({read: value})))
    return body.replace(lambda e: isinstance(e, sp.log), rule)


# -- softmax rules ---------------------------------------------------------------------------------

def _exp_stage(f: Formula):
    """(a, cond) when f is e[..., s] = exp(a) (cond None) or Piecewise((exp(a), cond), (0, True))."""
    body = f.body
    if not f.indices or body.has(*REDUCTIONS):
        return None
    if isinstance(body, sp.exp):
        return body.args[0], None
    if isinstance(body, sp.Piecewise) and len(body.args) == 2 and body.args[1] == (0, True) \
            and isinstance(body.args[0][0], sp.exp):
        return body.args[0][0].args[0], body.args[0][1]
    return None


def _row_sum(f: Formula, e: Formula) -> bool:
    """Whether f is S[I] = Σ_k e[I, k] over e's whole last axis."""
    body = f.body
    if not isinstance(body, sp.Sum) or len(body.limits) != 1 or len(f.indices) != len(e.indices) - 1:
        return False
    k, lo, hi = body.limits[0]
    read = body.function
    return (isinstance(read, sp.Indexed) and str(read.base.label) == e.output.name
            and tuple(read.indices) == (*f.indices, k) and lo == 0
            and sp.expand(hi - e.ranges[e.indices[-1]][1]) == 0)


def _ratio_or_log_only(body, e_name: str, s_name: str) -> bool:
    """Whether e and S are read only as ratios e[J, k] / S[J] or as log(S[J])."""
    done = sp.Symbol("_done")

    def fold(x):
        if isinstance(x, sp.log) and isinstance(x.args[0], sp.Indexed) and str(x.args[0].base.label) == s_name:
            return done
        if isinstance(x, sp.Mul):
            args = list(x.args)
            for a in list(args):
                if isinstance(a, sp.Indexed) and str(a.base.label) == e_name:
                    den = [d for d in args if isinstance(d, sp.Pow) and d.exp == -1
                           and isinstance(d.base, sp.Indexed) and str(d.base.base.label) == s_name
                           and tuple(d.base.indices) == tuple(a.indices[:-1])]
                    if den:
                        args.remove(a)
                        args.remove(den[0])
                        args.append(done)
            return sp.Mul(*args)
        return x
    folded = body.replace(lambda x: isinstance(x, (sp.log, sp.Mul)), fold)
    return not any(str(r.base.label) in (e_name, s_name) for r in folded.atoms(sp.Indexed))


def rule_log_softmax(prog: Program):
    """log(e[J] / S[J']) of a softmax divide stage -> a(J) - log S[J']."""
    for p in prog.formulas:
        body = p.body
        if not (isinstance(body, sp.Mul) and len(body.args) == 2):
            continue
        num = next((a for a in body.args if isinstance(a, sp.Indexed)), None)
        den = next((a for a in body.args if isinstance(a, sp.Pow) and a.exp == -1
                    and isinstance(a.base, sp.Indexed)), None)
        if num is None or den is None or tuple(num.indices) != tuple(p.indices):
            continue
        e = _producer(prog, str(num.base.label))
        s = _producer(prog, str(den.base.base.label))
        found = _exp_stage(e) if e is not None else None
        if found is None or found[1] is not None or s is None or not _row_sum(s, e) \
                or tuple(den.base.indices) != tuple(p.indices[:-1]):
            continue
        a = found[0]
        name = p.output.name

        def rule(x, a=a, e=e, s_name=str(den.base.base.label)):
            read = x.args[0]
            if not (isinstance(read, sp.Indexed) and str(read.base.label) == name):
                return x
            value = a.xreplace(dict(zip(e.indices, read.indices, strict=True)))
            return value - sp.log(sp.IndexedBase(s_name)[tuple(read.indices[:-1])])
        readers = [c for c in _readers(prog, name) if c.body.has(sp.log)]
        changed = [(c, c.body.replace(lambda x: isinstance(x, sp.log), rule)) for c in readers]
        changed = [(c, b) for c, b in changed if b != c.body]
        if not changed:
            continue
        keep = _still_read(p, changed, prog)
        after = [e] + ([p] if keep else []) + [_remake(c, b, prog) for c, b in changed]
        return _replace(prog, [e, p, *[c for c, _ in changed]], after, "log-softmax")
    return None


def rule_max_shift(prog: Program):
    """Subtract the row maximum inside an exp stage whose row sum is read as ratios or logs."""
    for e in prog.formulas:
        found = _exp_stage(e)
        if found is None or any(str(r.base.label) in _shifted(prog) for r in e.reads):
            continue
        a, cond = found
        sums = [s for s in _readers(prog, e.output.name) if _row_sum(s, e)]
        if len(sums) != 1:
            continue
        s = sums[0]
        if e.output.name in prog.outputs or s.output.name in prog.outputs:
            continue
        readers = [c for c in {*_readers(prog, e.output.name), *_readers(prog, s.output.name)} if c is not s]
        readers.sort(key=prog.formulas.index)
        if not all(_ratio_or_log_only(c.body, e.output.name, s.output.name) for c in readers):
            continue
        stages = _max_stages(prog, e, a, cond)
        mx = stages[-1]
        m_read = sp.IndexedBase(mx.output.name)[e.indices[:-1]]
        shifted = sp.exp(a - m_read)
        new_e = _remake(e, shifted if cond is None else sp.Piecewise((shifted, cond), (0, True)), prog,
                        {mx.output.name: mx.output.shape})
        s_name, m_name = s.output.name, mx.output.name

        def add_max(x):
            read = x.args[0]
            if isinstance(read, sp.Indexed) and str(read.base.label) == s_name:
                return x + sp.IndexedBase(m_name)[read.indices]
            return x
        after = [*stages, new_e, s]
        for c in readers:
            body = c.body.replace(lambda x: isinstance(x, sp.log), add_max)
            after.append(c if body == c.body else _remake(c, body, prog, {m_name: mx.output.shape}))
        return _replace(prog, [e, s, *readers], after, "max-shift")
    return None


def _shifted(prog) -> set:
    """Tensors that are already row maxima (a stage that reads one is already shifted)."""
    return {f.output.name for f in prog.formulas if isinstance(f.body, ReduceMax)}


def _max_stages(prog, e: Formula, a, cond) -> list:
    """[low, masked,] m[I] = max_s a: the formulas computing the row maximum of an exp stage.
    Under a mask the masked entries stand in as the row minimum `low` (finite, and no larger than
    any unmasked entry), so the maximum is the unmasked one. (A -inf stand-in would store
    infinities; a max bounded by an output index trips delta elimination; the diagonal entry as
    stand-in gives a gradient that loop-cost counting overestimates.)"""
    s = e.indices[-1]
    outer = e.indices[:-1]
    lo, hi = e.ranges[s]
    base = e.output.name[:-4] if e.output.name.endswith("_exp") else e.output.name
    stage = e.name[:-4] if e.name.endswith(".exp") else base  # named like its sibling stages
    k = index_symbol(f"{s.name}_m")
    ranges = {i: e.ranges[i] for i in outer}
    stages, src = [], a

    def add(suffix, indices, ranges_, body):
        name = _fresh(prog, f"{base}_{suffix}")
        shapes = {**_shapes(prog, body, e), **{st.output.name: st.output.shape for st in stages}}
        stages.append(Formula.from_parts(f"{stage}.{suffix}", name, indices, ranges_, body, shapes,
                                         _integers(prog), e.domains, e.sizes))
        return sp.IndexedBase(name)
    if cond is not None:
        low = add("low", outer, ranges, -ReduceMax(-a.xreplace({s: k}), (k, lo, hi)))
        masked = add("masked", e.indices, e.ranges, sp.Piecewise((a, cond), (low[outer], True)))
        src = masked[e.indices]
    add("max", outer, ranges, ReduceMax(src.xreplace({s: k}), (k, lo, hi)))
    return stages


def rule_logsumexp(prog: Program):
    """log(Σ_k exp(a)) inside a formula -> log(Σ_k exp(a - m)) + m with a new max stage m."""
    for f in prog.formulas:
        hit = _find_lse(f.body, dict(f.ranges), _shifted(prog))
        if hit is None:
            continue
        node, scope = hit
        total = node.args[0]
        (k, lo, hi), = total.limits
        a = total.function.args[0]
        free = free_indices(total, f.all_indices)
        idx = tuple([i for i in f.indices if i in free] + sorted(free - set(f.indices), key=str))
        name = _fresh(prog, f"{f.output.name}_max")
        body = ReduceMax(a, (k, lo, hi))
        mx = Formula.from_parts(f"{name}.max", name, idx, {i: scope[i] for i in idx}, body,
                                _shapes(prog, body, f), _integers(prog), f.domains, f.sizes)
        m = sp.IndexedBase(name)[idx] if idx else sp.Symbol(name, real=True)
        new = sp.log(Sum(sp.exp(a - m), (k, lo, hi))) + m
        new_f = _remake(f, f.body.xreplace({node: new}), prog, {name: mx.output.shape})
        return _replace(prog, [f], [mx, new_f], "logsumexp")
    return None


def _find_lse(e, scope, shifted: set):
    """The first log(Sum(exp(a), one limit)) in e not yet shifted by a max, with the ranges of the
    indices in scope."""
    if isinstance(e, sp.log) and isinstance(e.args[0], sp.Sum) and len(e.args[0].limits) == 1 \
            and isinstance(e.args[0].function, sp.exp) and not e.args[0].function.has(*REDUCTIONS) \
            and not any(str(r.base.label) in shifted for r in e.atoms(sp.Indexed)):
        return e, scope
    if isinstance(e, sp.Sum):
        inner = dict(scope)
        for var, lo, hi in e.limits:
            inner[var] = (lo, hi)
        return _find_lse(e.function, inner, shifted)
    for arg in e.args:
        if isinstance(arg, sp.Basic) and not isinstance(arg, sp.Indexed):
            hit = _find_lse(arg, scope, shifted)
            if hit is not None:
                return hit
    return None


RULES = (rule_log_sigmoid, rule_log_softmax, rule_max_shift, rule_logsumexp)


# -- helpers -----------------------------------------------------------------------------------------

def _readers(prog: Program, name: str) -> list:
    return [f for f in prog.formulas if name in f.input_names]


def _producer(prog: Program, name: str):
    return next((f for f in prog.formulas if f.output.name == name), None)


def _still_read(p: Formula, changed: list, prog: Program) -> bool:
    """Whether p's output is still needed once the (reader, new body) pairs in `changed` apply."""
    name = p.output.name
    replaced = [c for c, _ in changed]
    if name in prog.outputs or any(c not in replaced for c in _readers(prog, name)):
        return True
    return any(str(r.base.label) == name for _, b in changed for r in b.atoms(sp.Indexed))


def _all_shapes(prog: Program) -> dict:
    shapes = {t.name: t.shape for t in prog.inputs}
    shapes.update({f.output.name: f.output.shape for f in prog.formulas})
    return shapes


def _shapes(prog: Program, body, own: Formula | None = None) -> dict:
    """Shapes of the tensors `body` reads: as formula `own` reads them, else as the program has them."""
    known = _all_shapes(prog)
    if own is not None:
        known.update({t.name: t.shape for t in own.inputs})
    return {n: known[n] for n in {str(b.label) for b in body.atoms(sp.IndexedBase)} if n in known and known[n]}


def _integers(prog: Program) -> set:
    return {t.name for t in prog.inputs if t.integer}


def _fresh(prog: Program, name: str) -> str:
    taken = set(_all_shapes(prog))
    out, n = name, 2
    while out in taken:
        out, n = f"{name}{n}", n + 1
    return out


def _remake(f: Formula, body, prog: Program, extra: dict | None = None) -> Formula:
    """f with a new body (same name, output, indices, domains and sizes)."""
    shapes = {**_shapes(prog, body, f), **(extra or {})}
    return Formula.from_parts(f.name, f.output.name, f.indices, f.ranges, body, shapes,
                              {t.name for t in f.inputs if t.integer} | _integers(prog), f.domains, f.sizes)


def _replace(prog: Program, before: list, after: list, rule: str):
    before = list(dict.fromkeys(before))
    keep = [f for f in prog.formulas if f not in before]
    new = Program([*keep, *after], name=prog.name, outputs=prog.outputs)
    return new, Rewrite(rule, tuple(before), tuple(after))
