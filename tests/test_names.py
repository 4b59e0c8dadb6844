"""Names that reach generated code (issue 8): no user text reaches generated source unescaped.

Formula names are free text, escaped wherever they are written (comments); tensor, scalar, index
and dimension names must be Python identifiers, distinct across roles, and are mapped one to one
onto identifiers that never meet a name the generated module defines. Kernels whose names collide
with everything the generator uses still compute what NumPy computes.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

from symdl import FormulaError, Formula, Program
from symdl.backends import cpu, cuda
from symdl.printing import RESERVED, py_name
from symdl.loops import lower

N, M = sp.symbols("N M", integer=True, positive=True)
i, j = sp.Idx("i", N), sp.Idx("j", M)
x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
RNG = np.random.default_rng(8)
# every character str.splitlines() splits at (the tokenizer ends lines at \n and \r only), and NUL
SEPARATORS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029",
              "\x00"]


def _payload(path, sep: str) -> str:
    return f"d{sep}open({str(path)!r}, 'w').close(){sep}#"


def _module_ast(source: str) -> str:
    return ast.dump(ast.parse(source))  # comments are not in the tree


@pytest.mark.parametrize("sep", SEPARATORS, ids=[repr(s) for s in SEPARATORS])
def test_formula_name_cannot_add_code_to_either_backend(sep, tmp_path):
    """The same module as a plainly named formula's, statement for statement, on both backends."""
    evil = Formula(sp.Eq(y[i], 2 * x[i]), name=_payload(tmp_path / "pwned", sep))
    plain = Formula(sp.Eq(y[i], 2 * x[i]), name="d")
    for backend in (cpu, cuda):
        got = backend.generate(lower(evil), "float32", "test")
        assert _module_ast(got) == _module_ast(backend.generate(lower(plain), "float32", "test"))
        assert "open(" not in "".join(line for line in got.splitlines() if not line.startswith("#"))


def test_injected_formula_name_runs_nothing_and_computes(tmp_path):
    """End to end: the module is imported and run; the payload never runs."""
    X = RNG.standard_normal(5)
    for sep in ("\n", "\r"):
        marker = tmp_path / f"pwned{ord(sep)}"
        kern = Formula(sp.Eq(y[i], 2 * x[i]), name=_payload(marker, sep)).compile()
        np.testing.assert_allclose(kern(x=X), 2 * X)
        assert not marker.exists()


ROLE_BUILDERS = {
    "tensor": lambda n: Formula(sp.Eq(y[i], sp.IndexedBase(n)[i])),
    "output": lambda n: Formula(sp.Eq(sp.IndexedBase(n)[i], x[i])),
    "scalar": lambda n: Formula(sp.Eq(y[i], x[i] * sp.Symbol(n))),
    "index": lambda n: Formula(sp.Eq(y[sp.Idx(n, N)], x[sp.Idx(n, N)])),
    "reduction index": lambda n: Formula(sp.Eq(y[i], sp.Sum(x[i, sp.Idx(n, M)], sp.Idx(n, M)))),
    "dimension": lambda n: Formula(sp.Eq(y[sp.Idx("i", sp.Symbol(n, integer=True, positive=True))],
                                         x[sp.Idx("i", sp.Symbol(n, integer=True, positive=True))])),
}
BAD_NAMES = {  # name -> words the error must contain
    "a\nimport os": "not a Python identifier", "a\rb": "not a Python identifier",
    "a\u2028b": "not a Python identifier", "a\x0cb": "not a Python identifier",
    "C_{in}": "not a Python identifier", "x²": "not a Python identifier", "½": "not a Python identifier",
    "a.b": "not a Python identifier", "1x": "not a Python identifier", "lambda": "keyword",
    "ℌ": "'H'", "ﬁx": "'fix'", "_exp": "symdl generates", "_sq": "symdl generates",
    "h__prev1": "symdl generates",
}


@pytest.mark.parametrize("role", ROLE_BUILDERS)
@pytest.mark.parametrize("name", BAD_NAMES, ids=[repr(n) for n in BAD_NAMES])
def test_names_that_are_not_plain_identifiers_are_refused(role, name):
    with pytest.raises(FormulaError) as info:
        ROLE_BUILDERS[role](name)
    msg = str(info.value)
    assert repr(name) in msg and BAD_NAMES[name] in msg, msg


def test_scalar_named_like_an_index_is_refused():
    """Was: x * index, silently (the scalar `a` printed as the loop variable `a`)."""
    a = sp.Idx("a", N)
    with pytest.raises(FormulaError, match=r"scalar 'a' and index 'a' have the same name"):
        Formula(sp.Eq(y[a], x[a] * sp.Symbol("a")), name="f")


