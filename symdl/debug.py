"""SYMDL_DEBUG: 1 checks IR invariants at every stage boundary; 2 also prints each stage's output."""
import os
import sys


def level() -> int:
    try:
        return int(os.environ.get("SYMDL_DEBUG", "0"))
    except ValueError:
        return 0


def show(stage: str, text: str) -> None:
    if level() >= 2:
        print(f"--- symdl {stage} ---\n{text}", file=sys.stderr)
