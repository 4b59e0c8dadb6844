"""Loop fusion (loops/fuse.py): adjacent loops over one range become one only where no iteration
of one touches what another iteration of the other wrote. Random loop nests run through an
interpreter of the loop IR, fused and as written, must leave every array alike; the rules one by
one; the softmax gradient compiled fused against NumPy."""
from __future__ import annotations

import random

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl.loops.fuse import fuse_loops
from symdl.loops.ir import Accumulate, If, Let, Loop, ScatterAdd, Store

N = sp.Symbol("N", integer=True, positive=True)
i, j, k = (sp.Symbol(n, integer=True) for n in "ijk")
A, T, U, V, W = (sp.IndexedBase(n) for n in ("A", "T", "U", "V", "W"))
acc, s = sp.Symbol("acc", real=True), sp.Symbol("s", real=True)


# -- an interpreter of the loop IR: the independent evaluator -----------------------------------

def run(body, arrays: dict, scalars: dict) -> None:
    for st in body:
        if isinstance(st, Loop):
            lo, stop = int(_value(st.lo, arrays, scalars)), int(_value(st.stop, arrays, scalars))
            for v in range(lo, stop):
                scalars[st.var.name] = v
                run(st.body, arrays, scalars)
        elif isinstance(st, Let):
            scalars[st.name.name] = _value(st.value, arrays, scalars)
        elif isinstance(st, Accumulate):
            scalars[st.name.name] += _value(st.value, arrays, scalars)
        elif isinstance(st, (Store, ScatterAdd)):
            at = tuple(int(_value(x, arrays, scalars)) for x in st.index)
            value = _value(st.value, arrays, scalars)
            arrays[st.tensor][at] = arrays[st.tensor][at] + value if isinstance(st, ScatterAdd) else value
        elif isinstance(st, If):
            run(st.then if bool(_value(st.cond, arrays, scalars)) else st.orelse, arrays, scalars)
        else:
            raise TypeError(st)


def _value(expr, arrays, scalars):
    expr = sp.sympify(expr)
    reads = {e: arrays[str(e.base.label)][tuple(int(_value(x, arrays, scalars)) for x in e.indices)]
             for e in expr.atoms(sp.Indexed)}
    names = {x: scalars[x.name] for x in expr.free_symbols if isinstance(x, sp.Symbol) and x.name in scalars}
    out = expr.xreplace({**{e: sp.Float(float(v)) for e, v in reads.items()},
                         **{x: sp.Integer(v) if isinstance(v, int) else sp.Float(v) for x, v in names.items()}})
    return out if isinstance(out, sp.logic.boolalg.BooleanAtom) else (
        int(out) if out.is_Integer else float(out))


def _arrays(n: int, rng) -> dict:
    return {"A": rng.normal(size=(n, n)), "T": rng.normal(size=(n, n)), "U": rng.normal(size=(n, n)),
            "V": rng.normal(size=n), "W": rng.normal(size=n)}


def _same(body, n: int = 4, seed: int = 0, serial: bool = False) -> None:
    rng = np.random.default_rng(seed)
    want, got = _arrays(n, rng), None
    got = {name: a.copy() for name, a in want.items()}
    run(body, want, {"N": n})
    run(fuse_loops(body, serial), got, {"N": n})
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)


def _loops(body) -> int:
    return sum(1 + _loops(st.body) for st in body if isinstance(st, Loop))


# -- random nests, fused against as written -----------------------------------------------------

def _random_read(rng: random.Random, outer, inner):
    """A read of a random tensor at a random access pattern: aligned, transposed, reversed, a row."""
    base = rng.choice([A, T, U])
    first = rng.choice([outer, outer, N - 1 - outer])
    return rng.choice([base[first, inner], base[first, inner], base[inner, outer], base[outer, N - 1 - inner],
                       V[outer], W[outer], V[inner]])


