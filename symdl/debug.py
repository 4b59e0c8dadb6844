"""SYMDL_DEBUG: 1 checks IR invariants at every stage boundary; 2 also prints each stage's output."""
import os
import sys


def level() -> int:
    try:
        return int(os.environ.get("SYMDL_DEBUG", "0"))
    except ValueError:
        return 0


def show(stage: str, text) -> None:
    """Print a stage's output under SYMDL_DEBUG=2; `text` may be a function making it, so that
    printing a formula or a loop IR costs nothing when debugging is off (a warm start makes dozens)."""
    if level() >= 2:
        print(f"--- symdl {stage} ---\n{text() if callable(text) else text}", file=sys.stderr)
