"""Symbolic verification: the derived gradient formulas equal sympy.diff of the scalar expansion."""
from __future__ import annotations

import functools
import signal
import threading
import time
import warnings

import mpmath
import numpy as np
import sympy as sp

from ..autodiff import grad_name
from .expand import Tensors, element, expand, expand_program, normalise
from ..reference.inputs import input_shapes, as_program_if_recurrent, default_sizes, random_inputs


class Undecided(AssertionError):
    """The exact comparison of a gradient element ran out of time (raised with `strict=True`): the
    derived and the sympy.diff expressions agree at every random point tried, to 30 digits, but
    SymPy did not reduce their difference to 0 within the time limit."""


class SymbolicResult(int):
    """The number of gradient elements checked (an int, as `symbolic` always returned), with
    `undecided`: the elements, as (input name, index), whose exact proof timed out although they
    agree numerically at every random point tried. `proven` = checked - len(undecided)."""

    undecided: tuple = ()

    def __new__(cls, checked: int, undecided=()):
        self = super().__new__(cls, checked)
        self.undecided = tuple(undecided)
        return self

    @property
    def proven(self) -> int:
        return int(self) - len(self.undecided)

    def __repr__(self) -> str:
        return f"SymbolicResult({int(self)}, undecided={len(self.undecided)})"


PRECISION = 30      # decimal digits of the random-point evaluations
RELATIVE = 1e-15    # a difference above this, relative to the terms' size, is a counterexample
POINTS = 3          # random rational points tried per gradient element before any simplification
TIME_LIMIT = 20.0   # seconds of exact simplification per gradient element


def symbolic(target, sizes: dict | None = None, wrt=None, seed: int = 0, time_limit: float | None = TIME_LIMIT,
             strict: bool = False) -> SymbolicResult:
    """Expand `target` (a Formula or Program) to scalars at small `sizes`, differentiate each
    scalar with sympy.diff, and compare with the expansion of the derived VJP formulas.

    Each gradient element is first evaluated, both ways, at a few random rational points inside the
    inputs' domains with 30-digit arithmetic (mpmath): a difference there is a counterexample, and
    AssertionError names the tensor, the element, the point and both values, in well under a second.
    Only an element that agrees at every point goes on to the exact test (expand, cancel, then
    sympy.simplify), which must reduce the difference to 0. Float constants (an `eps = 1e-5`) are
    compared as the rationals they print as, on both sides.

    Each element's exact test may take `time_limit` seconds (None: unbounded; enforced with SIGALRM
    in the main thread only). An element whose proof runs out of time is *undecided*: it is listed
    in the result's `undecided` (and a warning says so) or, with `strict=True`, raises `Undecided`
    (an AssertionError). Returns a `SymbolicResult`: an int, the number of gradient elements
    checked, as before, with `.undecided` and `.proven`.

    A target made by `symdl.passes.stabilize` is proven through its original: each rewrite's region
    is proven equal (symdl.verify.equivalent), then the original is checked as above (expanding the
    row maxima of a whole stabilized attention program takes minutes; its regions take seconds)."""
    if getattr(target, "stability", None) is not None:
        from .equivalent import rewrites_hold
        rewrites_hold(target)
        return symbolic(target.stability.original, sizes, wrt, seed, time_limit, strict)
    target = as_program_if_recurrent(target)
    sizes = {str(k): int(v) for k, v in (sizes or default_sizes(target)).items()}
    shapes = input_shapes(target, sizes)
    rng = np.random.default_rng(seed)
    ints = {t.name: v for t, v in ((t, random_inputs(target, sizes, rng).get(t.name))
                                   for t in target.inputs) if t.integer}
    forward = Tensors(shapes, ints)
    expand_program(target, sizes, forward)
    outs = getattr(target, "outputs", None) or (target.output.name,)
    gshapes = dict(shapes)
    for o in outs:
        gshapes[grad_name(o)] = forward.shapes[o]
    objective = sp.Add(*[_seed(o, idx) * v for o in outs for idx, v in forward.values[o].items()])
    derived = derived_gradients(target, wrt, sizes, gshapes, ints)
    name = getattr(target, "name", target)
    domains = dict(getattr(target, "domains", {}) or {})
    checked, undecided = 0, []
    for t in target.inputs:
        if t.integer or (wrt is not None and t.name not in wrt):
            continue
        for idx, got in derived[t.name].items():
            var = element(t.name, idx) if t.rank else sp.Symbol(t.name, real=True)
            want = rational(sp.diff(objective, var))
            got = rational(got)
            where = f"{name}: d/d{t.name}{list(idx)} at sizes {sizes}"
            bad = counterexample(want, got, domains, np.random.default_rng([seed, checked]))
            if bad is not None:
                point, w, g = bad
                shown = ", ".join(f"{s} = {v}" for s, v in point.items())
                raise AssertionError(f"{where}: the derived gradient differs from sympy.diff at the point "
                                     f"{{{shown}}}:\n  sympy.diff = {w}\n  derived    = {g}\n"
                                     f"  sympy.diff: {_short(want)}\n  derived:    {_short(got)}")
            deadline = None if time_limit is None else time.monotonic() + time_limit
            verdict = _timed(deadline, lambda: _quick_zero(want - got) or _zero(normalise(want - got)))
            if verdict is None:
                undecided.append((t.name, idx))
                if strict:
                    raise Undecided(f"{where}: undecided: equal at {POINTS} random points to {PRECISION} "
                                    f"digits, but no exact proof within time_limit={time_limit} s")
            elif not verdict:
                raise AssertionError(f"{where}: the difference does not simplify to 0, although both sides "
                                     f"agree at {POINTS} random points to {PRECISION} digits (a difference "
                                     f"only at ties, or one SymPy cannot reduce: constants written as "
                                     f"sympy.Rational compare exactly):\n  sympy.diff: {want}\n  derived:    {got}")
            checked += 1
    if undecided:
        warnings.warn(f"{name}: {len(undecided)} of {checked} gradient elements undecided (equal at random "
                      f"points to {PRECISION} digits; exact proof took over {time_limit} s each)",
                      stacklevel=2)
    return SymbolicResult(checked, undecided)


