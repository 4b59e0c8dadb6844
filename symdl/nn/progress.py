"""Per-epoch progress: a tqdm bar with live loss/metrics when tqdm is installed, else one line
per epoch (symdl's run-time dependencies stay sympy, numba, numpy and llvmlite)."""
from __future__ import annotations

import sys
import time

try:
    from tqdm.auto import tqdm
except ImportError:  # optional: pip install 'symdl[progress]'
    tqdm = None


def _fmt(logs: dict) -> str:
    return " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())


class Progress:
    """verbose 0: silent; 1: a bar per epoch (tqdm) or a line per epoch; 2: a line per epoch."""

    def __init__(self, verbose: int, epochs: int, steps: int):
        self.verbose, self.epochs, self.steps = verbose, epochs, steps
        self.bar = None

    def epoch_begin(self, epoch: int) -> None:
        self.start = time.perf_counter()
        if self.verbose == 1 and tqdm is not None:
            self.bar = tqdm(total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}", unit="batch",
                            leave=True, file=sys.stdout)

    def batch_end(self, logs: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()}, refresh=False)

    def epoch_end(self, epoch: int, logs: dict) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4f}" for k, v in logs.items()})
            self.bar.close()
            self.bar = None
        elif self.verbose:
            print(f"Epoch {epoch + 1}/{self.epochs} - {time.perf_counter() - self.start:.2f}s - {_fmt(logs)}",
                  flush=True)
