"""The cuda backend beyond the catalog: one IR printed by both backends, device arrays in and out,
tiled matmul edges and transposes, grid-stride and multi-block reductions, the serial fallback,
argument checks on device arrays, the missing-extra error, and `symdl verify --backend cuda`."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp
from numba import cuda

import symdl
from symdl import formulas
from symdl.backends.cpu import generate as cpu_generate
from symdl.backends.cpu.printer import CpuPrinter as Printer
from symdl.printing import py_name
from symdl.version import __version__
from symdl.backends.cuda import launch
from symdl.loops import format_ir, lower
from symdl.loops.ir import Accumulate, Let, Loop, Nest, Store

n, m, kk = sp.symbols("n m K", integer=True, positive=True)
RNG = np.random.default_rng(7)


def _walk(body):
    for s in body:
        yield s
        if isinstance(s, Loop):
            yield from _walk(s.body)
        elif hasattr(s, "then"):
            yield from _walk(s.then)
            yield from _walk(s.orelse)


def host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else a


def test_both_backends_print_the_same_ir():
    """conv2d's loop IR, printed by both backends: every statement of the IR appears, printed the
    same way, in the cpu and in the cuda source; inner loops are the same loops; the parallel
    output loops become the thread index on the GPU. (The cpu backend lowers conv2d with its own
    schedule, the output row accumulated innermost; the same IR is what both must print alike.)"""
    f = formulas.get("conv2d")
    prog = lower(f)
    print(format_ir(prog))
    cpu_src, gpu_src = cpu_generate(prog, "float32", __version__), f.compile(backend="cuda").source("float32")
    p = Printer(prog.dims, [t.name for t in prog.inputs if t.integer], "float32")
    nest = next(s for s in prog.steps if isinstance(s, Nest))
    statements = [s for s in _walk(nest.body) if isinstance(s, (Accumulate, Store, Let))]
    assert any(isinstance(s, Accumulate) for s in statements)
    for s in statements:
        if isinstance(s, Accumulate):
            text = f"{py_name(s.name.name)} += {p.value(s.value)}"
        elif isinstance(s, Let):
            text = f"{py_name(s.name.name)} = {p.value(s.value)}"
        else:
            text = f"{py_name(s.tensor)}[{', '.join(p.index(i) for i in s.index)}] = {p.value(s.value)}"
        assert text in cpu_src and text in gpu_src, text
    outer = [s for s in _walk(nest.body) if isinstance(s, Loop)]
    for loop in outer:
        header = f"for {py_name(loop.var.name)} in range({p.index(loop.lo)}, {p.index(loop.stop)}):"
        if loop.parallel:  # the cpu: parts of the range under prange, each walked unsigned (statements.py)
            assert f"_parts = min(64, {p.index(loop.stop)})" in cpu_src and "for _part in nb.prange(_parts):" in cpu_src
            assert f"for _{loop.var.name}0 in range(nb.uint64(" in cpu_src
            assert "cuda.grid(1)" in gpu_src and f"{loop.var.name} = " in gpu_src
        elif header not in gpu_src:  # an output loop flattened into the thread index
            assert f"        {py_name(loop.var.name)} = " in gpu_src and header in cpu_src
        else:
            assert header in cpu_src


def _dense_nobias():
    i, j, k = sp.Idx("i", n), sp.Idx("j", m), sp.Idx("k", kk)
    x, w, y = sp.IndexedBase("x"), sp.IndexedBase("w"), sp.IndexedBase("y")
    return symdl.Formula(sp.Eq(y[i, j], sp.Sum(x[i, k] * w[k, j], k)), name="mm_test")


@pytest.mark.parametrize("shape", [(11, 13, 9), (1, 5, 1), (16, 8, 17)])
def test_matmul_tiles_and_transposes(shape):
    """Sizes that cross the simulator's 8x8 tiles and 4-deep K steps; the gradient kernels are
    matmuls with a transposed operand (x.T @ g and g @ w.T); a formula with both transposed."""
    rows, inner, cols = shape
    x = RNG.standard_normal((rows, inner)).astype(np.float32)
    w = RNG.standard_normal((inner, cols)).astype(np.float32)
    g = RNG.standard_normal((rows, cols)).astype(np.float32)
    kern = _dense_nobias().compile(backend="cuda")
    assert "matmul" in format_ir(kern.program)
    np.testing.assert_allclose(kern(x=x, w=w), x @ w, rtol=1e-5, atol=1e-5)
    grads = kern.vjp(g, x=x, w=w)
    np.testing.assert_allclose(grads["x"], g @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads["w"], x.T @ g, rtol=1e-5, atol=1e-5)
    i, j, k = sp.Idx("i", n), sp.Idx("j", m), sp.Idx("k", kk)
    a, b, y = sp.IndexedBase("a"), sp.IndexedBase("b"), sp.IndexedBase("y")
    tt = symdl.Formula(sp.Eq(y[i, j], sp.Sum(a[k, i] * b[j, k], k)), name="tt").compile(backend="cuda")
    assert "matmul(a.T, b.T)" in format_ir(tt.program)
    np.testing.assert_allclose(tt(a=x.T.copy(), b=w.T.copy()), x @ w, rtol=1e-5, atol=1e-5)


def test_grid_stride_and_multiblock_reduction():
    """More elements than the launch has threads (grid-stride), and a loss whose sum spans every
    block (partials, then the final kernel), float32 and float64."""
    cap = launch.THREADS * launch.MAX_BLOCKS
    size = 3 * cap + 5
    mse = formulas.get("mse").compile(backend="cuda")
    relu = formulas.get("relu").compile(backend="cuda")
    for dtype in (np.float32, np.float64):
        a = RNG.standard_normal((3, size // 3)).astype(dtype)
        b = RNG.standard_normal((3, size // 3)).astype(dtype)
        loss = mse(yhat=a, y=b)
        assert loss.shape == () and loss.dtype == dtype
        np.testing.assert_allclose(loss, np.mean((a - b) ** 2), rtol=1e-5 if dtype == np.float32 else 1e-12)
        (name,) = [t.name for t in formulas.get("relu").inputs]
        np.testing.assert_array_equal(relu(**{name: a}), np.maximum(a, 0))
    assert "_partial" in mse.source() and "_final" in mse.source()


def test_serial_fallback_for_a_max_reduction():
    i = sp.Idx("i", n)
    x = sp.IndexedBase("x")
    f = symdl.Formula(sp.Eq(sp.Symbol("L"), symdl.Max(x[i], i)), name="max_all")
    kern = f.compile(backend="cuda")
    assert "_serial[1, 1]" in kern.source()
    v = RNG.standard_normal(37)
    assert kern(x=v) == v.max()
    np.testing.assert_array_equal(kern.vjp(1.0, x=v)["x"], (v == v.max()).astype(float))


def test_device_arrays_in_and_out():
    kern = formulas.get("dense").compile(backend="cuda")
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    w = RNG.standard_normal((4, 3)).astype(np.float32)
    b = RNG.standard_normal(3).astype(np.float32)
    want = x @ w + b
    dx, dw, db = cuda.to_device(x), cuda.to_device(w), cuda.to_device(b)
    y = kern(x=dx, W=dw, b=db)
    assert not isinstance(y, np.ndarray) and hasattr(y, "copy_to_host")
    np.testing.assert_allclose(y.copy_to_host(), want, rtol=1e-5)
    mixed = kern(x=x, W=dw, b=b)  # any device input: the result stays on the device
    assert hasattr(mixed, "copy_to_host")
    np.testing.assert_allclose(mixed.copy_to_host(), want, rtol=1e-5)
    out = cuda.device_array((5, 3), dtype=np.float32)
    assert kern(out=out, x=dx, W=dw, b=db) is out
    np.testing.assert_allclose(out.copy_to_host(), want, rtol=1e-5)
    host_out = np.zeros((5, 3), np.float32)
    assert kern(out=host_out, x=x, W=w, b=b) is host_out
    np.testing.assert_allclose(host_out, want, rtol=1e-5)
    g = RNG.standard_normal((5, 3)).astype(np.float32)
    grads = kern.vjp(cuda.to_device(g), x=dx, W=dw, b=db)
    assert all(hasattr(v, "copy_to_host") for v in grads.values())
    np.testing.assert_allclose(grads["W"].copy_to_host(), x.T @ g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads["b"].copy_to_host(), g.sum(0), rtol=1e-5, atol=1e-6)
    hg = kern.vjp(g, x=x, W=w, b=b)
    assert all(isinstance(v, np.ndarray) for v in hg.values())


def test_device_arrays_through_programs_and_scalar_outputs():
    p = formulas.get("dense_softmax")
    pk = p.compile(backend="cuda")
    names = [t.name for t in p.inputs]
    shapes = {"x": (4, 3), "W": (3, 5), "b": (5,)}
    inputs = {k: RNG.standard_normal(shapes[k]).astype(np.float32) for k in names}
    want = p.compile()(**inputs)
    got = pk(**{k: cuda.to_device(v) for k, v in inputs.items()})
    assert hasattr(got, "copy_to_host")
    np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-5, atol=1e-6)
    g = RNG.standard_normal(want.shape).astype(np.float32)
    gw = p.compile().vjp(g, **inputs)
    gd = pk.vjp(cuda.to_device(g), **{k: cuda.to_device(v) for k, v in inputs.items()})
    for k in gw:
        np.testing.assert_allclose(host(gd[k]), gw[k], rtol=1e-4, atol=1e-6)
    mse = formulas.get("mse").compile(backend="cuda")
    a, b = (RNG.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    loss = mse(yhat=cuda.to_device(a), y=cuda.to_device(b))
    assert loss.shape == () and hasattr(loss, "copy_to_host")
    np.testing.assert_allclose(loss.copy_to_host(), np.mean((a - b) ** 2), rtol=1e-5)


def test_bad_calls_with_device_arrays_name_the_tensor():
    kern = formulas.get("dense").compile(backend="cuda")
    x = cuda.to_device(np.zeros((5, 4), np.float32))
    w = cuda.to_device(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="'b'"):
        kern(x=x, W=w, b=cuda.to_device(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="mix float dtypes"):
        kern(x=x, W=w, b=cuda.to_device(np.zeros(3, np.float64)))
    with pytest.raises(ValueError, match="out="):
        kern(out=cuda.device_array((5, 4), np.float32), x=x, W=w, b=np.zeros(3, np.float32))
    sce = formulas.get("sparse_categorical_crossentropy").compile(backend="cuda")
    p = cuda.to_device(np.full((3, 4), 0.25))
    with pytest.raises(ValueError, match="integer tensor t"):
        sce(p=p, t=cuda.to_device(np.array([0, 4, 1])))
    ok = sce(p=p, t=cuda.to_device(np.array([0, 3, 1])))
    np.testing.assert_allclose(ok.copy_to_host(), -np.log(0.25))


def test_missing_numba_cuda_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba_cuda", None)  # `import numba_cuda` now fails
    with pytest.raises(ImportError, match=r"pip install 'symdl\[cuda\]'"):
        formulas.get("relu").compile(backend="cuda")


def test_import_symdl_loads_no_cuda():
    """`import symdl`, cpu kernels and printing cuda source load no numba.cuda; compiling for cuda does."""
    code = ("import sys, numpy as np, symdl; from symdl import formulas\n"
            "loaded = lambda: sorted(m for m in sys.modules if m.startswith(('numba_cuda', 'numba.cuda')))\n"
            "k = formulas.get('dense').compile(); k(x=np.ones((2, 3)), W=np.ones((3, 2)), b=np.ones(2))\n"
            "from symdl.backends.cuda import generate; from symdl.loops import lower\n"
            "generate(lower(formulas.get('dense')), 'float32', 'test')\n"
            "print(loaded())\n"
            "formulas.get('dense').compile(backend='cuda')\n"
            "print('numba.cuda' in loaded())\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"], done.stdout


def test_cli_verify_backend_cuda():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM=os.environ.get("NUMBA_ENABLE_CUDASIM", "0"))
    done = subprocess.run([sys.executable, "-m", "symdl.cli", "verify", "--backend", "cuda", "mse", "dense"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 of 2 formulas verified" in done.stdout
