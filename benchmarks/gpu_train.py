#!/usr/bin/env python3
"""One training epoch of symdl.nn on the GPU (compile(device="cuda")), on the CPU, and PyTorch CUDA.

    python3 benchmarks/gpu_train.py [--batches 20] [--skip torch]

Models (float32, Adam 1e-3, sparse categorical cross-entropy on softmax outputs, batch 128, 20
batches of random data, no shuffling):
  mlp  784 -> 128 relu -> 10 softmax
  cnn  28x28x1 -> Conv2D 8 3x3 relu -> MaxPool 2x2 -> Flatten -> Dense 10 softmax
Each model first trains one warm-up batch (kernel compilation, the `warm-up s` column: numba's
cpu or cuda compile, or loads from numba's cache where an earlier run used the same
SYMDL_CACHE_DIR, as after gpu_check.sh's tests), then one epoch is timed wall-clock
(GPU synchronised at the end; symdl's fit copies each batch's loss to the host anyway). The symdl
cuda and cpu runs start from the same weights: their epoch losses are printed side by side as a
check. Torch runs the same layers (NCHW for the conv) with TF32 off. Needs numba-cuda and, for
the torch column, torch; symdl importable (see benchmarks/gpu_check.sh). Meant to take < 90 s.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from symdl import nn

BATCH = 128


def symdl_model(kind: str) -> nn.Sequential:
    if kind == "mlp":
        layers = [nn.Input((784,)), nn.Dense(128, activation="relu"), nn.Dense(10, activation="softmax")]
    else:
        layers = [nn.Input((28, 28, 1)), nn.Conv2D(8, 3, activation="relu"), nn.MaxPooling2D(2),
                  nn.Flatten(), nn.Dense(10, activation="softmax")]
    return nn.Sequential(layers, seed=0)


def data(kind: str, batches: int):
    rng = np.random.default_rng(0)
    shape = (784,) if kind == "mlp" else (28, 28, 1)
    x = rng.random((batches * BATCH, *shape), dtype=np.float32)
    return x, rng.integers(0, 10, size=len(x))


def run_symdl(kind: str, device: str, x, y, sync) -> tuple[float, float, float]:
    """(warm-up s, epoch s, epoch loss)."""
    model = symdl_model(kind)
    model.compile(optimizer=nn.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", device=device)
    t0 = time.perf_counter()
    model.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    sync()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    hist = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    sync()
    return warm, time.perf_counter() - t0, hist.history["loss"][0]


def run_torch(kind: str, x, y) -> tuple[float, float, float]:
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    dev = torch.device("cuda")
    if kind == "mlp":
        net = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        xt = torch.from_numpy(x)
    else:
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(8 * 13 * 13, 10))
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    net = net.to(dev)
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    lossf = torch.nn.CrossEntropyLoss()  # log-softmax + NLL: the softmax + cross-entropy pair

    def epoch(n_batches):
        total = 0.0
        for b in range(n_batches):  # batches go in one by one, as symdl's fit copies them
            xb = xt[b * BATCH:(b + 1) * BATCH].to(dev, non_blocking=False)
            yb = yt[b * BATCH:(b + 1) * BATCH].to(dev)
            opt.zero_grad(set_to_none=True)
            loss = lossf(net(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item()  # symdl reports every batch loss too
        return total / n_batches

    t0 = time.perf_counter()
    epoch(1)
    torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss = epoch(len(x) // BATCH)
    torch.cuda.synchronize()
    return warm, time.perf_counter() - t0, loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--skip", default="", help="comma-separated: torch, cpu, cuda (also torch), mlp, cnn")
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    warnings.filterwarnings("ignore", message=".*Grid size")  # numba-cuda on small launches: expected here
    start = time.perf_counter()
    if "cuda" in skip:
        sync, gpu = (lambda: None), "not used"
    else:
        from numba import cuda
        sync, gpu = cuda.synchronize, cuda.get_current_device().name
    gpu = gpu.decode() if isinstance(gpu, bytes) else gpu
    print(f"GPU: {gpu}; batch {BATCH}, {args.batches} batches, float32, Adam; wall-clock seconds")
    rows = []
    for kind in ("mlp", "cnn"):
        if kind in skip:
            continue
        x, y = data(kind, args.batches)
        for name, fn in (("symdl cuda", lambda: run_symdl(kind, "cuda", x, y, sync)),
                         ("symdl cpu", lambda: run_symdl(kind, "cpu", x, y, lambda: None)),
                         ("torch cuda", lambda: run_torch(kind, x, y))):
            if name.split()[-1] in skip or name.split()[0] in skip or name == "torch cuda" and "cuda" in skip:
                continue
            warm, sec, loss = fn()
            rows.append((kind, name, warm, sec, loss))
            print(f"  done {kind} {name}: {sec:.3f} s", flush=True)
    print(f"\n{'model':5s} {'run':11s} {'warm-up s':>10s} {'epoch s':>9s} {'ms/batch':>9s} {'epoch loss':>11s} "
          f"{'time / symdl cuda':>18s}")
    for kind, name, warm, sec, loss in rows:
        ref = next((r[3] for r in rows if r[0] == kind and r[1] == "symdl cuda"), None)
        speed = f"{sec / ref:17.2f}x" if ref else f"{'-':>18s}"
        print(f"{kind:5s} {name:11s} {warm:10.2f} {sec:9.3f} {1e3 * sec / args.batches:9.2f} {loss:11.5f} {speed}")
    for kind in ("mlp", "cnn"):
        got = {r[1]: r[4] for r in rows if r[0] == kind}
        if "symdl cuda" in got and "symdl cpu" in got:
            rel = abs(got["symdl cuda"] - got["symdl cpu"]) / abs(got["symdl cpu"])
            print(f"{kind}: symdl cuda vs cpu epoch loss, relative difference {rel:.1e}"
                  + ("" if rel < 1e-3 else "  <-- MISMATCH"))
    print(f"(time / symdl cuda > 1: that run is slower than symdl cuda; total {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
