"""How a loop nest of the IR maps onto GPU threads (pure analysis of the IR; printing is codegen's).

The shapes, tried in this order (codegen._thread_map):

- `ThreadMap` with `atomic` (`atomic_map`): a nest of scatter-adds (a gather's gradient, max
  pooling's). Its top loops, perfectly nested with rectangular bounds, flatten into one thread
  index whether the IR marks them parallel or not: each iteration keeps its scalars to itself
  (accumulates only into its own temporaries), reads no tensor the nest writes, and every store
  uses all the flattened variables as whole indices; scatter-adds, which two iterations may send
  to one element, print as `cuda.atomic.add`.
- `ThreadMap` (`thread_map`): the nest ends in a loop the IR marks parallel. That loop and the
  loops perfectly nested in it with rectangular bounds (the output indices) flatten into one
  thread index, one thread per output element; everything inside stays as in the IR (register
  accumulators, inner loops). Statements before the parallel loop run in every thread, unless
  they sum over a dimension's length (`prefix_reduction`): then once, as a `Reduction`.
  Where each thread runs sums (`split_sums`, the same shape as `Reduction`), the driver may split
  them between several threads per output when outputs are few and sums long.
- `ThreadMap` from `atomic_map` for a nest the IR does not mark parallel whose iterations are
  independent (zeroing a scatter's output).
- `Reduction`: no parallel loop, and the nest is scalar statements plus sum reductions
  `acc = 0; for v: ... acc += ...` whose loops read no other sum (a loss, a scalar gradient). Each
  reduction loop is spread over the threads of a grid; blocks reduce in shared memory and write one
  partial sum each; a second kernel adds the partials and runs the scalar statements.
- anything else: `None`, and one thread runs the nest serially (correct; only fine at tiny sizes).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ...loops.ir import Accumulate, If, Let, Loop, Nest, ScatterAdd, Store


@dataclass(frozen=True)
class ThreadMap:
    prefix: tuple  # statements before the parallel loop: every thread runs them
    loops: tuple   # the flattened loops, outermost first
    body: tuple    # the innermost flattened loop's body
    atomic: bool = False  # scatter-adds print as atomic adds (threads may hit one element)


@dataclass(frozen=True)
class Reduction:
    body: tuple    # the nest's statements
    pairs: dict    # index in body of each `acc = 0` -> (accumulator, its loops flattened, their body)

    @property
    def last(self) -> int:
        return max(self.pairs) + 1  # the last reduction loop's index in body


def thread_map(nest: Nest, dims) -> ThreadMap | None:
    body = nest.body
    if not body or not isinstance(body[-1], Loop) or not body[-1].parallel:
        return None
    if not _rectangular(body[-1], set(dims)):
        return None
    loops = [body[-1]]
    while len(loops[-1].body) == 1 and isinstance(loops[-1].body[0], Loop):
        inner = loops[-1].body[0]
        if not _rectangular(inner, set(dims)) or not _stores_use(inner.body, {l.var for l in loops} | {inner.var}):
            break
        loops.append(inner)
    return ThreadMap(tuple(body[:-1]), tuple(loops), loops[-1].body)


def atomic_map(nest: Nest, dims) -> ThreadMap | None:
    """The nest's top loops as threads when their iterations are independent but for scatter-adds
    (module docstring); None when the nest is not of that shape (a recurrence reads what it stores,
    a loop-carried scalar accumulates across iterations)."""
    body, dims = nest.body, set(dims)
    if len(body) != 1 or not isinstance(body[0], Loop) or not _rectangular(body[0], dims):
        return None
    loops = [body[0]]
    while len(loops[-1].body) == 1 and isinstance(loops[-1].body[0], Loop) and _rectangular(loops[-1].body[0], dims):
        loops.append(loops[-1].body[0])
    inner, variables = loops[-1].body, {l.var for l in loops}
    written = {s.tensor for s in _walk(inner) if isinstance(s, (Store, ScatterAdd))}
    own = {s.name for s in _walk(inner) if isinstance(s, Let)}
    if not written or written & _reads(inner):
        return None
    if any(isinstance(s, Accumulate) and s.name not in own for s in _walk(inner)):
        return None
    if any(isinstance(s, Store) and not variables <= set(s.index) for s in _walk(inner)):
        return None
    return ThreadMap((), tuple(loops), inner, any(isinstance(s, ScatterAdd) for s in _walk(inner)))


def split_sums(tm: ThreadMap, dims) -> Reduction | None:
    """The sums of one thread's body (per output element) when its iterations over the summed
    loops can be split between threads (a bias gradient Σ_b g[b, j] with few columns j): the body
    is of `reduction`'s shape, its sums' bounds computable on the host."""
    if tm.atomic:
        return None
    red = reduction(Nest("split", tm.body, (), sp.Integer(0)), dims)
    if red is None or not any(_own_symbols(l) & set(dims) for _, loops, _ in red.pairs.values() for l in loops):
        return None  # sums of a constant length (a pooling window) are short: nothing to split
    return red


PREFIX = "_pre_"  # the device array a hoisted prefix's scalars pass through


def prefix_reduction(tm: ThreadMap, dims) -> tuple[Reduction, tuple] | None:
    """(the prefix as a `Reduction`, the scalars it passes on through PREFIX) when
    the statements before the parallel loop sum over a length the dimensions set (a vector
    normalised by its total): run once, on a grid, rather than again in every thread. None when the
    prefix is cheap (loops of constant length: pooling's window count) or not of that shape."""
    if not any(_own_symbols(s) & set(dims) for s in _walk(tm.prefix) if isinstance(s, Loop)):
        return None
    used = _symbols(tm.loops) | _symbols(tm.body)
    live = tuple(dict.fromkeys(s.name for s in tm.prefix if isinstance(s, Let) and s.name in used))
    if any(v.is_integer for v in live):
        return None  # positions (an arg-max) would pass through a float array
    red = reduction(Nest("prefix", tuple(tm.prefix), (), sp.Integer(0)), dims)
    return None if red is None else (red, live)


def has_scatter(nest: Nest) -> bool:
    return any(isinstance(s, ScatterAdd) for s in _walk(nest.body))


def reduction(nest: Nest, dims) -> Reduction | None:
    body = nest.body
    if any(isinstance(s, Loop) and s.parallel for s in body):
        return None
    pairs = {}
    for n, (s, t) in enumerate(zip(body, body[1:])):
        if (isinstance(s, Let) and s.value == 0 and not s.name.is_integer and isinstance(t, Loop)
                and _rectangular(t, set(dims)) and _only_accumulates(t.body, s.name)):
            pairs[n] = (s.name, *_nested_sum(s.name, t, set(dims)))
    if not pairs:
        return None
    accs = {a for a, _, _ in pairs.values()}
    last = max(pairs) + 1
    loops_at = {n + 1 for n in pairs}
    for n, s in enumerate(body):
        if n in pairs or n in loops_at:
            continue
        if _has_loop((s,)):
            return None
        if n < last and (_has_store((s,)) or _symbols((s,)) & accs):
            return None  # the partial kernel runs these: they must not need a finished sum
    for acc, loops, _ in pairs.values():
        if _symbols(loops[0].body) & (accs - {acc}):
            return None
    return Reduction(tuple(body), pairs)


def _nested_sum(acc, loop: Loop, dims: set) -> tuple[tuple, tuple]:
    """A sum of sums, `for v: a1 = 0; for w: a1 += e; acc += a1`, is one sum over (v, w): its loops
    flatten, so that every thread gets a share of all the terms (a loss over a [3, 10^6] batch
    would otherwise keep 3 threads busy); returns the loops and the innermost body adding to acc."""
    loops, body = [loop], loop.body
    while (len(body) == 3 and isinstance(body[0], Let) and body[0].value == 0 and isinstance(body[1], Loop)
           and isinstance(body[2], Accumulate) and body[2].name == acc and body[2].value == body[0].name
           and _rectangular(body[1], dims) and _only_accumulates(body[1].body, body[0].name)
           and body[0].name not in _symbols(body[1].body)):
        inner = body[0].name
        loops.append(body[1])
        body = _rename_accumulator(body[1].body, inner, acc)
    return tuple(loops), tuple(body)


def _rename_accumulator(body, old, new) -> tuple:
    out = []
    for s in body:
        if isinstance(s, Accumulate) and s.name == old:
            s = Accumulate(new, s.value)
        elif isinstance(s, Loop):
            s = Loop(s.var, s.lo, s.stop, _rename_accumulator(s.body, old, new), s.parallel)
        elif isinstance(s, If):
            s = If(s.cond, _rename_accumulator(s.then, old, new), _rename_accumulator(s.orelse, old, new))
        out.append(s)
    return tuple(out)


def _rectangular(loop: Loop, dims: set) -> bool:
    """Bounds the host can compute from the dimensions alone."""
    return (sp.sympify(loop.lo).free_symbols | sp.sympify(loop.stop).free_symbols) <= dims


def _only_accumulates(body, acc) -> bool:
    """Whether `acc` is only ever added to (a sum the threads can split), never read or reset."""
    for s in _walk(body):
        if isinstance(s, Let) and s.name == acc or isinstance(s, Store):
            return False
        if acc in _own_symbols(s):
            return False
    return any(isinstance(s, Accumulate) and s.name == acc for s in _walk(body))


def _stores_use(body, variables: set) -> bool:
    """Every store below uses all these loop variables: iterations write distinct elements. A
    scatter-add counts only the variables that are whole indices of it (a batch index): another
    loop's iterations may add into one element (pooling windows sharing an arg-max)."""
    return all(variables <= set().union(*[sp.sympify(i).free_symbols for i in s.index])
               for s in _walk(body) if isinstance(s, Store)) and all(
        variables <= set(s.index) for s in _walk(body) if isinstance(s, ScatterAdd))


def _walk(body):
    for s in body:
        yield s
        if isinstance(s, Loop):
            yield from _walk(s.body)
        elif isinstance(s, If):
            yield from _walk(s.then)
            yield from _walk(s.orelse)


def _own_symbols(s) -> set:
    """Symbols a statement reads (not its children's)."""
    if isinstance(s, (Let, Accumulate)):
        return set(sp.sympify(s.value).free_symbols)
    if isinstance(s, Store):
        return set().union(sp.sympify(s.value).free_symbols, *[sp.sympify(i).free_symbols for i in s.index])
    if isinstance(s, If):
        return set(sp.sympify(s.cond).free_symbols)
    if isinstance(s, Loop):
        return sp.sympify(s.lo).free_symbols | sp.sympify(s.stop).free_symbols
    return set()


def _symbols(body) -> set:
    out = set()
    for s in _walk(body):
        out |= _own_symbols(s)
    return out


def _reads(body) -> set:
    """Names of the tensors the statements read."""
    out = set()
    for s in _walk(body):
        exprs = [sp.sympify(e) for e in ((s.value,) if isinstance(s, (Let, Accumulate)) else
                                         (s.value, *s.index) if isinstance(s, (Store, ScatterAdd)) else
                                         (s.cond,) if isinstance(s, If) else ())]
        out |= {str(a.base.label) for e in exprs for a in e.atoms(sp.Indexed)}
    return out


def _has_loop(body) -> bool:
    return any(isinstance(s, Loop) for s in _walk(body))


def _has_store(body) -> bool:
    return any(isinstance(s, Store) for s in _walk(body))
