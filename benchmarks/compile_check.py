#!/usr/bin/env python
"""What the first-use check (symdl.runtime.selfcheck) adds to a cold compile.

    python benchmarks/compile_check.py [--names dense_relu,softmax,...] [--repeat 2] [--dtype float32]

For each catalog formula, a fresh subprocess with a fresh kernel cache builds the kernel, makes its
first call and its first vjp (everything compiles: lowering, autodiff, numba), once with the check
on and once with SYMDL_CHECK=0; the runs alternate on/off so a machine getting busier slows both.
Columns: the cold compile's CPU time (the child process's, so a busy machine inflates it far less
than wall time) with the check off and on, the minimum over --repeat runs, and their difference;
"check only": the time spent inside the check itself (choosing sizes, drawing inputs, the NumPy
reference, comparing, the marker file), measured in the check-on run; "specs": numba
specialisations compiled, off/on (equal: the check compiles nothing the call would not; the
kernel's run inside the check is where numba compiles what the first call needs anyway); and the
wall times, off/on, for reference (noisy on a shared machine).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

DEFAULT = ("dense_relu", "softmax", "conv2d", "max_pool2d", "sparse_categorical_crossentropy_logits",
           "embedding", "adam_update", "rnn_tanh", "mse", "dot_product_attention")

CHILD = textwrap.dedent('''
    import json, sys, time
    t0 = time.perf_counter()
    import numpy as np
    from symdl import formulas
    from symdl.runtime import selfcheck
    from symdl.reference.inputs import default_sizes, random_inputs

    spent = [0.0]
    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper
    # the check's own work: the case (sizes, inputs, reference), the comparison, the memo and marker
    for fn in ("_build_case", "_compare", "_pending", "_passed"):
        setattr(selfcheck, fn, timed(getattr(selfcheck, fn)))

    name, dtype = sys.argv[1], np.dtype(sys.argv[2])
    f = formulas.get(name)
    kern = f.compile()
    env = random_inputs(f, default_sizes(f), np.random.default_rng(0), dtype)
    y = kern(**env)
    grad = {o: np.ones_like(v) for o, v in y.items()} if isinstance(y, dict) else (
        np.ones_like(y) if isinstance(y, np.ndarray) else 1.0)
    kern.vjp(grad, **env)
    import numba
    compiled = sum(len(d.signatures) for m, mod in list(sys.modules.items()) if m.startswith("symdl_kernel_")
                   for d in vars(mod).values() if isinstance(d, numba.core.dispatcher.Dispatcher))
    print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time(), "check": spent[0],
                      "compiled": compiled}))
''')


def run_once(name: str, dtype: str, check: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="symdl-compile-check-") as cache:
        env = dict(os.environ, SYMDL_CACHE_DIR=cache, SYMDL_CHECK="1" if check else "0")
        proc = subprocess.run([sys.executable, "-c", CHILD, name, dtype], env=env, capture_output=True,
                              text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"{name} (check {'on' if check else 'off'}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--names", default=",".join(DEFAULT), help="comma-separated catalog names")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    names = [n for n in args.names.split(",") if n]
    print(f"cold compile + first call + first vjp ({args.dtype}), fresh cache and process per run; "
          f"min of {args.repeat}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'formula':40s} {'off cpu s':>9s} {'on cpu s':>9s} {'diff s':>7s} {'diff %':>7s} "
          f"{'check only s':>12s} {'specs':>7s} {'wall off/on s':>14s}")
    run_once(names[0], args.dtype, False)  # warm-up, discarded: Python's imports into the OS file cache
    total_off = total_on = total_check = 0.0
    for name in names:
        offs, ons = [], []
        for r in range(args.repeat):
            order = (False, True) if r % 2 == 0 else (True, False)
            for check in order:
                (ons if check else offs).append(run_once(name, args.dtype, check))
        off, on = min(o["cpu"] for o in offs), min(o["cpu"] for o in ons)
        check_only = min(o["check"] for o in ons)
        specs = f"{offs[0]['compiled']}/{ons[0]['compiled']}"
        walls = f"{min(o['wall'] for o in offs):.1f}/{min(o['wall'] for o in ons):.1f}"
        total_off, total_on, total_check = total_off + off, total_on + on, total_check + check_only
        print(f"{name:40s} {off:9.2f} {on:9.2f} {on - off:+7.2f} {100 * (on - off) / off:+6.1f}% "
              f"{check_only:12.3f} {specs:>7s} {walls:>14s}")
    print(f"{'total':40s} {total_off:9.2f} {total_on:9.2f} {total_on - total_off:+7.2f} "
          f"{100 * (total_on - total_off) / total_off:+6.1f}% {total_check:12.3f}")
    print(f"check only / cold compile CPU time (off): {100 * total_check / total_off:.1f}%")


if __name__ == "__main__":
    main()