@pytest.mark.parametrize("build, words", [
    (lambda: Formula(sp.Eq(y[i], x[i] + sp.IndexedBase("N")[i])), ("tensor", "dimension", "'N'")),
    (lambda: Formula(sp.Eq(y[i], x[i] * sp.Symbol("N"))), ("scalar", "dimension", "'N'", "integer=True")),
    (lambda: Formula(sp.Eq(y[i], x[i] * sp.Symbol("x"))), ("scalar", "tensor", "'x'")),
    (lambda: Formula(sp.Eq(y[sp.Idx("N", N)], x[sp.Idx("N", N)])), ("index", "dimension", "'N'")),
])
def test_one_name_with_two_roles_is_refused(build, words):
    with pytest.raises(FormulaError) as info:
        build()
    assert all(w in str(info.value) for w in words), str(info.value)


def test_tensor_named_like_the_output_gradient_is_refused():
    """Was: vjp for x read the user's grad_y as the upstream gradient, silently."""
    with pytest.raises(FormulaError, match="'grad_y'.*vjp.*'y'"):
        Formula(sp.Eq(y[i], x[i] * sp.IndexedBase("grad_y")[i]))


def test_initial_state_must_be_the_tensor_not_a_read():
    T = sp.Symbol("T", integer=True, positive=True)
    t, b = sp.Idx("t", T), sp.Idx("b", N)
    h, h0 = sp.IndexedBase("h"), sp.IndexedBase("h0")
    body = sp.tanh(x[t, b] + h[t - 1, b])
    with pytest.raises(FormulaError, match=r"h0\[b\].*initial=\{'h': h0\}"):
        Formula(sp.Eq(h[t, b], body), initial={"h": h0[b]})
    assert Formula(sp.Eq(h[t, b], body), initial={"h": h0}).input_names == ("x", "h0")


def test_program_names_keep_one_role_and_one_rank():
    z = sp.IndexedBase("z")
    first = Formula(sp.Eq(z[i], 2 * x[i]), name="first")
    with pytest.raises(FormulaError, match="'N'"):  # a tensor N beside a formula with dimension N
        Program([first, Formula(sp.Eq(y[j], sp.IndexedBase("N")[j]), name="second")], name="p")
    with pytest.raises(FormulaError, match="'z'.*rank 1.*rank 2"):
        Program([first, Formula(sp.Eq(y[i, j], z[i, j]), name="second")], name="p")
    with pytest.raises(FormulaError, match="'grad_y'"):
        Program([first, Formula(sp.Eq(y[i], z[i] + sp.IndexedBase("grad_y")[i]), name="s")], name="p")


def test_py_name_is_one_to_one_and_keeps_off_reserved_names():
    names = ["x", "np", "np_", "np__", "F", "F_", "run", "run_", "loops_serial", "loops_serial_",
             "matmul0", "MM_BM", "parallel", "max", "range", "cuda", "_exp", "_exp_u", "_t", "acc0",
             "α", "lambda", "match", "h_final", "float32_ldexp", "contract", "matmul"]
    mapped = [py_name(n) for n in names]
    assert len(set(mapped)) == len(names)
    assert all(m.isidentifier() and m not in RESERVED for m in mapped)
    assert py_name("x") == "x" and py_name("α") == "α"  # plain names stay themselves


# names of everything a generated module defines, calls or uses as a temporary, as tensors,
# scalars, indices and dimensions of one formula (with a matrix product, a Sum, a Piecewise, CSE)
NP, NP_, T0 = sp.IndexedBase("np"), sp.IndexedBase("np_"), sp.IndexedBase("T0")
RUN, LOOPS, FT = sp.IndexedBase("run"), sp.IndexedBase("loops_serial"), sp.IndexedBase("F")
A, Bd, K = (sp.Symbol(n, integer=True, positive=True) for n in ("acc1", "cuda", "t0"))
ii, jj, acc0, c0 = sp.Idx("math", A), sp.Idx("nb", Bd), sp.Idx("acc0", K), sp.Idx("c0", K)
PARALLEL, LAM = sp.Symbol("parallel"), sp.Symbol("λ")


def _collision_formula():
    body = (sp.Sum(NP[ii, acc0] * NP_[acc0, jj], acc0) + T0[ii, jj]
            + sp.exp(RUN[ii]) * sp.tanh(LOOPS[jj]) * PARALLEL
            + sp.Sum(sp.exp(FT[ii, c0]) ** 2 + sp.exp(FT[ii, c0]), c0)
            + sp.Piecewise((LAM * RUN[ii], RUN[ii] > 0), (0, True)))
    return Formula(sp.Eq(sp.IndexedBase("range")[ii, jj], body), name="collide")


def _collision_inputs():
    a, b, k = 3, 4, 5
    args = {"np": RNG.standard_normal((a, k)), "np_": RNG.standard_normal((k, b)),
            "T0": RNG.standard_normal((a, b)), "run": RNG.standard_normal(a),
            "loops_serial": RNG.standard_normal(b), "F": RNG.standard_normal((a, k)),
            "parallel": 0.7, "λ": -1.5}
    e = np.exp(args["F"])
    want = (args["np"] @ args["np_"] + args["T0"]
            + np.outer(np.exp(args["run"]), np.tanh(args["loops_serial"])) * 0.7
            + (e ** 2 + e).sum(1)[:, None] + np.where(args["run"] > 0, -1.5 * args["run"], 0)[:, None])
    return args, want