def rational(e):
    """Float constants as the rationals they print as (1e-5 -> 1/100000), so that a formula's
    `eps` compares exactly with itself after sympy.diff and autodiff have each rearranged it."""
    floats = e.atoms(sp.Float)
    if not floats:
        return e
    return e.xreplace({x: sp.nsimplify(x, rational=True) for x in floats})


def counterexample(want, got, domains: dict, rng, points: int = POINTS):
    """(point, want value, got value) at the first of `points` random rational points where the two
    expressions differ beyond RELATIVE at PRECISION digits (or `got` is NaN/inf where `want` is
    finite); None when they agree at all. Points where `want` itself is not finite are outside
    the formula's domain and are redrawn."""
    symbols = sorted(want.free_symbols | got.free_symbols, key=str)
    with mpmath.workdps(PRECISION):
        tried = 0
        for _ in range(4 * points):
            point = {s: _draw(s, domains, rng) for s in symbols}
            env = {s: mpmath.mpf(v.p) / v.q for s, v in point.items()}
            memo: dict = {_EXACT: point}
            w, g = mp_value(want, env, memo), mp_value(got, env, memo)
            if not _finite(w):
                continue
            tried += 1
            if not _finite(g) or not abs(w - g) <= RELATIVE * (1 + abs(w) + abs(g)):
                return point, mpmath.nstr(w, 17), mpmath.nstr(g, 17)
            if tried == points:
                break
    return None


def _draw(symbol, domains, rng):
    """A random rational inside the symbol's tensor's domain (strictly inside: no relu kinks at
    the ends), with a denominator large enough that two draws almost never tie."""
    lo, hi = _domain(domains.get(symbol.name.split("[")[0], (-1.0, 1.0)))
    return lo + (hi - lo) * sp.Rational(int(rng.integers(1, 999_983)), 999_983)


