"""Compiling ahead: while a model's first step compiles the kernels it needs first, a forked helper
process compiles the ones it needs last, into the kernel cache (symdl.nn arms it around every
training step run layer by layer and around predict's and evaluate's batches).

numba compiles one function at a time in a process (one global compiler lock), so a cold first step
keeps one core busy for seconds (E5's CNN: 16 functions, ~3 s) while the others idle. When the
first module of a step turns out not to be cached, `armed` forks a helper, which

1. runs the same step dry: in the helper, every generated module's numba functions are replaced by
   recorders (the argument types are noted, nothing runs) and its BLAS products are skipped, so it
   learns which functions the step calls, with which types, in which order, compiling nothing;
2. compiles them from the last backwards (numba's cache=True writes each to the kernel cache),
   marking each busy and then done in a table shared with the parent;
3. skips every function the parent has claimed, and stops when the parent's step is over;
4. then, at the lowest priority and until the parent exits, compiles the parallel functions of the
   nests that ran serially only because those were not compiled (backends/cpu/twins.py), for
   later processes. A warm process whose cache lacks them forks a helper for this alone.

The parent claims every function of each module it loads. It waits for a function the helper is
compiling at that moment and otherwise compiles as usual, where numba finds the helper's work in
its cache. Only cache files cross between the two processes (numba writes them atomically), and
the parent still checks every module against the reference before its first use
(runtime/selfcheck.py). A helper that fails, hangs or dies only stops helping: the parent compiles
whatever the helper did not finish.

The dry step runs the step's Python code as the parent does, custom layers' included: a layer
whose `call` writes to a file it opened writes there from the helper too (the helper's standard
streams go to /dev/null).

The helper runs only on Linux (it needs fork), with at least two usable cores and numba allowed
more than one thread, for host (cpu) steps, and when the process runs one Python thread (fork copies
only the calling thread). SYMDL_COMPILE_AHEAD=0 turns it off. SYMDL_COMPILE_AHEAD=1 also forks
beside other Python threads.
"""
from __future__ import annotations

import functools
import mmap
import os
import signal
import struct
import sys
import threading
import time

from ..backends.cpu import twins

KEY = 16              # a shared_function key: 16 hex digits (backends/cpu/codegen.py)
SLOTS = 4096          # functions per table (a step of a large model has ~100)
WAIT_LIMIT = 30.0     # seconds the parent waits for one function the helper is compiling
HELPER_LIMIT = 600    # seconds a helper may live (SIGALRM ends it)
BUSY, DONE, LEFT = b"b", b"d", b"l"
_BLAS = "symdl.backends.cpu.blas"  # the generated drivers' products (matmul, contract)

ARMED = None     # parent: the dry step of the first step running now (runtime/cache.py reads it)
_helper = None   # parent: the Helper forked for that step
_in_helper = False  # this process is a helper
_records: list = []  # helper: (key, dispatcher, argument types) in call order
_stubbed: list = []  # helper: (module namespace, {name: original}) to restore before compiling
_unreaped: list = []  # parent: helpers whose exit was not collected yet
_helped: set = set()  # parent: modules whose functions a helper compiled
_wanted: dict = {}  # helper: modules whose parallel twins to compile after the step (name -> module)
_asked: set = set()  # parent: modules whose parallel twins a helper was asked for


class Table:
    """What parent and helper tell each other, in shared memory made before the fork: byte 0 is
    the parent's stop flag; then the keys the parent claimed (written by the parent only); then the
    keys the helper took, each with its state (written by the helper only). An entry is written
    before the count that covers it, so a reader never sees half of one. The two processes can
    miss each other's latest entry in a race; the cost is one function compiled twice, in two
    processes (numba's cache takes either)."""

    def __init__(self):
        self._claims = 1
        self._taken = self._claims + 4 + SLOTS * KEY
        self.mem = mmap.mmap(-1, self._taken + 4 + SLOTS * (KEY + 1))

    def _count(self, at: int) -> int:
        return struct.unpack_from("<I", self.mem, at)[0]

    def _append(self, at: int, entry: bytes) -> int | None:
        n = self._count(at)
        if n >= SLOTS:
            return None
        start = at + 4 + n * len(entry)
        self.mem[start:start + len(entry)] = entry
        struct.pack_into("<I", self.mem, at, n + 1)
        return start

    # parent
    def stop(self) -> None:
        self.mem[0] = 1

    def claim(self, key: bytes) -> None:
        self._append(self._claims, key)

    def state(self, key: bytes) -> bytes | None:
        """The helper's state of `key` (BUSY, DONE, LEFT), or None where it never took it."""
        n, at = self._count(self._taken), self._taken + 4
        entries = self.mem[at:at + n * (KEY + 1)]
        for i in range(n):
            if entries[i * (KEY + 1):i * (KEY + 1) + KEY] == key:
                return entries[i * (KEY + 1) + KEY:(i + 1) * (KEY + 1)]
        return None

    # helper
    def stopped(self) -> bool:
        return self.mem[0] == 1

    def claimed(self, key: bytes) -> bool:
        n, at = self._count(self._claims), self._claims + 4
        claims = self.mem[at:at + n * KEY]
        return any(claims[i * KEY:(i + 1) * KEY] == key for i in range(n))

    def take(self, key: bytes) -> int | None:
        """Mark `key` busy; where its state lives, or None (the table is full)."""
        start = self._append(self._taken, key + BUSY)
        return None if start is None else start + KEY

    def mark(self, at: int, state: bytes) -> None:
        self.mem[at:at + 1] = state


