#!/usr/bin/env python
"""Data-parallel throughput: samples/s of a fit on 1 and 2 MPI ranks (1 thread each), and the time
each step spends in the gradient Allreduce (waiting for the slower rank included).

    python benchmarks/distributed.py [--models e2,e5] [--ranks 1,2] [--steps 60] [--batch 32]

Each model trains on random data of the documents' MNIST shape (784 or 28x28x1), batch `--batch`
per rank (the global batch grows with the ranks: weak scaling). Needs symdl[mpi].
"""
import argparse
import json
import subprocess
import sys
import time

import numpy as np


def worker(model_name: str, steps: int, batch: int) -> None:
    from symdl import nn
    from symdl.nn import zoo

    dist = nn.Distributed(threads=1)
    spec = zoo.get(model_name)
    shape = (784,) if spec.layout == "flat" else (28, 28, 1)
    rng = np.random.default_rng(0)
    n = steps * batch * dist.size
    x = rng.random((n, *shape), dtype=np.float32)
    y = rng.integers(0, 10, n)
    model = spec.build(shape, dataset="mnist", seed=0)
    warm = batch * dist.size * 3
    model.fit(x[:warm], y[:warm], batch_size=batch, epochs=1, verbose=0, shuffle=False, distributed=dist)
    dist.allreduce_seconds, dist.steps = 0.0, 0
    dist.comm.Barrier()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False, distributed=dist)
    seconds = time.perf_counter() - start
    if dist.rank == 0:
        print(json.dumps({"model": model_name, "ranks": dist.size, "samples_per_s": n / seconds,
                          "step_ms": 1e3 * seconds / dist.steps,
                          "allreduce_ms": 1e3 * dist.allreduce_seconds / dist.steps,
                          "gradient_bytes": 4 * model.count_params()}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="e2,e5")
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.steps, args.batch)
        return 0
    from symdl import launch
    print(f"{'model':6} {'ranks':>5} {'samples/s':>10} {'step ms':>8} {'allreduce ms':>13} {'grad KB':>8}")
    for model in args.models.split(","):
        for ranks in map(int, args.ranks.split(",")):
            done = subprocess.run([launch.mpiexec(), "-n", str(ranks), sys.executable, __file__, "--worker", model,
                                   "--steps", str(args.steps), "--batch", str(args.batch)],
                                  capture_output=True, text=True)
            if done.returncode:
                print(done.stdout + done.stderr, file=sys.stderr)
                return 1
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{model:6} {ranks:>5} {r['samples_per_s']:>10.0f} {r['step_ms']:>8.2f} "
                  f"{r['allreduce_ms']:>13.3f} {r['gradient_bytes'] / 1024:>8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
