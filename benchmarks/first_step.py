#!/usr/bin/env python
"""The first training step's latency, cold and warm (the issue's E2 and E5 targets).

    python benchmarks/first_step.py [--models e2,e5] [--repeat 3]

Each run is a fresh Python process: `import symdl` and `from symdl import nn`, the model built and
compiled (Adam, sparse_categorical_crossentropy, batch 32 of random inputs), then one timed
`model.train_on_batch`. `cold`: an empty SYMDL_CACHE_DIR in a temporary folder per run; `warm`:
processes on a folder one untimed run filled. `cold, alone`: as cold, with no compile-ahead helper
(SYMDL_COMPILE_AHEAD=0, runtime/ahead.py), run alternately with the cold runs. Columns: the medians
over --repeat runs of the first step's wall time and its process CPU time (less inflated than
wall time on a busy machine; a helper's CPU time is its own process's, not counted), the import
time and the runs' wall times. Targets: E2 <= 2 s cold and <= 0.3 s warm, E5 <= 3 s cold.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap

CHILD = textwrap.dedent('''
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    import symdl
    from symdl import nn
    imported = time.perf_counter() - t0
    L = nn.layers
    if sys.argv[1] == "e2":  # MLP 64-64-10 on flattened 28x28 images
        layers = [nn.Input((784,)), L.Dense(64, activation="relu"), L.Dense(64, activation="relu"),
                  L.Dense(10, activation="softmax")]
        x = np.random.default_rng(0).random((32, 784), dtype=np.float32)
    else:  # one convolution, one pooling, softmax
        layers = [nn.Input((28, 28, 1)), L.Conv2D(32, (3, 3), activation="relu"), L.MaxPooling2D((2, 2)),
                  L.Flatten(), L.Dense(10, activation="softmax")]
        x = np.random.default_rng(0).random((32, 28, 28, 1), dtype=np.float32)
    model = nn.Sequential(layers)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    y = np.random.default_rng(1).integers(0, 10, 32)
    wall, cpu = time.perf_counter(), time.process_time()
    model.train_on_batch(x, y)
    print(json.dumps({"step": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                      "import": imported}))
''')


FLOOR_MODULE = textwrap.dedent('''
    import numba


    @numba.njit(cache=True)
    def total(a):
        s = 0.0
        for v in a:
            s += v
        return s
''')

FLOOR_CHILD = textwrap.dedent('''
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    import numpy as np
    import numba
    import floor_module
    t = time.perf_counter()
    floor_module.total(np.ones(8))
    print(json.dumps({"first_call": time.perf_counter() - t}))
''')


def floor(repeat: int) -> list:
    """numba's first call of one cached trivial function in fresh processes (after a run that
    fills its cache), in seconds."""
    folder = tempfile.mkdtemp(prefix="symdl-numba-floor-")
    try:
        with open(os.path.join(folder, "floor_module.py"), "w") as fh:
            fh.write(FLOOR_MODULE)
        calls = []
        for n in range(repeat + 1):
            proc = subprocess.run([sys.executable, "-c", FLOOR_CHILD, folder], capture_output=True, text=True,
                                  check=False)
            if proc.returncode:
                raise SystemExit(f"numba floor failed:\n{proc.stderr[-3000:]}")
            if n:  # the first run compiles and fills the cache
                calls.append(json.loads(proc.stdout.strip().splitlines()[-1])["first_call"])
        return calls
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(model: str, cache: str, helper: bool = True) -> dict:
    env = dict(os.environ, SYMDL_CACHE_DIR=cache, **({} if helper else {"SYMDL_COMPILE_AHEAD": "0"}))
    proc = subprocess.run([sys.executable, "-c", CHILD, model], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode:
        raise SystemExit(f"{model} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(label: str, runs: list) -> None:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    walls = ", ".join(f"{r['step']:.2f}" for r in runs)
    print(f"{label:16s} first step {med['step']:6.3f} s  cpu {med['cpu']:6.3f} s  import {med['import']:.3f} s"
          f"  (runs: {walls})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="e2,e5", help="comma-separated: e2, e5")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    calls = floor(args.repeat)
    print(f"numba            first cached call {statistics.median(calls):6.3f} s (runs: "
          f"{', '.join(f'{c:.2f}' for c in calls)}): numba's start-up, which `from symdl import nn` pays")
    for model in args.models.split(","):
        cold, alone = [], []
        for _ in range(args.repeat):
            for helper, runs in ((True, cold), (False, alone)):
                folder = tempfile.mkdtemp(prefix="symdl-first-step-")
                try:
                    runs.append(run(model, folder, helper))
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
        report(f"{model} cold", cold)
        report(f"{model} cold, alone", alone)
        folder = tempfile.mkdtemp(prefix="symdl-first-step-")
        try:
            run(model, folder)  # fills the cache
            report(f"{model} warm", [run(model, folder) for _ in range(args.repeat)])
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
