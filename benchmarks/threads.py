#!/usr/bin/env python
"""Threads that never hurt: when a parallel flavour pays, and training steps at 1 and 2 threads,
on a quiet machine and beside a competing CPU-bound process.

    python benchmarks/threads.py [--steps 40] [--rounds 3] [--models mlp_small_b32,mlp_512_b256,...]

Part 1, the crossover: an elementwise nest (bias + relu) and a nest with a reduction inside (a row
sum) run serial and parallel at growing sizes (µs, median); where parallel wins is where
backends/cpu/backend.py's PARALLEL_WORK and ELEMENTWISE_WORK belong.
Part 2, the contract: each model's training step (symdl.nn, float32, Adam), median ms at
symdl.set_num_threads(1) and (2) and with the default that follows the load (runtime/threads.py:
`adapt`), quiet and with a busy loop running in a second process; "auto / 1" must stay at or below
1.10 under load. Each figure is the median over --rounds subprocesses, the three settings taking
turns round after round, so that one process's luck (its cores, its memory) or a burst of load
decides no ratio.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import textwrap

MODELS = {
    "mlp_small_b32": ("[nn.Input((784,)), nn.Dense(64, activation='relu'), nn.Dense(64, activation='relu'),"
                      " nn.Dense(10, activation='softmax')]", (32, 784)),
    "mlp_512_b256": ("[nn.Input((784,)), nn.Dense(512, activation='relu'), nn.Dense(10, activation='softmax')]",
                     (256, 784)),
    "cnn_mnist_b32": ("[nn.Input((28, 28, 1)), nn.Conv2D(32, (3, 3), activation='relu'), nn.MaxPooling2D((2, 2)),"
                      " nn.Flatten(), nn.Dense(10, activation='softmax')]", (32, 28, 28, 1)),
    "rnn_b32": ("[nn.Input((50, 32)), nn.SimpleRNN(128), nn.Dense(10, activation='softmax')]", (32, 50, 32)),
}

STEP = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    import symdl
    from symdl import nn
    layers, shape, threads, steps = {layers}, {shape}, {threads}, {steps}
    if threads:
        symdl.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.random(shape, dtype=np.float32)
    y = rng.integers(0, 10, shape[0])
    model = nn.Sequential(layers)
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
    warm = time.perf_counter() + 0.8  # the default looks at the load every 0.25 s: let it settle
    while time.perf_counter() < warm:
        model.train_on_batch(x, y)
    times, end = [], time.perf_counter() + 1.0
    while len(times) < steps or time.perf_counter() < end:
        t = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t)
    print(json.dumps(float(np.median(times) * 1e3)))
''')

CROSSOVER = textwrap.dedent('''
    import json, time
    import numpy as np, sympy as sp, symdl
    R, C = sp.symbols("R C", integer=True, positive=True)
    i, j = sp.Idx("i", R), sp.Idx("j", C)
    x, b, y = sp.IndexedBase("x"), sp.IndexedBase("b"), sp.IndexedBase("y")
    nests = {{"elementwise": symdl.Formula(sp.Eq(y[i, j], sp.Max(0, x[i, j] + b[j])), name="bench_bias_relu"),
              "reduction": symdl.Formula(sp.Eq(y[i], sp.Sum(x[i, j] * x[i, j], (j, 0, C - 1))), name="bench_rowsq")}}
    rows = []
    for n in (1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22):
        R_, C_ = n // 256, 256
        X = np.random.rand(R_, C_).astype(np.float32); B = np.random.rand(C_).astype(np.float32)
        for kind, f in nests.items():
            kern = f.compile()
            arrays = {{"x": X, "b": B}}
            args = [arrays[n] for n in kern._order]
            plan = kern.plan(np.dtype(np.float32), tuple(a.shape for a in args))  # the run a call makes
            out = np.empty(plan.out_shape, dtype=np.float32)
            med = {{}}
            for par in (False, True, False, True):
                plan.run(out, *args, *plan.values, par)
                ts = []
                for _ in range(30):
                    t = time.perf_counter(); plan.run(out, *args, *plan.values, par); ts.append(time.perf_counter() - t)
                med[par] = float(np.median(ts) * 1e6)
            rows.append((kind, n, med[False], med[True]))
    print(json.dumps(rows))
''')


def child(code: str) -> object:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy(stop):
    while not stop.is_set():
        sum(range(10_000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--skip-crossover", action="store_true")
    args = ap.parse_args()
    if not args.skip_crossover:
        print("| nest | iterations | serial µs | parallel µs | parallel wins |\n|---|---:|---:|---:|---|")
        for kind, n, ser, par in child(CROSSOVER.format()):
            print(f"| {kind} | 2^{n.bit_length() - 1} | {ser:.1f} | {par:.1f} | {'yes' if par < ser else 'no'} |")
    print("\n| model | quiet 1 | quiet 2 | quiet auto | auto / 1 | loaded 1 | loaded 2 | loaded auto | auto / 1 |"
          "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.models.split(","):
        layers, shape = MODELS[name]
        row = []
        for load in (False, True):
            stop = multiprocessing.Event()
            proc = multiprocessing.Process(target=busy, args=(stop,)) if load else None
            if proc:
                proc.start()
            try:
                runs = [[child(STEP.format(layers=layers, shape=shape, threads=n, steps=args.steps))
                         for n in (1, 2, 0)] for _ in range(args.rounds)]
            finally:
                if proc:
                    stop.set()
                    proc.join()
            t1, t2, auto = (statistics.median(r[k] for r in runs) for k in range(3))
            row += [f"{t1:.2f}", f"{t2:.2f}", f"{auto:.2f}", f"{auto / t1:.2f}"]
        print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