def _random_loop(rng: random.Random, n_loop: int):
    """One outer loop over N: an elementwise store in an inner loop, or a row reduction into V/W,
    over variables named at random (so that renaming is exercised)."""
    outer = rng.choice([i, k])
    inner = j if outer is not j else k
    name = sp.Symbol(f"acc{n_loop}", real=True)
    row = outer if rng.random() < 0.8 else N - 1 - outer  # now and then a write to another row
    if rng.random() < 0.5:
        target = rng.choice(["T", "U"])
        value = _random_read(rng, outer, inner) * 0.5 + _random_read(rng, outer, inner)
        body = (Loop(inner, 0, N, (Store(target, (row, inner), value),)),)
    else:
        target = rng.choice(["V", "W"])
        body = (Let(name, 0), Loop(inner, 0, N, (Accumulate(name, _random_read(rng, outer, inner)),)),
                Store(target, (row,), name * 0.25))
    return Loop(outer, 0, N, body, rng.random() < 0.7)  # mostly marked parallel, as lowered


@pytest.mark.parametrize("seed", range(60))
def test_random_nests_fused_give_the_same_arrays(seed):
    """Fused for both flavours: keeping parallel marks apart (the parallel function) and not (the
    serial one)."""
    rng = random.Random(seed)
    body = tuple(_random_loop(rng, n) for n in range(rng.randint(2, 5)))
    _same(body, seed=seed)
    _same(body, seed=seed, serial=True)


def test_random_nests_do_fuse_often():
    """The class above is not vacuous: most of its programs lose loops."""
    fused = 0
    for seed in range(60):
        rng = random.Random(seed)
        body = tuple(_random_loop(rng, n) for n in range(rng.randint(2, 5)))
        fused += _loops(fuse_loops(body)) < _loops(body)
    assert fused >= 30, fused


# -- the rules one by one -----------------------------------------------------------------------

def test_elementwise_loops_fuse_under_the_first_loops_variable():
    body = (Loop(i, 0, N, (Loop(j, 0, N, (Store("T", (i, j), A[i, j] * 2),)),)),
            Loop(k, 0, N, (Loop(j, 0, N, (Store("U", (k, j), T[k, j] + A[k, j]),)),)))
    out = fuse_loops(body)
    assert len(out) == 1 and out[0].var == i and _loops(out) == 2  # outer and inner both fused
    assert out[0].body[0].body[1] == Store("U", (i, j), T[i, j] + A[i, j])
    _same(body)


@pytest.mark.parametrize("read", [T[j, i], T[i, N - 1 - j], T[(i + 1) % N, j]],
                         ids=["transposed", "reversed", "next row"])
def test_a_read_of_other_iterations_keeps_loops_apart(read):
    body = (Loop(i, 0, N, (Loop(j, 0, N, (Store("T", (i, j), A[i, j] * 2),)),)),
            Loop(i, 0, N, (Loop(j, 0, N, (Store("U", (i, j), read),)),)))
    out = fuse_loops(body)
    if read == T[i, N - 1 - j]:  # the rows match: the outer loops fuse, the inner ones may not
        assert len(out) == 1 and len(out[0].body) == 2
    else:
        assert len(out) == 2
    _same(body)


def test_a_sum_is_complete_before_a_loop_reads_it():
    """The first inner loop accumulates; the Store of its sum moves after the second inner loop
    (which does not read it), the Let of the second's accumulator before the first."""
    b = sp.Symbol("b", real=True)
    body = (Loop(i, 0, N, (Let(acc, 0), Loop(j, 0, N, (Accumulate(acc, A[i, j]),)), Store("V", (i,), acc),
                           Let(b, 0), Loop(j, 0, N, (Accumulate(b, A[i, j] * A[i, j]),)), Store("W", (i,), b),
                           Loop(j, 0, N, (Store("T", (i, j), A[i, j] / V[i]),)))),)
    out = fuse_loops(body)
    inner = out[0].body
    assert [type(st).__name__ for st in inner] == ["Let", "Let", "Loop", "Store", "Store", "Loop"]
    _same(body)


