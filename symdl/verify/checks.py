"""`symdl.verify.all`: the three checks in order, one summary, the first failure raised clearly."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


class VerificationFailed(AssertionError):
    """A check of `symdl.verify.all` failed: `check` names it ("symbolic", "numeric", "backends"),
    `summary` holds what ran before it, and the message carries the check's own message."""

    def __init__(self, message: str, check: str, summary: "Summary"):
        super().__init__(message)
        self.check, self.summary = check, summary


@dataclass
class Summary:
    """What `symdl.verify.all` found: the checked element count of `symbolic` (a SymbolicResult,
    with its undecided elements), the worst relative errors of `numeric` and `backends`, and the
    seconds each took. A check that did not run is None."""

    name: str
    symbolic: object = None
    numeric: float | None = None
    backends: float | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def undecided(self) -> tuple:
        return tuple(getattr(self.symbolic, "undecided", ()))

    def cells(self) -> dict:
        """One short text per check, for tables (`symdl verify`)."""
        out = {}
        if self.symbolic is not None:
            out["symbolic"] = f"{int(self.symbolic)} el" + (f" ?{len(self.undecided)}" if self.undecided else "")
        if self.numeric is not None:
            out["numeric"] = f"{self.numeric:.1e}"
        if self.backends is not None:
            out["backends"] = f"{self.backends:.1e}"
        return out

    def __str__(self) -> str:
        parts = [f"{k} {v} ({self.seconds[k]:.1f} s)" for k, v in self.cells().items()]
        note = (f"; {len(self.undecided)} gradient elements undecided (equal at random points, no exact "
                f"proof in time)") if self.undecided else ""
        return f"{self.name}: " + ", ".join(parts) + note


def all(target, sizes: dict | None = None, backend: str = "cpu", seed: int = 0,  # noqa: A001
        **symbolic_options) -> Summary:
    """Run `symbolic` (the gradient mathematics, exactly), `numeric` (the compiled gradients against
    finite differences of the compiled forward pass) and `backends` (every compiled kernel against
    the NumPy reference, also on inputs with ties) on `target`, in that order. Returns a Summary;
    raises VerificationFailed (an AssertionError) naming the first check that fails, with its
    message. `symbolic_options` go to `symbolic` (time_limit=, strict=, wrt=)."""
    from .. import verify  # through the package, so a replaced check (a test's monkeypatch) is the one run

    summary = Summary(getattr(target, "name", str(target)))
    runs = (("symbolic", lambda: verify.symbolic(target, sizes=sizes, seed=seed, **symbolic_options)),
            ("numeric", lambda: verify.numeric(target, sizes=sizes, seed=seed, backend=backend)),
            ("backends", lambda: verify.backends(target, sizes=sizes, seed=seed, backend=backend)))
    for check, run in runs:
        start = time.perf_counter()
        try:
            result = run()
        except Exception as err:
            summary.seconds[check] = time.perf_counter() - start
            raise VerificationFailed(f"{summary.name}: the {check} check failed: {type(err).__name__}: {err}",
                                     check, summary) from err
        summary.seconds[check] = time.perf_counter() - start
        setattr(summary, check, result)
    return summary
