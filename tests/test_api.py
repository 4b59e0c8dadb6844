"""The layering: declare makes immutable values and knows no transformation; symdl/api.py holds the
verbs (vjp, compile, stabilize, verify) and installs them behind `f.vjp()`, ...; each stage keeps
its own caches, keyed by `f.key()`. SymPy only: nothing here compiles."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp

import symdl
from symdl import Formula, Program
from symdl.declare import verbs
from symdl.passes import stabilize

ROOT = Path(__file__).resolve().parents[1]
B, N = sp.symbols("B N", integer=True, positive=True)


def sumsq(domains=None) -> Formula:
    i, k = sp.Idx("i", B), sp.Idx("k", N)
    x, s = sp.IndexedBase("x"), sp.IndexedBase("s")
    return Formula(sp.Eq(s[i], sp.Sum(x[i, k] ** 2, k)), name="sumsq", domains=domains)


def log_softmax() -> Program:
    i, k, m = sp.Idx("i", B), sp.Idx("k", N), sp.Idx("m", N)
    z, e, s, y = (sp.IndexedBase(n) for n in "z e s y".split())
    return Program([Formula(sp.Eq(e[i, k], sp.exp(z[i, k])), name="exp"),
                    Formula(sp.Eq(s[i], sp.Sum(e[i, m], m)), name="sum"),
                    Formula(sp.Eq(y[i, k], sp.log(e[i, k] / s[i])), name="log")], name="ls")


# -- layering ------------------------------------------------------------------------------------

def _symdl_imports(path: Path) -> list[str]:
    """Every symdl module a file imports, at top level or inside a function, as a dotted name."""
    package = ["symdl", *path.relative_to(ROOT / "symdl").parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found += [module] if node.module else [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [m for m in found if m == "symdl" or m.startswith("symdl.")]


def test_declare_imports_no_other_symdl_package():
    files = sorted((ROOT / "symdl" / "declare").glob("*.py"))
    assert files
    wrong = [f"{p.name}: {m}" for p in files for m in _symdl_imports(p)
             if not (m == "symdl.errors" or m.startswith("symdl.declare"))]
    assert not wrong, wrong


def test_import_symdl_stays_light():
    code = ("import sys, symdl; print(sorted(m for m in ('numba', 'symdl.autodiff', 'symdl.passes', "
            "'symdl.runtime', 'symdl.verify') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- values --------------------------------------------------------------------------------------

def test_formulas_and_programs_are_immutable():
    f, prog = sumsq(), log_softmax()
    for value, attr in ((f, "name"), (f, "body"), (f, "cache"), (prog, "formulas"), (prog, "stability")):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(value, attr, None)
        with pytest.raises(AttributeError, match="immutable"):
            delattr(value, attr)
    assert f.name == "sumsq" and len(prog.formulas) == 3


def test_key_names_everything_a_stage_derives():
    f = sumsq()
    assert f.key() == sumsq().key()  # a value: same declaration, same key
    assert sumsq(domains={"x": (0.2, 1.0)}).key() != f.key()  # gradients carry the domains
    assert Formula.from_parts(f.name, f.output.name, f.indices, f.ranges, f.body,
                              {"x": (B, N)}).key() != f.key()  # declared and checked, or made by a stage


# -- verbs ---------------------------------------------------------------------------------------

def test_verbs_are_the_api_and_methods_call_them(monkeypatch):
    assert symdl.vjp is symdl.api.vjp and symdl.compile is symdl.api.compile
    assert symdl.stabilize is symdl.api.stabilize
    assert symdl.verify.__name__ == "symdl.verify"  # the module, as before; the verb is symdl.api.verify
    assert "compile" not in symdl.__all__  # `from symdl import *` keeps the builtin
    f = sumsq()
    assert f.vjp() == symdl.vjp(f)
    calls = []
    for verb in ("compile", "verify"):
        monkeypatch.setitem(verbs._TABLE, verb, lambda t, *a, _v=verb, **kw: calls.append((_v, t, a, kw)))
    f.compile(backend="cuda", check=False)
    f.verify(seed=3)
    assert calls == [("compile", f, (), {"backend": "cuda", "check": False}), ("verify", f, (), {"seed": 3})]


def test_a_verb_before_installation_says_so(monkeypatch):
    monkeypatch.setattr(verbs, "_TABLE", {})
    with pytest.raises(RuntimeError, match=r"Formula\.vjp is not available: symdl\.api"):
        sumsq().vjp()


def test_verbs_refuse_other_things():
    with pytest.raises(TypeError, match="takes a Formula or a Program"):
        symdl.vjp("y = x")


# -- caches in the stages ------------------------------------------------------------------------

def test_gradients_are_cached_by_key_not_on_the_formula():
    f, g = sumsq(), sumsq()
    fields = set(f.__dict__)
    assert f.vjp()["x"] is g.vjp()["x"]  # one derivation per meaning
    assert set(f.__dict__) - fields <= {"_key"}  # the formula's own memo of its key, nothing else


def test_stability_records_live_in_the_pass():
    naive = log_softmax()
    stable = naive.stabilize()
    assert stable.stability.original is naive and naive.stability is None
    assert [r.rule for r in stable.stability.rewrites] == [r.rule for r in symdl.api.stability(stable).rewrites]
    assert stabilize(stable) is stable  # nothing left to rewrite
    assert "stability" not in stable.__dict__
