"""Data-parallel training over MPI (mpi4py): one process per rank, each on its shard of every batch.

    mpiexec -n 4 python train.py       # train.py: model.fit(x, y, batch_size=32, distributed=True)

Every rank holds the whole data set and the same model. When fit starts, rank 0's weights,
optimizer state and step count are broadcast. Each step takes a global batch of batch_size × ranks
samples (Horovod's convention: batch_size is per rank) in rank 0's shuffled order, split into
contiguous shards; each rank runs forward and backward on its shard, and one Allreduce on one flat
buffer sums the gradients weighted by shard size (so the result is the global batch's mean, as one
process computes it), with the batch's loss and metrics in the same buffer. Every rank then applies
the same optimizer step. Validation is sharded the same way; the epoch's logs are rank 0's, so
callbacks (EarlyStopping, ModelCheckpoint) decide alike everywhere, and only rank 0 prints or
writes checkpoints.

A rank that raises ends the job (MPI Abort) with a message naming it; a rank that waits longer than
SYMDL_MPI_TIMEOUT seconds (default 600) in a collective for the others ends it too, so a dead or
hung rank never leaves the rest blocked forever. docs/distributed.md says how to launch it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
import traceback

import numpy as np

from .device import to_host

INSTALL = "pip install 'symdl[mpi]' (mpi4py and an MPI library; on a cluster, mpi4py built on its MPI)"
DEFAULT_TIMEOUT = 600.0  # seconds a rank may wait in one collective (first steps compile kernels)


def mpi():
    """mpi4py's MPI module, or RuntimeError naming the extra that provides it."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError(f"distributed training needs mpi4py and an MPI library: {INSTALL}") from e
    return MPI


def context(distributed) -> "Distributed":
    """fit(distributed=...) as a Distributed: True means MPI.COMM_WORLD."""
    if isinstance(distributed, Distributed):
        return distributed
    if distributed is True:
        return Distributed()
    raise ValueError(f"fit: distributed must be True, False or an nn.Distributed, got {distributed!r}")


