"""Loop fusion: consecutive loops over the same range as one loop, where no iteration of the second
reads or writes what another iteration of the first wrote.

A chain's nests (a softmax's max, exp, sum and divide; its gradient's eight formulas) each loop over
the batch and then over the classes. numba's time to compile a function grows with its loops, so
the softmax gradient compiled in 0.59 s as nine nests and in 0.32 s fused by hand into three: fewer
loops, and the rows they share read once.

Two loops `for a` and `for b` over the same [lo, stop) fuse into `for a: body1; body2[b := a]` when
1. every tensor one of them writes and the other reads or writes is indexed, in every access of
   both, by the loop variable itself at one common position (iteration a then touches only the
   slice at a, which no other iteration touches: the order between slices does not matter);
2. no scalar one assigns (a Let, an accumulator) is read or assigned by the other (an accumulator
   the first sums must be complete before the second reads it);
3. both or neither run in parallel (for a function whose loops all run serially, `serial=True`,
   the marks do not matter), and both or neither hold a guard in their own body (an arg-max's
   `if` stops LLVM vectorising the loop it is in; a loop without one keeps its vector code; a
   guard in an inner loop stays in that loop).
Statements between the two loops move before the first or after the second where they are
independent of it (a reduction's initial Let before, the Store of the first loop's sum after).
Inner loops are fused the same way inside every loop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .ir import Accumulate, If, Let, Loop, ScatterAdd, Store


def fuse_loops(body: tuple, serial: bool = False) -> tuple:
    """`body` (a nest's statements) with adjacent fusible loops fused, at every depth. `serial`:
    for a function that runs every loop serially, which may fuse a loop marked parallel with
    one that is not (a loss's clip over every element and its sum over the batch)."""
    return _fuse_body(body, serial, {})


def _fuse_body(body: tuple, serial: bool, memo: dict) -> tuple:
    """fuse_loops with `memo`: each statement's Effects by id, computed once per call (a loop
    that does not fuse with the next is asked again as the first of the next pair, and every
    inner statement again at each depth)."""
    stmts = list(body)
    k = 0
    while k < len(stmts):
        if not isinstance(stmts[k], Loop):
            k += 1
            continue
        nxt = next((j for j in range(k + 1, len(stmts)) if isinstance(stmts[j], Loop)), None)
        if nxt is None:
            break
        fused = _fuse(stmts[k], stmts[k + 1:nxt], stmts[nxt], serial, memo)
        if fused is None:
            k = nxt
            continue
        before, loop, after = fused
        stmts[k:nxt + 1] = [*before, loop, *after]
        k += len(before)  # the fused loop: try it with the loop after it
    return tuple(Loop(s.var, s.lo, s.stop, _fuse_body(s.body, serial, memo), s.parallel) if isinstance(s, Loop)
                 else s for s in stmts)


def _fuse(first: Loop, between: list, second: Loop, serial: bool, memo: dict):
    """(statements before, the fused loop, statements after), or None where they may not fuse."""
    if first.lo != second.lo or first.stop != second.stop or (first.parallel != second.parallel and not serial):
        return None
    if _has_guard(first.body) != _has_guard(second.body):
        return None
    var = first.var
    if second.var.name != var.name:
        if var.name in _names(effects(second.body, memo)):
            return None
        second = Loop(var, second.lo, second.stop, rename(second.body, {second.var.name: var}), second.parallel)
    a, b = effects((first,), memo), effects((second,), memo)
    if a.defs & (b.uses | b.defs) or b.defs & a.uses:
        return None
    for tensor in (a.writes.keys() & b.touched) | (b.writes.keys() & a.touched):
        if not _aligned(a.accesses(tensor) + b.accesses(tensor), var):
            return None
    before, after = [], []
    moved_after = Effects()
    for s in between:
        e = effects((s,), memo)
        if not e.conflicts(a) and not e.conflicts(moved_after):
            before.append(s)
        elif not e.conflicts(b):
            after.append(s)
            moved_after = moved_after.merged(e)
        else:
            return None
    return before, Loop(var, first.lo, first.stop, first.body + second.body, first.parallel and second.parallel), after


def _aligned(accesses: list, var) -> bool:
    """Some position holds exactly `var` in every access (each index tuple)."""
    if not accesses:
        return True
    width = min(len(ix) for ix in accesses)
    return any(all(_is(ix[p], var) for ix in accesses) for p in range(width))


def _is(index, var) -> bool:
    """Whether an index is the variable itself (by name, as the printed code sees it)."""
    return isinstance(index, (sp.Symbol, sp.Idx)) and str(index) == var.name


@dataclass
class Effects:
    """What statements read and write: tensors with the index tuple of every access, scalars."""

    reads: dict = field(default_factory=dict)
    writes: dict = field(default_factory=dict)
    uses: set = field(default_factory=set)
    defs: set = field(default_factory=set)
    loops: set = field(default_factory=set)  # loop variables' names

    @property
    def touched(self) -> set:
        return self.reads.keys() | self.writes.keys()

    def accesses(self, tensor: str) -> list:
        return self.reads.get(tensor, []) + self.writes.get(tensor, [])

    def conflicts(self, other: "Effects") -> bool:
        """Whether the two may not swap places: one writes what the other reads or writes."""
        return bool(self.writes.keys() & other.touched or other.writes.keys() & self.reads.keys()
                    or self.defs & (other.uses | other.defs) or other.defs & self.uses)

    def merged(self, other: "Effects") -> "Effects":
        out = Effects({k: list(v) for k, v in self.reads.items()}, {k: list(v) for k, v in self.writes.items()},
                      self.uses | other.uses, self.defs | other.defs, self.loops | other.loops)
        for mine, theirs in ((out.reads, other.reads), (out.writes, other.writes)):
            for k, v in theirs.items():
                mine.setdefault(k, []).extend(v)
        return out


def effects(stmts, memo: dict | None = None) -> Effects:
    """What `stmts` read and write, at every depth (never to be changed: `memo` shares them)."""
    memo = {} if memo is None else memo
    parts = [_statement(s, memo) for s in stmts]
    if len(parts) == 1:
        return parts[0]
    out = Effects()
    for part in parts:
        out = out.merged(part)
    return out


def _statement(s, memo: dict) -> Effects:
    hit = memo.get(id(s))
    if hit is not None and hit[0] is s:
        return hit[1]
    out = Effects()

    def read(expr):
        for e in sp.preorder_traversal(sp.sympify(expr)):
            if isinstance(e, sp.Indexed):
                out.reads.setdefault(str(e.base.label), []).append(tuple(e.indices))
            elif isinstance(e, sp.Symbol):
                out.uses.add(e.name)

    if isinstance(s, Loop):
        read(s.lo)
        read(s.stop)
        out.loops.add(s.var.name)
        out = out.merged(effects(s.body, memo))
    elif isinstance(s, (Let, Accumulate)):
        read(s.value)
        out.defs.add(s.name.name)
        if isinstance(s, Accumulate):
            out.uses.add(s.name.name)
    elif isinstance(s, (Store, ScatterAdd)):
        read(s.value)
        for i in s.index:
            read(i)
        out.writes.setdefault(s.tensor, []).append(tuple(sp.sympify(i) for i in s.index))
        if isinstance(s, ScatterAdd):  # += reads the element it writes
            out.reads.setdefault(s.tensor, []).append(tuple(sp.sympify(i) for i in s.index))
    elif isinstance(s, If):
        read(s.cond)
        out = out.merged(effects(s.then, memo)).merged(effects(s.orelse, memo))
    else:
        raise TypeError(f"unknown loop IR statement {s!r}")
    memo[id(s)] = (s, out)  # the statement itself kept: its id is not reused while the memo lives
    return out


def rename(stmts, mapping: dict) -> tuple:
    """Statements with every symbol named in `mapping` (name -> Symbol) replaced, loop variables
    and assigned scalars included: by name, as the printed code sees them."""
    def x(expr):
        expr = sp.sympify(expr)
        found = {s: mapping[s.name] for s in expr.atoms(sp.Symbol) if s.name in mapping}
        return expr.xreplace(found) if found else expr

    def sym(s):
        return mapping.get(s.name, s)
    out = []
    for s in stmts:
        if isinstance(s, Loop):
            out.append(Loop(sym(s.var), x(s.lo), x(s.stop), rename(s.body, mapping), s.parallel))
        elif isinstance(s, (Let, Accumulate)):
            out.append(type(s)(sym(s.name), x(s.value)))
        elif isinstance(s, (Store, ScatterAdd)):
            out.append(type(s)(s.tensor, tuple(x(i) for i in s.index), x(s.value)))
        elif isinstance(s, If):
            out.append(If(x(s.cond), rename(s.then, mapping), rename(s.orelse, mapping)))
        else:
            raise TypeError(f"unknown loop IR statement {s!r}")
    return tuple(out)


def _has_guard(stmts) -> bool:
    """Whether a loop's own body (not a loop inside it) holds a guard."""
    return any(isinstance(s, If) for s in stmts)


def _names(e: Effects) -> set:
    """Every symbol the statements name: loop variables, assigned scalars, and what they read."""
    return e.uses | e.defs | e.loops
