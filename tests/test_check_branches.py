"""The self-check runs the path through a module's Branches that the call takes (runtime/selfcheck.py).

A convolution's module branches on its output channels (contraction.MIN_REUSE): from 16 on it
gathers patches for one GEMM, below it runs loops. The check draws its inputs at sizes 2-8, where
the loops run; it used to check (and compile) the loops whatever the call took, so a broken gather
path passed the check and a cold first step compiled nests it never ran. Each path is now checked
when a call first takes it, with the dimensions the Branch reads raised toward the call's.
"""
from __future__ import annotations

import numba
import numpy as np
import pytest

import symdl.backends.cpu.blas as blas
from symdl import CompileError
from symdl.formulas.conv import conv2d
from symdl.runtime import selfcheck


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SYMDL_CHECK", raising=False)


def conv_reference(x, w, bias, padding):
    """NumPy: y[b, i, j, o] = Σ x[b, i + kh, j + kw, c] w[kh, kw, c, o] + bias[o]."""
    kh, kw = w.shape[:2]
    if padding == "same":
        x = np.pad(x, ((0, 0), (kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0)))
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    y = np.zeros((x.shape[0], oh, ow, w.shape[3]))
    for a in range(kh):
        for b in range(kw):
            y += np.einsum("nijc,co->nijo", x[:, a:a + oh, b:b + ow, :].astype(np.float64), w[a, b])
    return y + bias


def inputs(cout: int, dtype, shape=(3, 7, 6, 2), seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(-1, 1, shape).astype(dtype),
            "kernel": rng.uniform(-1, 1, (3, 3, shape[3], cout)).astype(dtype),
            "bias": rng.uniform(-1, 1, cout).astype(dtype)}


def compiled_serial(module) -> dict:
    return {n: len(d.signatures) for n, d in vars(module).items()
            if isinstance(d, numba.core.dispatcher.Dispatcher) and n.endswith("_serial")}


def markers() -> list:
    return sorted(p.name.split(".", 1)[1] for p in selfcheck.cache_dir().glob("*.checked"))


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_path_is_checked_when_a_call_takes_it(padding, dtype):
    tol = 1e-4 if dtype == np.float32 else 1e-12
    kern = conv2d(padding=padding, name=f"conv_paths_{padding}_{np.dtype(dtype).name}").compile()
    wide = inputs(32, dtype)
    np.testing.assert_allclose(kern(**wide), conv_reference(*wide.values(), padding), rtol=tol, atol=tol)
    module = kern._module(np.dtype(dtype))
    compiled = compiled_serial(module)
    assert compiled and all(n in compiled for n in ("plain_loops_serial", "loops_serial"))
    # the gather path only: the loops of the other path are not compiled
    assert compiled["plain_loops_serial"] == 0 and all(v == 1 for n, v in compiled.items()
                                                       if not n.startswith("plain_")), compiled
    assert markers() == ["serial.path-1.checked"]
    narrow = inputs(4, dtype, (2, 5, 8, 3), seed=1)  # below MIN_REUSE: the loops, checked now
    np.testing.assert_allclose(kern(**narrow), conv_reference(*narrow.values(), padding), rtol=tol, atol=tol)
    assert compiled_serial(module)["plain_loops_serial"] == 1
    assert markers() == ["serial.path-0.checked", "serial.path-1.checked"]


def test_a_broken_gather_path_is_caught(monkeypatch):
    """A wrong library step on the gather path: the first call taking that path raises
    CompileError (the check at sizes 2-8 used to run only the loops, and pass)."""
    def wrong_contract(out, *args):
        blas_contract(out, *args)
        out += 1.0

    blas_contract = blas.contract
    monkeypatch.setattr(blas, "contract", wrong_contract)  # read when the module first loads
    kern = conv2d(name="conv_paths_broken").compile()
    narrow = inputs(4, np.float64)
    np.testing.assert_allclose(kern(**narrow), conv_reference(*narrow.values(), "valid"), rtol=1e-12, atol=1e-12)
    with pytest.raises(CompileError) as info:
        kern(**inputs(32, np.float64))
    assert "conv_paths_broken" in str(info.value) and info.value.tensor == "y"
    # the mutation is real: unchecked, the gather path returns wrong numbers
    unchecked = conv2d(name="conv_paths_broken").compile(check=False)
    wide = inputs(32, np.float64)
    assert not np.allclose(unchecked(**wide), conv_reference(*wide.values(), "valid"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_paths_follow_the_call(dtype):
    """The kernel gradient branches the same way; its check takes the vjp call's path."""
    tol = 1e-3 if dtype == np.float32 else 1e-10
    kern = conv2d(name=f"conv_paths_vjp_{np.dtype(dtype).name}").compile()
    x = inputs(32, dtype, (2, 6, 6, 3))
    g = np.random.default_rng(5).uniform(-1, 1, (2, 4, 4, 32)).astype(dtype)
    got = kern.vjp(g, wrt=["kernel"], **x)["kernel"]
    want = np.zeros(x["kernel"].shape)
    for a in range(3):
        for b in range(3):
            want[a, b] = np.einsum("nijc,nijo->co", x["x"][:, a:a + 4, b:b + 4, :].astype(np.float64), g)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    grad_module = kern.grad_kernel("kernel")._module(np.dtype(dtype))
    compiled = compiled_serial(grad_module)
    assert any(n.startswith("plain_") for n in compiled), compiled  # this gradient branches too
    assert all(v == 0 for n, v in compiled.items() if n.startswith("plain_")), compiled