class Distributed:
    """An MPI communicator and what a data-parallel fit does with it.

    `comm`: an mpi4py communicator (default COMM_WORLD). `timeout`: seconds a rank waits in one
    collective before it ends the job (default SYMDL_MPI_TIMEOUT or 600). `threads`: numba/BLAS
    threads per rank (default: this host's cores shared among the ranks on it).
    `allreduce_seconds` and `steps` count the time spent in the gradient Allreduce."""

    def __init__(self, comm=None, timeout: float | None = None, threads: int | None = None):
        self.MPI = mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.timeout = float(timeout if timeout is not None else os.environ.get("SYMDL_MPI_TIMEOUT", DEFAULT_TIMEOUT))
        if not self.timeout > 0:
            raise ValueError(f"Distributed: timeout must be a positive number of seconds, got {self.timeout}")
        self.threads = threads
        self.allreduce_seconds, self.steps = 0.0, 0
        self._waiting: tuple[str, float] | None = None  # (collective, since) while inside one
        self._watchdog: threading.Thread | None = None
        self._buffer: np.ndarray | None = None

    # -- the collectives a fit makes ----------------------------------------------------------------
    def _collective(self, what: str, call):
        self._waiting = (what, time.monotonic())
        try:
            return call()
        finally:
            self._waiting = None

    def broadcast(self, value):
        """Rank 0's (picklable) value on every rank."""
        return self._collective("a broadcast", lambda: self.comm.bcast(value, root=0))

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision (stop training) on every rank."""
        return bool(self.broadcast(bool(flag)))

    def sum(self, values: np.ndarray) -> np.ndarray:
        out = np.empty_like(values)
        self._collective("an Allreduce", lambda: self.comm.Allreduce(values, out, op=self.MPI.SUM))
        return out

    def order(self, rng, n: int, shuffle: bool) -> np.ndarray:
        """The epoch's sample order: rank 0's permutation (its model's rng), on every rank."""
        order = (rng.permutation(n) if shuffle else np.arange(n)).astype(np.int64)
        self._collective("a broadcast", lambda: self.comm.Bcast(order, root=0))
        return order

    def shard(self, idx: np.ndarray) -> np.ndarray:
        """This rank's contiguous part of `idx` (sizes differ by at most one; may be empty)."""
        return np.array_split(idx, self.size)[self.rank]

    def broadcast_state(self, model) -> None:
        """Rank 0's weights, optimizer state and step count on every rank."""
        weights = model.get_weights()
        for w in weights:
            self._collective("a broadcast", lambda w=w: self.comm.Bcast(w, root=0))
        model.set_weights(weights)
        model.sync_optimizer_state()
        optimizer = model.optimizer
        iterations, slots = self.broadcast(optimizer.get_state())
        optimizer.set_state(iterations, slots)
        if model._device_optimizer is not None:  # the device copy reloads from the host state
            model._device_optimizer = type(model._device_optimizer)(optimizer)

    # -- one step -----------------------------------------------------------------------------------
    def train_batch_of(self, model):
        """The step fit runs on a global batch `idx`: (global loss, global metrics)."""
        return lambda x, y, w, idx: self.train_batch(model, x, y, w, idx)

    def train_batch(self, model, x, y, w, idx) -> tuple[float, list]:
        mine = self.shard(idx)
        variables = model.trainable_weights
        extras = 1 + len(model.metric_fns)
        sizes = [v.value.size for v in variables]
        buffer = self._flat_buffer(sum(sizes) + extras, np.float32 if not variables else variables[0].value.dtype)
        grads_end = len(buffer) - extras
        if len(mine):
            yb = y[mine]
            loss, out, grads = model._gradients(x[mine], yb, None if w is None else w[mine])
            out = to_host(out) if model.metric_fns else out
            share = len(mine) / len(idx)  # the global batch mean: shard means weighted by size
            lo = 0
            for g, n in zip(grads, sizes, strict=True):
                np.multiply(to_host(g).reshape(-1), share, out=buffer[lo:lo + n])
                lo += n
            buffer[grads_end:] = share * np.array([loss, *(fn(yb, out) for _, fn in model.metric_fns)])
        else:  # more ranks than samples in this batch: contribute nothing, still step together
            buffer[:] = 0
        start = time.perf_counter()
        self._collective("the gradient Allreduce", lambda: self.comm.Allreduce(
            self.MPI.IN_PLACE, buffer, op=self.MPI.SUM))
        self.allreduce_seconds += time.perf_counter() - start
        self.steps += 1
        grads, lo = [], 0
        for v, n in zip(variables, sizes, strict=True):
            grads.append(buffer[lo:lo + n].reshape(v.shape))
            lo += n
        model._apply(grads)
        values = buffer[grads_end:].astype(float)
        return float(values[0]), list(values[1:])

    def _flat_buffer(self, size: int, dtype) -> np.ndarray:
        """One buffer for all gradients, reused every step (one Allreduce per step)."""
        if self._buffer is None or len(self._buffer) != size or self._buffer.dtype != dtype:
            self._buffer = np.empty(size, dtype=dtype)
        return self._buffer

    # -- the run around a fit -------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self, model):
        """A fit on every rank: threads shared per host, a watchdog on collectives, SIGTERM and
        any exception end the whole job with a message naming this rank."""
        self._set_threads()
        self._write_rank_file()
        self._start_watchdog()
        on_main = threading.current_thread() is threading.main_thread()  # where Python takes signals
        previous = signal.signal(signal.SIGTERM, self._terminated) if on_main else None
        model._distributed = self
        try:
            yield self
        except BaseException as e:  # noqa: BLE001 - the other ranks would wait forever in a collective
            if self.size == 1:
                raise
            self.abort(f"failed: {type(e).__name__}: {e}", traceback.format_exc())
        finally:
            model._distributed = None
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def abort(self, what: str, details: str = "") -> None:
        """Print why this rank ends the job (stderr) and abort every rank."""
        message = (f"symdl: rank {self.rank} of {self.size} (pid {os.getpid()} on {socket.gethostname()}) "
                   f"{what}; ending the job\n")
        sys.stderr.write(details + message)
        sys.stderr.flush()
        folder = os.environ.get("SYMDL_RANK_DIR")
        if folder:  # the launcher prints it should mpiexec drop this rank's last output
            from symdl.files import atomic_write
            atomic_write(os.path.join(folder, f"abort-{self.rank}"), lambda f: f.write(message.encode()))
        time.sleep(0.5)  # mpiexec forwards output asynchronously: aborting at once can lose the message
        self.comm.Abort(1)

    def _terminated(self, signum, frame) -> None:
        self.abort(f"received {signal.Signals(signum).name}")

    def _set_threads(self) -> None:
        from symdl.runtime.threads import set_num_threads

        import numba
        threads = self.threads
        if threads is None:
            local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED).Get_size()
            threads = max(1, (os.cpu_count() or 1) // local)
        set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))

    def _write_rank_file(self) -> None:
        """Under `python -m symdl.launch` (SYMDL_RANK_DIR): this rank's pid and host, so the
        launcher can name a rank that was killed outright."""
        folder = os.environ.get("SYMDL_RANK_DIR")
        if folder:
            from symdl.files import atomic_write
            line = f"{os.getpid()} {socket.gethostname()} {self.size}\n".encode()
            atomic_write(os.path.join(folder, f"rank-{self.rank}"), lambda f: f.write(line))

    def _start_watchdog(self) -> None:
        if self.size == 1 or self._watchdog is not None:
            return
        self._watchdog = threading.Thread(target=self._watch, name="symdl-mpi-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        """mpi4py releases the GIL inside collectives, so this thread runs while the main one waits."""
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            waiting = self._waiting
            if waiting is not None and time.monotonic() - waiting[1] > self.timeout:
                self.abort(f"waited more than {self.timeout:g} s in {waiting[0]} for the other ranks: "
                           f"one of them died or hangs (SYMDL_MPI_TIMEOUT sets the limit)")