@functools.lru_cache(maxsize=None)
def _domain(bounds) -> tuple:
    return tuple(sp.Rational(str(b)) for b in bounds)


def _finite(v) -> bool:
    try:
        return bool(mpmath.isfinite(v))
    except TypeError:  # a complex value (a log of a negative): not a real number
        return False


def _sigmoid(x):
    return 1 / (1 + mpmath.exp(-x))


def _softplus(x):
    return mpmath.log1p(mpmath.exp(x)) if x < 0 else x + mpmath.log1p(mpmath.exp(-x))


MP_FUNCTIONS = {sp.exp: mpmath.exp, sp.log: mpmath.log, sp.tanh: mpmath.tanh, sp.sinh: mpmath.sinh,
                sp.cosh: mpmath.cosh, sp.sin: mpmath.sin, sp.cos: mpmath.cos, sp.Abs: abs,
                sp.sign: mpmath.sign, sp.floor: mpmath.floor, sp.ceiling: mpmath.ceil,
                sp.Heaviside: lambda x, *h: mpmath.mpf(1 if x > 0 else 0)}
MP_RELATIONS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b,
                ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


_EXACT = object()  # memo key of the exact rational point


def mp_value(e, env: dict, memo: dict):
    """`e` at the point `env` (symbol -> mpf) in mpmath arithmetic, walking the tree once (shared
    subexpressions memoised): no SymPy objects are built, so this costs milliseconds where
    lambdify or evalf(subs=) cost seconds on a large expansion. NaN where undefined."""
    hit = memo.get(e)
    if hit is not None:
        return hit
    try:
        v = _mp(e, env, memo)
    except (ZeroDivisionError, ValueError, OverflowError, TypeError, AttributeError):
        v = mpmath.nan
    memo[e] = v
    return v


def _mp(e, env, memo):
    if e.is_Symbol:
        return env[e]
    if e.is_Rational:
        return mpmath.mpf(e.p) / e.q
    if e.is_Number:
        return mpmath.mpf(str(sp.Float(e, PRECISION))) if e.is_finite else mpmath.nan
    if e is sp.true or e is sp.false:
        return bool(e)
    args = e.args
    if isinstance(e, sp.Add):
        return mpmath.fsum(mp_value(a, env, memo) for a in args)
    if isinstance(e, sp.Mul):
        out = mpmath.mpf(1)
        for a in args:
            out *= mp_value(a, env, memo)
        return out
    if isinstance(e, sp.Pow):
        base, exp = mp_value(args[0], env, memo), args[1]
        if exp.is_Integer:
            return base ** int(exp)
        if base < 0:
            return mpmath.nan  # a root of a negative number: not real
        return base ** mp_value(exp, env, memo)
    if isinstance(e, sp.Piecewise):
        for value, cond in args:
            if mp_value(cond, env, memo):
                return mp_value(value, env, memo)
        return mpmath.nan
    if isinstance(e, sp.core.relational.Relational):
        return MP_RELATIONS[e.rel_op](mp_value(args[0], env, memo), mp_value(args[1], env, memo))
    if isinstance(e, sp.And):
        return all(mp_value(a, env, memo) for a in args)
    if isinstance(e, sp.Or):
        return any(mp_value(a, env, memo) for a in args)
    if isinstance(e, sp.Not):
        return not mp_value(args[0], env, memo)
    if isinstance(e, sp.ITE):
        return mp_value(args[1] if mp_value(args[0], env, memo) else args[2], env, memo)
    if isinstance(e, (sp.Xor, sp.Implies, sp.Equivalent)):
        return bool(e.func(*[sp.true if mp_value(a, env, memo) else sp.false for a in args]))
    if isinstance(e, (sp.Max, sp.Min)):
        values = [mp_value(a, env, memo) for a in args]
        return max(values) if isinstance(e, sp.Max) else min(values)
    if e.func.__name__ == "sigmoid":
        return _sigmoid(mp_value(args[0], env, memo))
    if e.func.__name__ == "softplus":
        return _softplus(mp_value(args[0], env, memo))
    fn = MP_FUNCTIONS.get(e.func)
    if fn is not None:
        return fn(*[mp_value(a, env, memo) for a in args])
    # anything else: SymPy's own evaluation at the exact point
    value = e.xreplace({s: memo[_EXACT][s] for s in e.free_symbols})
    if isinstance(value, sp.logic.boolalg.Boolean):
        if value is sp.true or value is sp.false:
            return bool(value)
        raise ValueError(f"condition {e} undecided at the point")
    value = sp.N(value, PRECISION)
    return mpmath.mpf(str(value)) if value.is_real else mpmath.nan


