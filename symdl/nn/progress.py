"""Per-epoch progress: a tqdm bar with live loss/metrics when tqdm is installed, else one line
per epoch (symdl's run-time dependencies stay sympy, numba, numpy and llvmlite)."""
from __future__ import annotations

import re
import sys
import time

from symdl.runtime import ahead

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
        self.epoch, self.start = 0, time.perf_counter()

    def epoch_begin(self, epoch: int, defer_bar: bool = False) -> None:
        """`defer_bar`: open the bar only at `open_bar()` (after a compile line, not under it)."""
        self.start, self.epoch = time.perf_counter(), epoch
        if not defer_bar:
            self.open_bar()

    def open_bar(self) -> None:
        if self.verbose == 1 and tqdm is not None and self.bar is None:
            self.bar = tqdm(total=self.steps, desc=f"Epoch {self.epoch + 1}/{self.epochs}", unit="batch",
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


# -- compiling: one line while the first batch compiles kernels --------------------------------------

SHARED_KEY = re.compile(r"@shared_function\('(\w+)'\)")
MODULE_PREFIX = "symdl_kernel_"  # symdl.runtime.cache.module_name: every generated module's name


def uncached_modules(kernels, dtype: str = "float32") -> set[str]:
    """Names of the generated modules of `kernels` (Kernel or FusedKernel objects, anything with
    `source(dtype)`) that would compile on first use: the disk cache lacks their machine code."""
    from symdl.runtime.cache import is_cached, module_name
    sources = {k.source(dtype) for k in kernels}
    # a function another module defines alike compiles once per process (backends/cpu/shared.py):
    # a module whose functions all come from another one's compiles nothing of its own
    keys = {s: set(SHARED_KEY.findall(s)) for s in sources}
    cached = {s for s in sources if is_cached(s)}
    covered = set().union(*(keys[s] for s in cached))
    out = set()
    for s in sorted(sources - cached, key=lambda s: (-len(keys[s]), s)):
        if not keys[s] or not keys[s] <= covered:
            out.add(module_name(s))
            covered |= keys[s]
    return out


class CompileProgress:
    """While active, counts numba's compiles of symdl's generated modules (numba's
    "numba:compile" event, which fires for real compiles only, never for disk-cache loads) and
    keeps one line up to date (counting the modules a compile-ahead helper compiled too:
    runtime/ahead.py)::

        compiling 12 kernels (first use on this machine; cached afterwards)... 5/12

    Nothing is printed when nothing compiles (every kernel cached). `expected`: the names of the
    modules the caller expects to compile, or their number (an estimate; the count grows if more
    compile). At the end an expected module the step loaded counts as done even where it compiled
    nothing itself: its functions were another module's alike (backends/cpu/shared.py)."""

    def __init__(self, expected, stream=None):
        named = isinstance(expected, (set, frozenset))
        self.names = set(expected) if named else set()
        self.expected = len(self.names) if named else expected
        self.stream = stream or sys.stdout
        self._final = False
        self.done: set[str] = set()
        self.depth = 0
        self.start: float | None = None
        self._listener = None
        self._started_line = False
        self._helped_before: set = set()

    def __enter__(self) -> "CompileProgress":
        from numba.core import event

        watcher = self

        class _Listener(event.Listener):
            def on_start(self, ev):
                watcher._on_start(ev.data)

            def on_end(self, ev):
                watcher._on_end(ev.data)

        self._listener = _Listener()
        event.register("numba:compile", self._listener)
        self._helped_before = ahead.helped()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop counting; end the line (with the time taken) if one was printed."""
        if self._listener is not None:
            from numba.core import event
            event.unregister("numba:compile", self._listener)
            self._listener = None
            if self.start is not None:
                self._final = True
                self._show(f", {time.perf_counter() - self.start:.1f} s\n")

    @staticmethod
    def _module(data) -> str:
        func = getattr(data.get("dispatcher"), "py_func", None)
        return getattr(func, "__module__", "") or ""

    def _on_start(self, data) -> None:
        self.depth += 1
        if self.start is None and self._module(data).startswith(MODULE_PREFIX):
            self.start = time.perf_counter()
            self._show()

    def _on_end(self, data) -> None:
        self.depth -= 1
        name = self._module(data)
        if self.depth == 0 and name.startswith(MODULE_PREFIX) and name not in self.done:
            self.done.add(name)
            self._show()

    def count(self) -> int:
        """Modules compiled so far: here, or by a compile-ahead helper (runtime/ahead.py)."""
        done = self.done | (ahead.helped() - self._helped_before)
        if self._final and self.names:
            from symdl.runtime.cache import loaded_modules
            done |= self.names & {m.__name__ for m in loaded_modules()}
        return len(done)

    def _show(self, end: str = "") -> None:
        """On a terminal, the line is rewritten at every kernel (`\\r`); in a file or pipe it is
        written once at the start and finished at the end."""
        done = self.count()
        total = max(self.expected, done)
        head = (f"compiling {total} kernel{'s' if total != 1 else ''} "
                "(first use on this machine; cached afterwards)... ")
        tty = getattr(self.stream, "isatty", lambda: False)()
        if tty:
            self.stream.write(f"\r{head}{done}/{total}{end}")
        elif not end and not self._started_line:
            self.stream.write(head)
            self._started_line = True
        elif end:
            self.stream.write(f"{done}/{total}{end}")
        self.stream.flush()
