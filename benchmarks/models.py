#!/usr/bin/env python
"""The documents' training workloads, symdl next to NumPy written by hand: `symdl bench` (symdl/bench.py).

    python benchmarks/models.py [--workloads mlp_small_b32,...] [--steps 30] [--threads 2]
"""
import sys

from symdl.bench import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