class _Timeout(BaseException):
    """Raised by the alarm inside SymPy (a BaseException: SymPy's `except Exception` lets it by)."""


def _timed(deadline, fn):
    """fn() within the time left before `deadline`; None when it ran out. The bound needs SIGALRM,
    so it holds in the main thread of a POSIX process where no other alarm is set; elsewhere fn
    runs unbounded."""
    if deadline is None:
        return fn()
    left = deadline - time.monotonic()
    if left <= 0:
        return None
    usable = (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
              and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
              and signal.getitimer(signal.ITIMER_REAL)[0] == 0)
    if not usable:
        return fn()

    def alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:
        return None
    finally:
        signal.signal(signal.SIGALRM, previous)


def _short(e, limit: int = 400) -> str:
    text = str(e)
    return text if len(text) <= limit else text[:limit] + " ..."


# symdl's own functions, for lambdify (NumPy knows exp and tanh, not these)
SYMDL_FUNCTIONS = {"sigmoid": lambda x: 0.5 * (1 + np.tanh(0.5 * x)),
                   "softplus": lambda x: np.logaddexp(0.0, x)}


def _zero(diff, exact=None, depth: int = 0) -> bool:
    """Exact zero test. A difference of Piecewise expressions is zero when it vanishes exactly in
    every region its conditions carve out. The regions are found by witnesses: random points
    classify every condition (`e > 0` or `e >= 0`, e's sign fixed); each region seen is then
    substituted and must simplify to exactly 0. Ties (e = 0) have measure zero and are the
    frameworks' convention, not a property of the derivative, so they are not required to agree;
    but an explicit test `e == 0` (a product's zero factor) is what the formula is about: each such
    zero set is substituted (e solved for one symbol) and checked too, up to three deep."""
    if diff == 0:
        return True
    rels = list(diff.atoms(sp.core.relational.Relational))
    exact = exact or _exact_zero
    if not rels:
        return exact(diff)
    canon = {r: _canonical(r) for r in rels}
    keys = sorted({k for k, _ in canon.values()}, key=sp.default_sort_key)
    symbols = sorted(set().union(*[k[0].free_symbols for k in keys]), key=str)
    evaluate = sp.lambdify(symbols, [k[0] for k in keys], modules=[SYMDL_FUNCTIONS, "numpy"],
                           dummify=True)
    rng = np.random.default_rng(0)
    regions = set()
    with np.errstate(all="ignore"):
        for scale in (2.0, 0.5, 20.0):
            for _ in range(128):
                point = rng.uniform(-scale, scale, len(symbols))
                values = evaluate(*point)
                if not np.all(np.isfinite(values)):  # outside the domain: no region to witness
                    continue
                regions.add(tuple(bool(v > 0) if op == ">" else bool(v >= 0) if op == ">=" else bool(v == 0)
                                  for v, (_, op) in zip(values, keys, strict=True)))
    for region in regions:
        truth = dict(zip(keys, region, strict=True))
        piece = diff.xreplace({r: sp.true if truth[k] == positive else sp.false
                               for r, (k, positive) in canon.items()})
        if not exact(sp.piecewise_fold(piece)):
            return False
    for e, op in keys if depth < 3 else ():
        linear = [v for v in sorted(e.free_symbols, key=str) if op == "==" and sp.degree(e, v) == 1]
        if linear and not _zero(diff.subs(linear[0], sp.solve(e, linear[0])[0]), exact, depth + 1):
            return False
    return True


