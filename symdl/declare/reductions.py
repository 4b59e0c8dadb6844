"""Reductions over indices besides SymPy's Sum: maxima (max pooling, row maxima for stable
softmax), minima and products.

    symdl.Max(x[b, 2*i + m], (m, 0, 1))      # ReduceMax: the largest value over m
    symdl.Min(x[i, k], k)                    # -ReduceMax(-x[i, k]): the smallest, the same routing
    ArgMax(f, limits, k)                     # coordinate k of the first maximiser (integer-valued)
    symdl.Product(x[i, k], k)                # ReduceProduct: Π_k x[i, k]

The derivative of a max is routed to its arg-max: d max_m f(m) = Σ_m [m = argmax] df(m). Ties go to
the first maximiser in the order of the limits (lexicographic), as in the frameworks. The derivative
of a product is the product of the other factors, written so that it stays right when a factor is 0
and costs O(1) per factor (ReduceProduct._eval_derivative).
"""
from __future__ import annotations

import itertools

import sympy as sp

_fresh = itertools.count()


def _limits(limits):
    out = []
    for lim in limits:
        if isinstance(lim, sp.Idx):
            out.append(sp.Tuple(lim, lim.lower, lim.upper))
        else:
            out.append(sp.Tuple(*[sp.sympify(a) for a in lim]))
    return out


class Sum(sp.Sum):
    """SymPy's Sum without its constructor's Piecewise folding, which pulls a guard out through
    inner sums and leaves their index unbound. symdl builds and rebuilds sums (autodiff, xreplace),
    so every Sum inside symdl is this one; it prints, compares and evaluates like SymPy's."""

    def __new__(cls, function, *symbols, **assumptions):
        obj = sp.Expr.__new__(cls, sp.sympify(function), *_limits(symbols))
        obj.is_commutative = obj.args[0].is_commutative
        return obj

    def _eval_derivative(self, s):
        d = sp.diff(self.function, s)
        return Sum(d, *self.limits) if d != 0 else sp.Integer(0)  # a zero term, not a loop adding 0


def _keep_reductions_whole():
    """SymPy folds a Piecewise found anywhere in a Piecewise condition (Max(0, Σ_m leaky(x[m]))
    becomes one) out to the top, through any Sum: the Sum's index then escapes its Sum. Folding
    stops at symdl's reductions, whose bodies are evaluated per index."""
    from sympy.functions.elementary import piecewise as module
    fold = module.piecewise_fold
    if getattr(fold, "symdl", False):
        return

    def outermost(e):
        if isinstance(e, (Sum, _Reduction)):
            yield e
        elif isinstance(e, sp.Basic):
            for a in e.args:
                yield from outermost(a)

    def piecewise_fold(expr, evaluate=True):
        if not isinstance(expr, sp.Basic):
            return fold(expr, evaluate)
        hidden = {r: sp.Dummy(real=True) for r in outermost(expr)}
        if not hidden:
            return fold(expr, evaluate)
        folded = fold(expr.xreplace(hidden), evaluate)
        return folded.xreplace({d: r for r, d in hidden.items()})

    piecewise_fold.symdl = True
    module.piecewise_fold = piecewise_fold


def as_symdl_sums(expr):
    """Every SymPy Sum (Product) in `expr` as a symdl Sum (ReduceProduct), limits normalised to
    (var, lo, hi)."""
    expr = expr.replace(lambda e: type(e) is sp.Product, lambda e: ReduceProduct(e.function, *e.limits))
    return expr.replace(lambda e: type(e) is sp.Sum, lambda e: Sum(e.function, *e.limits))


class _Reduction(sp.Expr):
    @property
    def function(self):
        return self.args[0]

    @property
    def variables(self):
        return [lim[0] for lim in self.limits]

    @property
    def free_symbols(self):
        free = self.function.free_symbols
        for var, lo, hi in reversed(self.limits):
            free = (free - {var}) | lo.free_symbols | hi.free_symbols
        return free


class _RangeReduction(_Reduction):
    """A reduction of `function` over the index ranges in `limits` ((var, lo, hi), inclusive)."""

    is_real = True

    def __new__(cls, function, *limits):
        return sp.Expr.__new__(cls, sp.sympify(function), *_limits(limits))

    @property
    def limits(self):
        return self.args[1:]