def test_scalars_one_loop_assigns_and_the_other_reads_keep_them_apart():
    body = (Loop(i, 0, N, (Let(s, A[i, 0]), Store("V", (i,), s))),
            Loop(i, 0, N, (Store("W", (i,), s),)))  # reads the last row's s
    assert len(fuse_loops(body)) == 2
    _same(body)


def test_bounds_parallel_marks_and_guards_must_agree():
    first = Loop(i, 0, N, (Store("V", (i,), A[i, 0]),))
    for second in (Loop(i, 1, N, (Store("W", (i,), A[i, 1]),)),
                   Loop(i, 0, N, (Store("W", (i,), A[i, 1]),), True),
                   Loop(i, 0, N, (If(sp.Gt(A[i, 1], 0), (Store("W", (i,), A[i, 1]),)),))):
        assert len(fuse_loops((first, second))) == 2
    marked = Loop(i, 0, N, (Store("W", (i,), A[i, 1]),), True)
    (serial,) = fuse_loops((first, marked), serial=True)  # a serial function: marks do not matter
    assert not serial.parallel
    _same((first, marked), serial=True)
    guarded = Loop(i, 0, N, (Loop(j, 0, N, (If(sp.Gt(A[i, j], 0), (Store("T", (i, j), 1.0),)),)),))
    assert len(fuse_loops((Loop(i, 0, N, (Loop(j, 0, N, (Store("U", (i, j), 2.0),)),)), guarded))) == 1
    _same((Loop(i, 0, N, (Loop(j, 0, N, (Store("U", (i, j), 2.0),)),)), guarded))


def test_a_statement_between_that_depends_on_both_loops_blocks_fusion():
    body = (Loop(i, 0, N, (Store("V", (i,), A[i, 0]),)),
            Store("W", (0,), V[2] + W[1]),
            Loop(i, 0, N, (Store("W", (i,), A[i, 1]),)))
    assert len([st for st in fuse_loops(body) if isinstance(st, Loop)]) == 2
    _same(body)


def test_a_second_loop_naming_the_first_loops_variable_is_left_alone():
    body = (Loop(i, 0, N, (Store("V", (i,), A[i, 0]),)),
            Loop(k, 0, N, (Loop(i, 0, N, (Store("T", (k, i), A[k, i]),)),)))
    assert len(fuse_loops(body)) == 2
    _same(body)


def test_scatter_adds_into_their_own_rows_fuse():
    body = (Loop(i, 0, N, (Loop(j, 0, N, (Store("T", (i, j), 0),)),)),
            Loop(i, 0, N, (Loop(j, 0, N, (ScatterAdd("T", (i, (j * 3) % N), A[i, j]),)),)))
    out = fuse_loops(body)
    assert len(out) == 1 and len(out[0].body) == 2  # rows fuse; the scatter's columns may collide
    _same(body)


# -- through the compiler -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_fused_softmax_gradient_gives_numpys_values(dtype):
    B, C = sp.symbols("B C", integer=True, positive=True)
    b, c, c2 = sp.Idx("b", B), sp.Idx("c", C), sp.Idx("c2", C)
    x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
    prog = symdl.Program([symdl.Formula(sp.Eq(y[b, c], sp.exp(x[b, c]) / sp.Sum(sp.exp(x[b, c2]), (c2, 0, C - 1))),
                                        name="softmax_fused")])
    grad = prog.vjp(["x"]).compile()
    source = grad.kernels[-1].source(dtype)
    serial = source[source.index("def "):source.index("@nb", source.index("def "))]
    assert serial.count("for ") == 3, serial  # its two row sums in one loop
    rng = np.random.default_rng(3)
    xv, gy = rng.normal(size=(7, 5)).astype(dtype), rng.normal(size=(7, 5)).astype(dtype)
    e = np.exp(xv.astype(np.float64) - xv.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    want = p * (gy - (gy * p).sum(1, keepdims=True))
    got = grad(x=xv, grad_y=gy)
    got = got["grad_x"] if isinstance(got, dict) else got
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