def test_names_of_generated_code_as_user_names_compute_correctly():
    """Was: SyntaxError (duplicate argument), numba typing errors, or accumulators sharing the
    loop variable acc0 (a wrong sum)."""
    f = _collision_formula()
    kern = f.compile()
    args, want = _collision_inputs()
    np.testing.assert_allclose(kern(**args), want, rtol=1e-10)
    args32 = {k: v.astype(np.float32) if isinstance(v, np.ndarray) else v for k, v in args.items()}
    np.testing.assert_allclose(kern(**args32), want, rtol=2e-4, atol=2e-4)
    for backend in (cpu, cuda):  # no user name is printed as a name the module defines
        tree = ast.parse(backend.generate(lower(f), "float32", "test"))
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in ast.walk(n)
                    if isinstance(t, ast.Name)}
        defined |= {(a.asname or a.name).split(".")[0] for n in tree.body
                    if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        assert not {py_name(n) for n in f.used_names} & defined


def test_tensors_named_like_the_cpu_gemm_helpers():
    """Was: a tensor named `contract` shadowed the cpu driver's GEMM helper of the same name (a
    TypeError calling an array); `matmul` is its 2-D sibling."""
    N3, M3, K3 = (sp.Symbol(n, integer=True, positive=True) for n in ("N3", "M3", "K3"))
    a, b, c = sp.Idx("a", N3), sp.Idx("b", M3), sp.Idx("c", K3)
    d = sp.Idx("d", K3)
    con, mm, z = sp.IndexedBase("contract"), sp.IndexedBase("matmul"), sp.IndexedBase("z")
    f = Formula(sp.Eq(z[a, b], sp.Sum(con[a, c] * mm[c, b], c)), name="gemm_names")
    g = Formula(sp.Eq(z[a, b], sp.Sum(con[a, c, d] * mm[d, c, b], c, d)), name="grouped_names")
    x2, w2 = RNG.standard_normal((3, 4)), RNG.standard_normal((4, 5))
    np.testing.assert_allclose(f.compile()(contract=x2, matmul=w2), x2 @ w2, rtol=1e-12)
    x3, w3 = RNG.standard_normal((3, 4, 4)), RNG.standard_normal((4, 4, 5))
    np.testing.assert_allclose(g.compile()(contract=x3, matmul=w3), np.einsum("acd,dcb->ab", x3, w3), rtol=1e-12)


CUDA_SCRIPT = """
import numpy as np, sympy as sp, symdl, sys
sys.path.insert(0, {tests!r})
from test_names import _collision_formula, _collision_inputs, _payload
N = sp.Symbol("N", integer=True, positive=True)
i = sp.Idx("i", N)
x, y = sp.IndexedBase("x"), sp.IndexedBase("y")
f = symdl.Formula(sp.Eq(y[i], 2 * x[i]), name=_payload({marker!r}, "\\n"))
X = np.arange(5.0)
np.testing.assert_allclose(f.compile(backend="cuda")(x=X), 2 * X)
args, want = _collision_inputs()
np.testing.assert_allclose(_collision_formula().compile(backend="cuda")(**args), want, rtol=1e-10)
print("ok")
"""


def test_cuda_simulator_runs_the_same_names(tmp_path):
    pytest.importorskip("numba_cuda")
    marker = str(tmp_path / "pwned_cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    script = CUDA_SCRIPT.format(tests=os.path.dirname(__file__), marker=marker)
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]
    assert not os.path.exists(marker)


def test_parallel_flavour_locals_keep_off_user_names():
    """The parallel flavour's own locals (_mode, _parts, _part, _own, a loop variable's unsigned
    copy, _mode0 for mode: backends/statements.py) and the mode calls (fp_mode, set_fp_mode) as user names; the
    parallel flavour is forced, and must compute what NumPy computes."""
    R, C, S = (sp.Symbol(n, integer=True, positive=True) for n in ("parts", "own", "i0"))
    mode, part, i0 = sp.Idx("mode", R), sp.Idx("part", C), sp.Idx("mode0", S)
    fp, setter, w = sp.IndexedBase("fp_mode"), sp.IndexedBase("set_fp_mode"), sp.IndexedBase("part0")
    f = Formula(sp.Eq(sp.IndexedBase("mode_")[mode, part],
                      fp[mode, part] * setter[part] + sp.Sum(sp.exp(w[mode, i0]), i0)), name="parallel_locals")
    args = {"fp_mode": RNG.standard_normal((70, 3)), "set_fp_mode": RNG.standard_normal(3),
            "part0": RNG.standard_normal((70, 4))}
    want = args["fp_mode"] * args["set_fp_mode"] + np.exp(args["part0"]).sum(1)[:, None]
    kern = f.compile()
    plan = kern.plan(np.dtype(np.float64), tuple(args[n].shape for n in kern._order))
    for parallel in (False, True):
        out = np.empty(plan.out_shape)
        plan.run(out, *(args[n] for n in kern._order), *plan.values, parallel)
        np.testing.assert_allclose(out, want, rtol=1e-12)
    assert "nb.prange(_parts)" in cpu.generate(lower(f), "float64", "test")