def _key(text: str) -> bytes:
    return text.encode("ascii", "replace")[:KEY].ljust(KEY, b" ")


def enabled() -> bool:
    """Whether a first step may fork a helper here (see the module's docstring)."""
    setting = os.environ.get("SYMDL_COMPILE_AHEAD", "auto").strip().lower()
    if setting in ("0", "off", "false", "no") or _in_helper or not _machine_allows():
        return False
    return setting in ("1", "on", "true", "yes") or threading.active_count() == 1


@functools.cache
def _machine_allows() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    import numba
    return not numba.config.DISABLE_JIT and numba.config.NUMBA_NUM_THREADS >= 2 and len(os.sched_getaffinity(0)) >= 2


class armed:
    """Around a step that may compile: the first uncached module loaded inside the block forks a
    helper that runs `dry_step()` (the same step, with nothing executed) and compiles from its end.
    On leaving, the helper is told to stop. Nested blocks are the outer one's. (A class, not a
    generator: predict enters one per call, ~2 µs.)"""

    __slots__ = ("dry_step", "active")

    def __init__(self, dry_step):
        self.dry_step, self.active = dry_step, False

    def __enter__(self):
        global ARMED
        if ARMED is None and enabled():
            if _unreaped:
                _reap()
            ARMED, self.active = self.dry_step, True
        return self

    def __exit__(self, *exc) -> None:
        global ARMED, _helper
        if self.active:
            ARMED, self.active = None, False
            helper, _helper = _helper, None
            if helper is not None:
                helper.finish()


def before_load(source: str) -> None:
    """runtime/cache.py, before loading a module inside an armed step: fork the helper at the first
    module that will compile."""
    if ARMED is None or _helper is not None:
        return
    from .cache import is_cached
    if not is_cached(source):
        _fork(ARMED)


def loaded(module) -> None:
    """runtime/cache.py, after loading a module: in a helper its functions record; in the parent
    (while a helper works) they are claimed."""
    if _in_helper:
        _stub(module)
    elif _helper is not None:
        _helper.claim(module)


def want_parallel(module) -> None:  # installed as backends/cpu/twins.request below
    """backends/cpu/twins.py: a nest that would pay on threads ran serially, its module's parallel
    functions not compiled yet. A helper compiles them after the step's own functions (its dry step
    asks for the same modules); where none works beside this step, one is forked for them (once
    per module and process)."""
    if _in_helper:
        _wanted.setdefault(module.__name__, module)
    elif module.__name__ not in _asked:
        _asked.add(module.__name__)
        if ARMED is not None and _helper is None:
            _fork(ARMED)


twins.request = want_parallel


def helped() -> set:
    """Names of the modules whose functions the parent found compiled by a helper (progress)."""
    return set(_helped)


class Helper:
    """The parent's handle on a forked helper."""

    def __init__(self, pid: int, table: Table):
        self.pid, self.table = pid, table
        self.alive = True
        self.claimed: set = set()

    def exited(self) -> bool:
        if self.alive:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # collected elsewhere (a SIGCHLD handler)
                done = self.pid
            self.alive = done == 0
        return not self.alive

    def claim(self, module) -> None:
        """Claim the functions of `module`; wait for those the helper is compiling now."""
        keys = [k for k in dict.fromkeys(map(_key, _keys(module))) if k not in self.claimed]
        self.claimed.update(keys)
        for key in keys:
            self.table.claim(key)
        for key in keys:
            state = self.table.state(key)
            if state == BUSY:
                state = self._wait(key)
            if state == DONE:
                _helped.add(module.__name__)

    def _wait(self, key: bytes) -> bytes | None:
        deadline = time.monotonic() + WAIT_LIMIT
        while time.monotonic() < deadline and not self.exited():
            state = self.table.state(key)
            if state != BUSY:
                return state
            time.sleep(0.002)
        return self.table.state(key)

    def finish(self) -> None:
        """The step is over: the helper stops at its next function; collected now if it has
        exited, else later."""
        self.table.stop()
        if not self.exited():
            _unreaped.append(self)


def _reap() -> None:
    _unreaped[:] = [h for h in _unreaped if not h.exited()]


def _keys(module) -> list:
    """The shared_function keys of the numba functions `module` defines or borrows."""
    return [v._symdl_key for v in list(vars(module).values()) if isinstance(getattr(v, "_symdl_key", None), str)]


