"""The verbs: what one does with a Formula or Program, each a composition of the stages.

    symdl.vjp(f, wrt=None)             # autodiff: {input: gradient Formula}, or a gradient Program
    symdl.compile(f, backend="cpu")    # loops -> backends -> runtime: a callable kernel
    symdl.stabilize(f)                 # passes: the stability rewrites, proven equal by verify
    symdl.api.verify(f)                # verify.all: symbolic, numeric and backend checks
    symdl.api.stability(f)             # what stabilize did to make f, or None

symdl.declare knows no transformation (it imports no other stage); this module does, inside each
verb so that `import symdl` loads neither numba nor the verifier. On import it installs the verbs
into declare/verbs.py, behind the conveniences `f.vjp()`, `f.compile()`, `f.stabilize()`,
`f.verify()` and `f.stability`. The stages keep their own caches, keyed by `f.key()`.
"""
from __future__ import annotations

from .declare import verbs
from .declare.formula import Formula
from .declare.program import Program

__all__ = ["compile", "stability", "stabilize", "verify", "vjp"]


def _check(target, verb: str) -> None:
    if not isinstance(target, (Formula, Program)):
        raise TypeError(f"symdl.{verb} takes a Formula or a Program, got {type(target).__name__}")


def vjp(target, wrt=None):
    """Symbolic reverse mode. A Formula gives {input name: Formula for grad_<input>} (a Gradients
    dict; a recurrence's entries are Programs); a Program gives its gradient Program (forward
    formulas, then gradient formulas; outputs grad_<input>, extra input grad_<output>)."""
    _check(target, "vjp")
    from .autodiff import program_vjp
    from .autodiff import vjp as formula_vjp
    _keep_derived_gradients()
    return program_vjp(target, wrt) if isinstance(target, Program) else formula_vjp(target, wrt)


def compile(target, backend: str = "cpu", **options):  # noqa: A001 (symdl.compile; not in symdl.__all__)
    """A callable kernel, numpy in, numpy out: a Kernel for a Formula, a ProgramKernel for a Program
    (symdl.runtime); `backend` "cpu" or "cuda"."""
    _check(target, "compile")
    from .runtime import compile_formula, compile_program
    build = compile_program if isinstance(target, Program) else compile_formula
    return build(target, backend=backend, **options)


def stabilize(target):
    """The target with every stability rewrite applied (symdl.passes.stability), or the target
    itself when none applies; a Formula comes back as a Program when a rewrite adds a stage."""
    _check(target, "stabilize")
    from .passes import stabilize as run
    return run(target)


def stability(target):
    """What `stabilize` did to make `target` (a passes.Stabilized: the original and the rewrites),
    or None when stabilize did not make it. `f.stability` reads it."""
    _check(target, "stability")
    from .passes.stability import stability_of
    return stability_of(target)


def verify(target, sizes: dict | None = None, backend: str = "cpu", seed: int = 0, **symbolic_options):
    """symdl.verify.all: the symbolic, numeric and backend checks in order; a Summary, or
    VerificationFailed naming the first check that fails."""
    _check(target, "verify")
    import importlib
    checks = importlib.import_module("symdl.verify")  # through the package: a test's monkeypatch counts
    return checks.all(target, sizes=sizes, backend=backend, seed=seed, **symbolic_options)


def set_num_threads(n: int) -> None:
    """Fix the threads of numba's parallel loops and NumPy's BLAS (symdl.runtime.threads); by
    default symdl.nn follows the load, using the cores other processes leave free."""
    from .runtime.threads import set_num_threads as run
    run(n)


def flush_subnormals():
    """A context manager: symdl's kernels called within it (and NumPy's arithmetic) flush subnormal
    numbers to zero, on every thread a kernel runs on; symdl.nn's calls do so themselves
    (runtime/floats.py says why and what it costs)."""
    from .runtime.floats import flush_subnormals as run
    return run()


def get_num_threads() -> int:
    from .runtime.threads import get_num_threads as run
    return run()


verbs.install(vjp=vjp, compile=compile, stabilize=stabilize, verify=verify, stability=stability)


def _keep_derived_gradients() -> None:
    """Gradients derived in one process serve the next (runtime/cache.py's DerivedStore); set up
    at the first derivation, so that `import symdl` stays light."""
    import sys

    reverse_mode = sys.modules[f"{__package__}.autodiff.vjp"]  # the module, not its vjp function
    if reverse_mode.STORE is None:
        from .runtime.cache import DerivedStore
        reverse_mode.STORE = DerivedStore()
