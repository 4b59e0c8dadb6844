"""Every compiled kernel is checked against the NumPy reference before its first use (issue 8).

The acceptance test breaks code generation on purpose (parentheses dropped around sums that are
factors of a product) and shows that the first call raises CompileError instead of returning
numbers; the rest covers gradient, fused and cuda (simulator) modules, the memo on disk and in the
process, the switches, the skips, that the check compiles nothing the call would not, and `out=`.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import CompileError, Formula, Program
from symdl.runtime import selfcheck

N, B, C = sp.symbols("N B C", integer=True, positive=True)
LEFT = re.compile(r"\(([^()]* [+-] [^()]*)\) \*")   # (b + c) * a  ->  b + c * a
RIGHT = re.compile(r"\* \(([^()]* [+-] [^()]*)\)")  # a * (b + c)  ->  a * b + c


def drop_parentheses(source: str) -> str:
    return RIGHT.sub(r"* \1", LEFT.sub(r"\1 *", source))


def break_printer(monkeypatch, module) -> list:
    """Wrap `module.generate` (the cpu or cuda code generator as the backend object calls it) so that its
    output loses the parentheses around sums inside products; returns a list that records, per
    module generated, whether the mutation changed it (so no test passes on an unbroken kernel)."""
    original, changed = module.generate, []

    def generate(prog, dtype, version):
        source = original(prog, dtype, version)
        broken = drop_parentheses(source)
        changed.append(broken != source)
        return broken

    monkeypatch.setattr(module, "generate", generate)
    return changed


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SYMDL_CHECK", raising=False)


def scaled_sum(name: str) -> Formula:
    """y[i] = a[i] (b[i] + c[i])."""
    i = sp.Idx("i", N)
    a, b, c, y = (sp.IndexedBase(n) for n in "a b c y".split())
    return Formula(sp.Eq(y[i], a[i] * (b[i] + c[i])), name=name)


def abc(dtype=np.float64, n=6):
    rng = np.random.default_rng(3)
    return {k: rng.uniform(-1, 1, n).astype(dtype) for k in "abc"}


# -- acceptance: a broken printer never returns numbers ------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_broken_parentheses_raise_compile_error(monkeypatch, dtype):
    import symdl.backends.cpu.backend as kernel_module
    changed = break_printer(monkeypatch, kernel_module)
    name = f"scaled_sum_{np.dtype(dtype).name}"
    kern = scaled_sum(name).compile()
    x = abc(dtype)
    with pytest.raises(CompileError) as info:
        kern(**x)
    assert changed == [True]
    err = info.value
    msg = str(err)
    assert repr(name) in msg and np.dtype(dtype).name in msg
    assert err.tensor == "y" and len(err.index) == 1 and f"y[{err.index[0]}]" in msg
    assert repr(err.got) in msg and repr(err.want) in msg and abs(err.got - err.want) > 1e-3
    with pytest.raises(CompileError):  # and on every later call: never a result
        kern(**x)
    # the same broken module, unchecked, really returns wrong numbers (the mutation is real)
    got = scaled_sum(name).compile(check=False)(**x)
    assert not np.allclose(got, x["a"] * (x["b"] + x["c"]), rtol=1e-3)


def test_broken_gradient_kernel_raises_on_first_vjp(monkeypatch):
    import symdl.backends.cpu.backend as kernel_module
    kern = scaled_sum("scaled_sum_vjp").compile()
    x = abc()
    np.testing.assert_allclose(kern(**x), x["a"] * (x["b"] + x["c"]), rtol=1e-12)  # checked, intact
    changed = break_printer(monkeypatch, kernel_module)  # only the gradient kernels are built now
    with pytest.raises(CompileError) as info:
        kern.vjp(np.ones(6), wrt=["a"], **x)
    assert changed == [True]
    assert "'scaled_sum_vjp.vjp.a'" in str(info.value) and info.value.tensor == "grad_a"


def test_broken_fused_program_raises(monkeypatch):
    import symdl.backends.cpu.backend as fused_module
    i = sp.Idx("i", N)
    w, g, m, w_new, m_new = (sp.IndexedBase(n) for n in "w g m w_new m_new".split())
    lr = sp.Symbol("lr")
    step = Program([Formula(sp.Eq(m_new[i], lr * (m[i] + g[i])), name="fused_m"),
                    Formula(sp.Eq(w_new[i], w[i] - lr * (m[i] + g[i])), name="fused_w")], name="fused_step")
    rng = np.random.default_rng(0)
    x = {"w": rng.standard_normal(5), "g": rng.standard_normal(5), "m": rng.standard_normal(5), "lr": 0.1}
    kern = step.compile()
    assert kern._fused is not None
    got = kern(**x)  # intact: checked, then run
    np.testing.assert_allclose(got["w_new"], x["w"] - 0.1 * (x["m"] + x["g"]), rtol=1e-12)
    changed = break_printer(monkeypatch, fused_module)
    with pytest.raises(CompileError) as info:
        kern(**{k: v.astype(np.float32) if isinstance(v, np.ndarray) else v for k, v in x.items()})
    assert changed == [True] and info.value.formula in ("fused_m", "fused_w")


@pytest.mark.parametrize("switch", ["env", "keyword"])
def test_check_can_be_turned_off(monkeypatch, switch):
    import symdl.backends.cpu.backend as kernel_module
    break_printer(monkeypatch, kernel_module)
    if switch == "env":
        monkeypatch.setenv("SYMDL_CHECK", "0")
    f = scaled_sum(f"scaled_sum_off_{switch}")
    kern = f.compile() if switch == "env" else f.compile(check=False)
    x = abc()
    assert not np.allclose(kern(**x), x["a"] * (x["b"] + x["c"]))  # the broken kernel, unchecked


# -- once per module per machine; nothing compiled the call would not need ------------------------

def test_pass_is_memoised_in_process_and_on_disk(monkeypatch):
    built = []
    real = selfcheck._build_case
    monkeypatch.setattr(selfcheck, "_build_case", lambda kernels, *rest: built.append(1) or real(kernels, *rest))
    f, x = scaled_sum("scaled_sum_memo"), abc()
    f.compile()(**x)
    assert len(built) == 1
    markers = list((selfcheck.cache_dir()).glob("*.checked"))
    assert len(markers) == 1 and markers[0].name.endswith(".serial.checked")
    f.compile()(**x)  # a new kernel for the same module: the in-process memo
    assert len(built) == 1
    monkeypatch.setattr(selfcheck, "_PASSED", set())  # as a new process: the marker on disk
    f.compile()(**x)
    assert len(built) == 1
    markers[0].write_text("passed: another numba\n")  # a stale marker is checked again
    monkeypatch.setattr(selfcheck, "_PASSED", set())
    f.compile()(**x)
    assert len(built) == 2


def test_check_reuses_the_calls_specialisation():
    """Integer labels of int32, a strided and a read-only input: the check runs the kernel with
    arrays of the same numba types, so every dispatcher holds one signature (and the parallel
    flavour, which this small call does not use, none)."""
    bb = sp.Idx("b", B)
    p, t = sp.IndexedBase("p", shape=(B, C)), sp.IndexedBase("t", integer=True)
    f = Formula(sp.Eq(sp.Symbol("L"), -sp.Sum(sp.log(p[bb, t[bb]]), bb) / B), name="sparse_ce_check")
    rng = np.random.default_rng(0)
    wide = rng.uniform(0.1, 1.0, (4, 10))
    pv, tv = wide[:, ::2], rng.integers(0, 5, 4).astype(np.int32)
    pv.flags.writeable = False
    kern = f.compile()
    got = kern(p=pv, t=tv)
    np.testing.assert_allclose(got, -np.log(pv[np.arange(4), tv]).mean(), rtol=1e-12)
    module = kern._module(np.dtype(np.float64))
    dispatchers = {n: d for n, d in vars(module).items() if isinstance(d, numba.core.dispatcher.Dispatcher)}
    assert {n: len(d.signatures) for n, d in dispatchers.items() if n.endswith("_serial")} == {
        n: 1 for n in dispatchers if n.endswith("_serial")}
    assert all(not d.signatures for n, d in dispatchers.items() if n.endswith("_parallel"))


# -- skipped, never a false alarm ---------------------------------------------------------------

def test_no_sizes_found_skips_with_a_note(monkeypatch, caplog):
    monkeypatch.setattr(selfcheck, "_size_options", lambda n: iter(()))
    x = abc()
    with caplog.at_level(logging.DEBUG, logger="symdl.check"):
        got = scaled_sum("scaled_sum_nosizes").compile()(**x)
    np.testing.assert_allclose(got, x["a"] * (x["b"] + x["c"]), rtol=1e-12)
    assert "no small sizes" in caplog.text and "scaled_sum_nosizes" in caplog.text


def test_reference_failure_skips_with_a_note(monkeypatch, caplog):
    import symdl.reference

    def unknown(*args, **kwargs):
        raise NotImplementedError("the reference evaluator does not know Foo")

    monkeypatch.setattr(symdl.reference, "evaluate", unknown)
    x = abc()
    with caplog.at_level(logging.DEBUG, logger="symdl.check"):
        got = scaled_sum("scaled_sum_noref").compile()(**x)
    np.testing.assert_allclose(got, x["a"] * (x["b"] + x["c"]), rtol=1e-12)
    assert "reference evaluator fails" in caplog.text


# -- out= -----------------------------------------------------------------------------------------

def _bad_outs():
    readonly = np.full(6, 7.25)
    readonly.flags.writeable = False
    return {"read-only": (readonly, "read-only"), "strided": (np.full(12, 7.25)[::2], "C-contiguous"),
            "float32": (np.full(6, 7.25, np.float32), "float64"), "shape": (np.full(5, 7.25), "(6,)")}


@pytest.mark.parametrize("case", list(_bad_outs()))
def test_bad_out_is_a_value_error_naming_out(case):
    out, words = _bad_outs()[case]
    before = out.copy()
    kern = scaled_sum("scaled_sum_out").compile()
    with pytest.raises(ValueError) as info:
        kern(out=out, **abc())
    msg = str(info.value)
    assert "'scaled_sum_out'" in msg and "out=" in msg and words in msg
    np.testing.assert_array_equal(out, before)


# -- cuda (the simulator, in its own process: it must be chosen before numba.cuda loads) ----------

CUDA_SCRIPT = textwrap.dedent('''
    import re, numpy as np, sympy as sp, symdl, symdl.backends.cuda.backend as cuda_backend
    N = sp.Symbol("N", integer=True, positive=True)
    i = sp.Idx("i", N)
    a, b, c, y = (sp.IndexedBase(n) for n in "a b c y".split())
    f = symdl.Formula(sp.Eq(y[i], a[i] * (b[i] + c[i])), name="scaled_sum_cuda")
    x = {k: np.linspace(-1, 1, 6) + 0.1 * n for n, k in enumerate("abc")}
    np.testing.assert_allclose(f.compile(backend="cuda")(**x), x["a"] * (x["b"] + x["c"]), rtol=1e-12)
    original = cuda_backend.generate
    def broken(prog, dtype, version):
        source = original(prog, dtype, version)
        new = re.sub(RIGHT, r"* \\1", re.sub(LEFT, r"\\1 *", source))
        assert new != source
        return new
    cuda_backend.generate = broken
    try:
        f.compile(backend="cuda")(**{k: v.astype(np.float32) for k, v in x.items()})
    except symdl.CompileError as err:
        print("CompileError", err.tensor)
''')


def test_cuda_simulator_kernel_is_checked(tmp_path):
    pytest.importorskip("numba_cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", SYMDL_CACHE_DIR=str(tmp_path / "cuda-cache"))
    script = f"LEFT, RIGHT = {LEFT.pattern!r}, {RIGHT.pattern!r}\n" + CUDA_SCRIPT
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "CompileError y", run.stdout + run.stderr


def test_compile_error_is_exported():
    assert symdl.CompileError is CompileError and "CompileError" in symdl.__all__
    assert issubclass(CompileError, RuntimeError)