class ReduceMax(_RangeReduction):
    """max of `function` over the index ranges in `limits` ((var, lo, hi), inclusive)."""

    def _eval_derivative(self, s):
        # the arg-max gets its own bound variables: substituting the Sum's variables later (delta
        # elimination) must not reach inside it
        # ('__': declarations keep user names out of that namespace, declare/names.py)
        own = {v: sp.Symbol(f"{v.name}__a{next(_fresh)}", integer=True) for v in self.variables}
        limits = sp.Tuple(*[(own[v], lo.xreplace(own), hi.xreplace(own)) for v, lo, hi in self.limits])
        inner = self.function.xreplace(own)
        which = [sp.KroneckerDelta(var, ArgMax(inner, limits, k)) for k, var in enumerate(self.variables)]
        return Sum(sp.Mul(*which) * sp.diff(self.function, s), *self.limits)

    def _latex(self, printer):
        below = ", ".join(f"{printer._print(v)}={printer._print(lo)}..{printer._print(hi)}"
                          for v, lo, hi in self.limits)
        return rf"\max_{{{below}}} {printer._print(self.function)}"


class ArgMax(_Reduction):
    """Coordinate `k` of the first maximiser of `function` over `limits` (an integer)."""

    is_integer = True
    is_real = True

    def __new__(cls, function, limits, k=0):
        return sp.Expr.__new__(cls, sp.sympify(function), sp.Tuple(*_limits(limits)), sp.Integer(k))

    @property
    def limits(self):
        return self.args[1]

    @property
    def coordinate(self) -> int:
        return int(self.args[2])

    def _eval_derivative(self, s):
        return sp.Integer(0)


class ReduceProduct(_RangeReduction):
    """The product of `function` over the index ranges in `limits` ((var, lo, hi), inclusive)."""

    def _eval_derivative(self, s):
        # d Π_k f(k) = Σ_k (Π_{m≠k} f(m)) df(k). Not P / f(k): that divides by 0. The product of the
        # others is 0 when another factor is 0, else the product of the non-zero factors divided by
        # f(k) when f(k) is not 0: one product and one count of zeros, both independent of k (the
        # lowering computes them once), so the gradient costs what the forward does.
        own = {v: sp.Symbol(f"{v.name}__p{next(_fresh)}", integer=True) for v in self.variables}
        limits = [(own[v], lo.xreplace(own), hi.xreplace(own)) for v, lo, hi in self.limits]
        g, f = self.function.xreplace(own), self.function
        non_zero = ReduceProduct(sp.Piecewise((g, sp.Ne(g, 0)), (1, True)), *limits)
        zeros = Sum(sp.Piecewise((1, sp.Eq(g, 0)), (0, True)), *limits)
        none_among_others = sp.Or(sp.Eq(zeros, 0), sp.And(sp.Eq(zeros, 1), sp.Eq(f, 0)))
        others = non_zero * sp.Piecewise((1 / sp.Piecewise((f, sp.Ne(f, 0)), (1, True)), none_among_others),
                                         (0, True))
        return Sum(others * sp.diff(f, s), *self.limits)

    def _latex(self, printer):
        below = ", ".join(f"{printer._print(v)}={printer._print(lo)}..{printer._print(hi)}"
                          for v, lo, hi in self.limits)
        return rf"\prod_{{{below}}} {printer._print(self.function)}"


def Max(function, *limits) -> ReduceMax:
    """The maximum of `function` over index ranges: `symdl.Max(x[i, k], (k, 0, N - 1))` or an Idx."""
    return ReduceMax(function, *limits)


def Min(function, *limits) -> sp.Expr:
    """The minimum of `function` over index ranges, as -max(-function): ties and the gradient go to
    the first minimiser, as for Max. `symdl.Min(x[i, k], (k, 0, N - 1))` or an Idx."""
    return -ReduceMax(-sp.sympify(function), *limits)


def Product(function, *limits) -> ReduceProduct:
    """The product of `function` over index ranges: `symdl.Product(x[i, k], (k, 0, N - 1))` or an
    Idx; its gradient is the product of the other factors, right where a factor is 0."""
    return ReduceProduct(function, *limits)


REDUCTIONS = (sp.Sum, ReduceMax, ArgMax, ReduceProduct)
VALUE_REDUCTIONS = (sp.Sum, ReduceMax, ReduceProduct)  # those whose limits a formula's indices name


def limits_of(e) -> list:
    """The (var, lo, hi) limits a reduction binds."""
    return list(e.limits)


_keep_reductions_whole()
