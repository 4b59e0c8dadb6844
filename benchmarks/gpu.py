#!/usr/bin/env python3
"""symdl's cuda kernels beside PyTorch (cuBLAS, cuDNN) on the same GPU, in one process.

    python3 benchmarks/gpu.py [--quick] [--reps N]

Sections: (1) a matrix product y = x @ w (the dense layer without bias: one tiled symdl kernel)
at 512..4096 square, float32, against torch.matmul in true float32 (TF32 off, torch's default);
(2) a dense layer forward + vjp (x @ W + b, then the gradients of x, W and b) at batch 128..1024,
1024 -> 1024 features, against the same ops through torch autograd; (3) conv2d forward,
32x28x28x1 (NHWC) -> 32 filters 3x3, against torch.nn.functional.conv2d (NCHW, cuDNN).

Every result is checked against torch before it is timed. Times are wall-clock per call with
both libraries' streams synchronised after each call (so symdl's Python launch overhead counts,
as it does for a user), after warm-up (compilation excluded), median of --reps. symdl writes into
preallocated outputs (`out=`), as torch's caching allocator makes allocation free on its side.
Needs: torch, numba-cuda, sympy; symdl importable (PYTHONPATH=. works from a checkout, see
benchmarks/gpu_check.sh).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import sympy as sp
import torch
from numba import cuda

import symdl


def sync() -> None:
    cuda.synchronize()
    torch.cuda.synchronize()


def median_ms(fn, reps: int, warm: int = 3) -> float:
    for _ in range(warm):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def rel_err(got, want) -> float:
    got = got.copy_to_host() if hasattr(got, "copy_to_host") else got
    want = want.detach().cpu().numpy() if isinstance(want, torch.Tensor) else want
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / max(np.linalg.norm(want), 1e-30))


def check(name: str, got, want, tol: float = 1e-4) -> None:
    err = rel_err(got, want)
    if not err <= tol:
        raise SystemExit(f"{name}: symdl differs from torch by {err:.2e} (relative) > {tol}")


def matmul_formula():
    n, m, k = sp.symbols("n m k", integer=True, positive=True)
    i, j, kk = sp.Idx("i", n), sp.Idx("j", m), sp.Idx("k", k)
    x, w, y = sp.IndexedBase("x"), sp.IndexedBase("w"), sp.IndexedBase("y")
    return symdl.Formula(sp.Eq(y[i, j], sp.Sum(x[i, kk] * w[kk, j], kk)), name="matmul")


def dense_formula():
    B, N, M = sp.symbols("B N M", integer=True, positive=True)
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, b, y = (sp.IndexedBase(s) for s in "x W b y".split())
    return symdl.Formula(sp.Eq(y[i, j], sp.Sum(x[i, k] * W[k, j], k) + b[j]), name="dense")


def conv_formula():
    B, H, W, Cin, Cout = sp.symbols("B H W Cin Cout", integer=True, positive=True)
    b, i, j, o = sp.Idx("b", B), sp.Idx("i", H - 2), sp.Idx("j", W - 2), sp.Idx("o", Cout)
    kh, kw, c = sp.Idx("kh", 3), sp.Idx("kw", 3), sp.Idx("c", Cin)
    x = sp.IndexedBase("x", shape=(B, H, W, Cin))
    kern, bias, y = sp.IndexedBase("kernel"), sp.IndexedBase("bias"), sp.IndexedBase("y")
    body = sp.Sum(kern[kh, kw, c, o] * x[b, i + kh, j + kw, c], kh, kw, c) + bias[o]
    return symdl.Formula(sp.Eq(y[b, i, j, o], body), name="conv2d")


def section_matmul(sizes, reps, rng, rows):
    kern = matmul_formula().compile(backend="cuda")
    for s in sizes:
        a = rng.standard_normal((s, s)).astype(np.float32)
        b = rng.standard_normal((s, s)).astype(np.float32)
        da, db, dy = cuda.to_device(a), cuda.to_device(b), cuda.device_array((s, s), np.float32)
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        ty = torch.empty((s, s), device="cuda")
        kern(out=dy, x=da, w=db)
        torch.matmul(ta, tb, out=ty)
        sync()
        check(f"matmul {s}", dy, ty)
        n = max(3, reps if s < 4096 else reps // 2)
        t_s = median_ms(lambda: kern(out=dy, x=da, w=db), n)
        t_t = median_ms(lambda: torch.matmul(ta, tb, out=ty), n)
        flops = 2.0 * s ** 3
        rows.append((f"matmul {s}x{s}x{s} f32", t_s, t_t, flops / t_s / 1e9, flops / t_t / 1e9))


def section_dense(batches, reps, rng, rows, features=1024):
    kern = dense_formula().compile(backend="cuda")
    for bsz in batches:
        x = rng.standard_normal((bsz, features)).astype(np.float32)
        W = (rng.standard_normal((features, features)) / np.sqrt(features)).astype(np.float32)
        b = rng.standard_normal(features).astype(np.float32)
        g = rng.standard_normal((bsz, features)).astype(np.float32)
        dx, dW, db, dg = (cuda.to_device(v) for v in (x, W, b, g))
        dy = cuda.device_array((bsz, features), np.float32)
        tx, tW, tb, tg = (torch.from_numpy(v).cuda().requires_grad_(True) for v in (x, W, b, g))

        def symdl_step():
            kern(out=dy, x=dx, W=dW, b=db)
            return kern.vjp(dg, x=dx, W=dW, b=db)

        def torch_step():
            for t in (tx, tW, tb):
                t.grad = None
            y = tx @ tW + tb
            y.backward(tg)
            return y

        grads, y = symdl_step(), torch_step()
        sync()
        check(f"dense {bsz} y", dy, y)
        for name, t in (("x", tx), ("W", tW), ("b", tb)):
            check(f"dense {bsz} grad {name}", grads[name], t.grad)
        t_s, t_t = median_ms(symdl_step, reps), median_ms(torch_step, reps)
        flops = 3 * 2.0 * bsz * features * features  # forward, grad x, grad W
        rows.append((f"dense fwd+vjp B={bsz} 1024->1024", t_s, t_t, flops / t_s / 1e9, flops / t_t / 1e9))


def section_conv(reps, rng, rows, bsz=32, hw=28, cin=1, cout=32):
    kern = conv_formula().compile(backend="cuda")
    x = rng.standard_normal((bsz, hw, hw, cin)).astype(np.float32)
    w = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    dx, dw, db = (cuda.to_device(v) for v in (x, w, b))
    dy = cuda.device_array((bsz, hw - 2, hw - 2, cout), np.float32)
    tx = torch.from_numpy(x).cuda().permute(0, 3, 1, 2).contiguous()   # NCHW
    tw = torch.from_numpy(w).cuda().permute(3, 2, 0, 1).contiguous()   # OIHW
    tb = torch.from_numpy(b).cuda()
    conv = torch.nn.functional.conv2d
    kern(out=dy, x=dx, kernel=dw, bias=db)
    ty = conv(tx, tw, tb)
    sync()
    check("conv2d", dy, ty.permute(0, 2, 3, 1))
    t_s = median_ms(lambda: kern(out=dy, x=dx, kernel=dw, bias=db), reps)
    t_t = median_ms(lambda: conv(tx, tw, tb), reps)
    flops = 2.0 * bsz * (hw - 2) ** 2 * cout * 9 * cin
    rows.append((f"conv2d {bsz}x{hw}x{hw}x{cin} -> {cout} 3x3", t_s, t_t, flops / t_s / 1e9, flops / t_t / 1e9))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--sections", default="matmul,dense,conv", help="comma-separated subset")
    args = ap.parse_args(argv)
    reps = 5 if args.quick else args.reps
    torch.backends.cuda.matmul.allow_tf32 = False  # torch's default: compare float32 with float32
    torch.backends.cudnn.allow_tf32 = False
    dev = cuda.get_current_device()
    print(f"device: {torch.cuda.get_device_name()} (cc {dev.compute_capability}), torch {torch.__version__}, "
          f"symdl {symdl.__version__}; TF32 off; wall-clock per call incl. launch, synchronised, "
          f"median of {reps}", flush=True)
    rng = np.random.default_rng(0)
    rows: list = []
    t0 = time.perf_counter()
    sections = set(args.sections.split(","))
    if "matmul" in sections:
        section_matmul([512, 1024] if args.quick else [512, 1024, 2048, 4096], reps, rng, rows)
    if "dense" in sections:
        section_dense([128, 1024] if args.quick else [128, 256, 512, 1024], reps, rng, rows)
    if "conv" in sections:
        section_conv(reps, rng, rows)
    print(f"\n{'case':36s} {'symdl ms':>9s} {'torch ms':>9s} {'symdl TF/s':>11s} {'torch TF/s':>11s} "
          f"{'symdl/torch speed':>18s}")
    for name, ts, tt, fs, ft in rows:  # flops / ms / 1e9 = TFLOP/s
        print(f"{name:36s} {ts:9.3f} {tt:9.3f} {fs:11.2f} {ft:11.2f} {tt / ts:17.2f}x")
    print(f"\n(total {time.perf_counter() - t0:.0f} s; ratio < 1: symdl slower)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
