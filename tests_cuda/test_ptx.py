"""PTX type checks without a GPU: every catalog kernel (forward and gradients) compiled by numba-cuda
for compute capability 8.0 and 9.0, float32 and float64 (split sums' pair in float32 only: see
SPLIT), and the parallel sums of issue 14 (atomics, shared memory, split sums, fused optimizer
steps) looked for in the PTX itself. A float32 kernel must not contain a single
`.f64` instruction: a float literal, a Python float scalar or an integer promoted to double would
show up as `cvt.f64.f32`, `mul.rn.f64`, `ld.param.f64`, ... and run at 1/64 speed on consumer GPUs.

Run without the simulator, in its own process (`pip install 'symdl[ptx]'` brings NVVM and NVRTC):
    python -m pytest -q tests_cuda/test_ptx.py

Time: numba's typing and lowering are about 80% of a compile_ptx call and do not depend on the target,
so each kernel is typed and lowered once per dtype and its PTX printed for both compute capabilities
(numba-cuda's own compile_ptx does the same steps for one; the fallback calls compile_ptx per target).
"""
from __future__ import annotations

import inspect
import os
import re

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    pytest.skip("PTX checks need numba-cuda's compiler: run this file without NUMBA_ENABLE_CUDASIM",
                allow_module_level=True)
pytest.importorskip("numba_cuda", reason="numba-cuda is not installed: pip install 'symdl[ptx]'")

from numba import cuda  # noqa: E402
from numba import types  # noqa: E402
from numba.cuda import dispatcher  # noqa: E402

from symdl import __version__, formulas  # noqa: E402
from symdl.backends.cuda import generate  # noqa: E402
from symdl.backends.cuda.signatures import signatures  # noqa: E402
from symdl.loops import lower  # noqa: E402
from symdl.loops.lower import lower_system  # noqa: E402
from symdl.runtime.cache import load_module  # noqa: E402

CCS = ((8, 0), (9, 0))
F64 = re.compile(r"\.f64\b")  # a type suffix: add.f64, cvt.f64.f32, .reg .f64 (not register %f64)


class _Device:
    """Stands in for the current device when there is none: numba-cuda compiles the device functions
    a kernel calls for the current device's compute capability."""
    compute_capability = CCS[0]


def _probe() -> str | None:
    def k(x):
        x[0] = 1.0
    try:
        cuda.compile_ptx(k, (types.float32[::1],), cc=CCS[0])
    except Exception as err:  # no NVVM/NVRTC: the wheels or a toolkit are missing
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


_problem = _probe()
if _problem:
    pytest.skip(f"cuda.compile_ptx is unavailable here ({_problem}): pip install 'symdl[ptx]'",
                allow_module_level=True)


@pytest.fixture(autouse=True)
def _no_device(monkeypatch):
    try:
        gpu = cuda.is_available()
    except Exception:
        gpu = False
    if not gpu:
        monkeypatch.setattr(dispatcher, "get_current_device", lambda: _Device())


def ptx(pyfunc, sig) -> list[str]:
    """PTX for each of CCS: one typing and lowering, NVVM once per target."""
    try:
        from numba.cuda.compiler import _compile_pyfunc_with_fixup
    except ImportError:  # a numba-cuda without the helper: the public call per target
        return [cuda.compile_ptx(pyfunc, sig, cc=cc)[0] for cc in CCS]
    lib, _ = _compile_pyfunc_with_fixup(pyfunc, sig, device=False, cc=CCS[0], abi="numba")
    return ["".join(lib.get_asm_strs(cc=cc)) for cc in CCS]


def f64_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()
            if F64.search(line) and not line.lstrip().startswith("//")]


SPLIT = ("_split", "_join")  # split sums' pair (backends/cuda/split.py): a third of the catalog's kernels
_seen: set = set()  # entries share formulas (dense in every layer) and modules share kernels (matmul): each once


def _formulas(x) -> list:
    return [f for part in getattr(x, "formulas", [x]) for f in (_formulas(part) if part is not x else [x])]