def _fork(dry_step) -> None:
    global _helper
    from numba.core.registry import cpu_target
    cpu_target.target_context.refresh()  # numba's start-up, done once for both processes
    table = Table()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # else the helper's copy of the buffers could be written twice
        except Exception:  # noqa: S110 (a closed or odd stream: nothing to flush)
            pass
    try:
        pid = os.fork()
    except OSError:  # no memory or processes to spare: the step compiles alone
        return
    if pid == 0:
        _helper_main(dry_step, table, os.getppid())  # never returns
    _helper = Helper(pid, table)


def _helper_main(dry_step, table: Table, parent: int) -> None:
    """The helper process: run the step dry, then compile from its end; always exits here."""
    global _in_helper, ARMED
    try:
        _in_helper, ARMED = True, None
        _quiet()
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(HELPER_LIMIT)
        os.environ["SYMDL_CHECK"] = "0"  # the parent checks every module before its first use
        from . import threads
        threads._LOAD.fixed = True  # the parent's CPU time is not a load to adapt to here
        from ..binding import Binder
        Binder.check_gathers = _skip  # a dry step's index tensors hold whatever their buffers held
        from .cache import loaded_modules
        for module in loaded_modules():
            _stub(module)
        try:
            dry_step()
        except Exception:  # noqa: S110 (a dry step may stop anywhere: what it recorded is kept)
            pass
        _restore()
        _compile_from_end(table, parent)
        _compile_parallel_twins(parent)
    finally:
        os._exit(0)


def _quiet() -> None:
    """The helper writes nothing to the parent's terminal or pipes."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (the helper's own, till _exit)


def _compile_from_end(table: Table, parent: int) -> None:
    """Compile what the dry step called, the function first called last first. A function the
    parent has claimed is skipped: it compiles that one itself (or has)."""
    first: dict = {}  # key -> (first call's position, dispatcher, [argument types...])
    for n, (key, dispatcher, types) in enumerate(_records):
        entry = first.setdefault(key, (n, dispatcher, []))
        if types not in entry[2] and types not in dispatcher.overloads:
            entry[2].append(types)
    for key, (_, dispatcher, signatures) in sorted(first.items(), key=lambda kv: -kv[1][0]):
        if table.stopped() or os.getppid() != parent:
            return
        if not signatures or table.claimed(_key(key)):
            continue
        at = table.take(_key(key))
        if at is None:
            return
        if table.claimed(_key(key)):  # claimed meanwhile: the parent's own
            table.mark(at, LEFT)
            continue
        for types in signatures:
            _compile(dispatcher, types)
        table.mark(at, DONE)


def _compile_parallel_twins(parent: int) -> None:
    """After the step's functions: the parallel functions of the modules whose nests ran serially
    only because these were not compiled (twins.py), with their serial twins' recorded types, at
    the lowest priority, for the parent's later processes. The parent's step being over does not
    stop this; the parent's exit does (at the next function)."""
    if not _wanted:
        return
    try:
        os.nice(19)
    except OSError:  # noqa: S110 (a priority it may not lower: compile anyway)
        pass
    types_of: dict = {}
    for key, _, types in _records:
        seen = types_of.setdefault(key, [])
        if types not in seen:
            seen.append(types)
    for module in _wanted.values():
        for serial, parallel in twins.pairs(module):
            for types in types_of.get(serial._symdl_key, []):
                if os.getppid() != parent:
                    return
                if types not in parallel.overloads:
                    _compile(parallel, types)


def _compile(dispatcher, types: tuple) -> None:
    try:
        dispatcher.compile(types)  # cache=True: the machine code goes to the kernel cache
    except Exception:  # noqa: S110 (the parent's own call compiles it and reports any error)
        pass


# -- the dry step: recorders in place of a module's numba functions ---------------------------------

class _Recorder:
    """Stands for a generated numba function in a helper's dry step: notes the argument types."""

    def __init__(self, dispatcher, key: str):
        self.dispatcher, self.key = dispatcher, key

    def __call__(self, *args):
        try:
            types = tuple(self.dispatcher.typeof_pyval(a) for a in args)
        except Exception:  # noqa: S110 (untypeable: the parent's call will say so)
            return
        _records.append((self.key, self.dispatcher, types))


def _skip(*args, **kwargs) -> None:
    """A BLAS product, or a check of index values, in a dry step: nothing to compile or check."""


def _stub(module) -> None:
    space = vars(module)
    originals = {}
    for name, value in list(space.items()):
        key = getattr(value, "_symdl_key", None)
        if isinstance(key, str):
            originals[name], space[name] = value, _Recorder(value, key)
        elif callable(value) and getattr(value, "__module__", None) == _BLAS:
            originals[name], space[name] = value, _skip
    _stubbed.append((space, originals))


def _restore() -> None:
    """The modules' own functions back in place: compiling resolves their globals."""
    for space, originals in _stubbed:
        space.update(originals)
    _stubbed.clear()