def _exact_zero(e) -> bool:
    e = sp.expand(e)
    if e == 0:
        return True
    e = sp.cancel(sp.together(e))
    return e == 0 or _radicals_zero(e) or sp.simplify(e) == 0


def _quick_zero(diff) -> bool:
    """Before expanding (which multiplies out a layer norm's sums into thousands of terms): a
    difference free of conditions that is a rational function of square roots."""
    return not diff.has(sp.Piecewise, sp.Heaviside, sp.DiracDelta) and _radicals_zero(diff)


def _radicals_zero(e) -> bool:
    """Exact zero test for rational functions of square roots (a layer norm's 1/sqrt(v + eps),
    where sympy.simplify takes minutes): each b**(k/2) becomes r**k, the numerator over a common
    denominator is reduced modulo r**2 - b, and must vanish. False when it does not apply or the
    remainder is not 0 (inconclusive: simplify decides)."""
    pows = {p for p in e.atoms(sp.Pow) if not p.exp.is_Integer}
    if not pows or any(not p.exp.is_Rational or p.exp.q != 2 for p in pows):
        return False
    roots, swap = {}, {}
    for p in pows:
        base = sp.expand(p.base)
        if base.atoms(sp.Pow) & pows:
            return False  # nested radicals
        r = roots.setdefault(base, sp.Dummy("r", positive=True))
        swap[p] = r ** int(2 * p.exp)
    num = sp.expand(sp.numer(sp.together(e.xreplace(swap))))
    for base, r in roots.items():
        if num == 0:
            break
        num = sp.expand(sp.rem(sp.Poly(num, r), sp.Poly(r ** 2 - base, r)).as_expr())
    return num == 0


def _canonical(rel):
    """(key, positive): `rel` holds iff key holds (positive) or fails; key is (e, '>' or '>=')."""
    e = sp.expand(rel.lhs - rel.rhs)
    op = rel.rel_op
    if op in ("==", "!="):  # e != 0 <=> not (e == 0), and -e == 0 <=> e == 0
        return ((-e if e.could_extract_minus_sign() else e, "=="), op == "==")
    strict = {">": True, ">=": False, "<": False, "<=": True}[op]  # a < b <=> not (a - b >= 0)
    positive = op in (">", ">=")
    if e.could_extract_minus_sign():  # e > 0 <=> not (-e >= 0)
        e, strict, positive = -e, not strict, not positive
    return ((e, ">" if strict else ">="), positive)


def _seed(o, idx):
    return element(grad_name(o), idx) if idx else sp.Symbol(grad_name(o), real=True)


def derived_gradients(target, wrt, sizes, gshapes, ints) -> dict:
    """{input name: {index: expansion of its derived gradient}}: the one place verification obtains
    `target.vjp()` (the mutation tests replace the derived formulas here)."""
    tensors = Tensors(gshapes, ints)
    if hasattr(target, "formulas"):
        expand_program(target.vjp(wrt), sizes, tensors)
        return {t.name: tensors.values[grad_name(t.name)] for t in target.inputs
                if not t.integer and (wrt is None or t.name in wrt)}
    out = {}
    for name, g in target.vjp(wrt).items():
        dims = {k: v for k, v in sizes.items()}
        t = target.input(name)
        grad_out = expand(g, dims, tensors) if True else None
        out[name] = grad_out
        tensors.values.pop(g.output.name, None)
        tensors.shapes[g.output.name] = t.shape
    return out


_derived = derived_gradients  # the name equivalent.py imports