def _programs(target):
    grads = target.vjp()  # a formula's gradient of a recurrence is itself a program: flatten
    programs = [target, *(grads.values() if isinstance(grads, dict) else [grads])]
    parts = _formulas(target) + [f for g in programs[1:] for f in _formulas(g)]
    systems = [lower_system([p.producer(o) for o in s.outputs], f"{p.name}.{s.outputs[0]}", s.step, s.direction)
               for p in programs for s in getattr(p, "systems", ())]  # each system's one kernel too
    return [lower(f) for f in parts] + systems


@pytest.mark.parametrize("name", formulas.names())
def test_catalog_ptx(name):
    checked = 0
    for prog in _programs(formulas.get(name)):
        for dtype in ("float32", "float64"):
            module = load_module(generate(prog, dtype, __version__))
            for kernel, sig in signatures(prog, module, dtype).items():
                if dtype == "float64" and kernel.endswith(SPLIT):
                    continue  # the _kernel's statements, checked in float64 above; the float32 check finds leaks
                func = getattr(module, kernel).py_func
                key = (inspect.getsource(func), sig)
                if key in _seen:
                    continue
                _seen.add(key)
                texts = ptx(func, sig)
                for cc, text in zip(CCS, texts, strict=True):
                    assert f".target sm_{cc[0]}{cc[1]}" in text, f"{prog.name}.{kernel}: no sm_{cc[0]}{cc[1]} PTX"
                    if dtype == "float32":
                        bad = f64_lines(text)
                        assert not bad, (f"{prog.name}.{kernel} (float32, sm_{cc[0]}{cc[1]}) has float64 "
                                         f"instructions:\n" + "\n".join(bad[:12]))
                checked += 1
    assert checked or name, "every kernel of this entry was checked under an earlier entry"


def test_f64_detector():
    """The check itself: a float literal in a float32 kernel is caught, and float32 math is not."""
    import math

    def promoted(x):
        x[0] = x[0] * 0.1  # a Python float: double arithmetic (0.1 has no float32 twin)

    def clean(x):
        x[0] = math.exp(x[0])

    sig = (types.float32[::1],)
    assert f64_lines(ptx(promoted, sig)[0])
    assert not f64_lines(ptx(clean, sig)[0])


def _module_ptx(prog, dtype) -> dict:
    """{kernel name: its PTX for each of CCS} of the module printed from `prog`."""
    module = load_module(generate(prog, dtype, __version__))
    return {k: ptx(getattr(module, k).py_func, sig) for k, sig in signatures(prog, module, dtype).items()}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parallel_sums_in_ptx(dtype):
    """What issue 14 asks of the compiled code, on real targets: scatter-adds are atomic adds of
    the kernel's float type (float64 atomics exist from sm_60), sums over everything reduce in
    shared memory, split column sums and fused optimizer steps compile (one kernel, every output
    stored from it), no nest of these runs on one thread."""
    from symdl.formulas.pooling import pool2d
    from symdl.loops.lower import lower_fused
    t = dtype[5:]
    cases = {
        "embedding": (lower(formulas.get("embedding").vjp()["E"]), "scatter_kernel", f"atom.global.add.f{t}"),
        "pool": (lower(pool2d("max", (3, 3), (2, 2), "valid", name="ptx_pool").vjp()["x"]), "scatter_kernel",
                 f"atom.global.add.f{t}"),
        "mse": (lower(formulas.get("mse")), "loops_partial", f"st.shared.f{t}"),
        "bias": (lower(formulas.get("dense").vjp()["b"]), "loops_split", f"ld.global.f{t}"),
    }
    for what, (prog, kernel, instruction) in cases.items():
        texts = _module_ptx(prog, dtype)
        assert not any(k.endswith("_serial") for k in texts), (what, sorted(texts))
        for cc, text in zip(CCS, texts[kernel], strict=True):
            assert instruction in text, f"{what}.{kernel} (sm_{cc[0]}{cc[1]}): no {instruction}"
            assert dtype == "float64" or not f64_lines(text), f"{what}.{kernel}: float64 in a float32 kernel"
    adam = formulas.get("adam_update")
    texts = _module_ptx(lower_fused(adam.formulas, adam.name), dtype)
    assert list(texts) == ["loops_kernel"], sorted(texts)
    for text in texts["loops_kernel"]:
        assert len(re.findall(rf"st\.global\.f{t}", text)) >= 3  # m_new, v_new, w_new from one kernel
        assert dtype == "float64" or not f64_lines(text)
