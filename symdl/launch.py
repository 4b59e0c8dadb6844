"""Launch a data-parallel job on this machine: `mpiexec -n N` that names a rank killed outright.

    python -m symdl.launch -n 2 train.py [ARGS...]     # what `symdl train e2 --ranks 2` runs

A rank that raises, receives SIGTERM or waits too long for the others ends the job itself with a
message naming it (nn/distributed.py). A rank killed outright (SIGKILL, out of memory) cannot
speak: mpiexec then ends the others and names the process by its pid, which this launcher maps to
its rank from the pid files the ranks leave in SYMDL_RANK_DIR. On a cluster, launch with the
scheduler instead (`srun python train.py`, docs/distributed.md).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

INSTALL = "pip install 'symdl[mpi]'"


def mpiexec() -> str:
    """The mpiexec next to this Python (the `mpi` extra's wheel installs it there), else on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    if found is None:
        raise RuntimeError(f"no mpiexec next to {sys.executable} or on PATH: {INSTALL} installs one")
    return found


def run(ranks: int, command: list[str], out=None) -> int:
    """Run `command` on `ranks` processes of this machine; its output passes through. Returns the
    job's exit status, after a line naming the rank that ended it abnormally."""
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 1:
        raise ValueError(f"ranks must be a positive integer, got {ranks!r}")
    out = out or sys.stdout
    with tempfile.TemporaryDirectory(prefix="symdl-ranks-") as folder:
        env = dict(os.environ, SYMDL_RANK_DIR=folder)
        proc = subprocess.Popen([mpiexec(), "-n", str(ranks), *command], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        seen = bytearray()
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # progress bars pass at once
            out.buffer.write(chunk) if hasattr(out, "buffer") else out.write(chunk.decode(errors="replace"))
            out.flush()
            seen += chunk
            del seen[:-65536]
        code = proc.wait()
        if code != 0:
            said = seen.decode(errors="replace")
            culprit = _killed_rank(said, _rank_pids(folder))
            if culprit:
                out.write(f"symdl: {culprit}; mpiexec ended the other ranks (exit status {code})\n")
            elif "symdl: rank" not in said:  # a rank said why, but mpiexec dropped it: its file
                for path in sorted(Path(folder).glob("abort-*")):
                    out.write(path.read_text())
            out.flush()
    return code


def _rank_pids(folder: str) -> dict[int, tuple[int, str, int]]:
    """{pid: (rank, host, ranks)} from the files nn.Distributed writes."""
    pids = {}
    for path in Path(folder).glob("rank-*"):
        pid, host, size = path.read_text().split()
        pids[int(pid)] = (int(path.name.split("-")[1]), host, int(size))
    return pids


def _killed_rank(output: str, pids: dict) -> str | None:
    """'rank 1 of 2 (pid 123 on host) was killed by signal 9', from mpiexec's report of a bad
    termination (MPICH: "PID 123 RUNNING AT host / EXIT CODE: 9"), or None when it names no rank."""
    if "symdl: rank" in output:  # the rank said why itself
        return None
    for match in re.finditer(r"PID (\d+) RUNNING AT (\S+)\s*=*\s*=\s*EXIT CODE: (\d+)", output):
        pid, code = int(match.group(1)), int(match.group(3))
        if pid in pids:
            rank, host, size = pids[pid]
            signalled = re.search(r"\(signal (\d+)\)", output)
            how = f"was killed by signal {signalled.group(1)}" if signalled else f"ended with exit code {code}"
            return f"rank {rank} of {size} (pid {pid} on {host}) {how}"
    return None


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(prog="python -m symdl.launch", description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--ranks", type=int, required=True, help="processes to start")
    parser.add_argument("script", help="the Python script each rank runs")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        return run(args.ranks, [sys.executable, args.script, *args.args])
    except (RuntimeError, ValueError) as e:
        print(f"symdl.launch: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
