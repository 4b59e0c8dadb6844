"""Data-parallel fit over MPI: 2 ranks train to the weights and History of one process on the same
global batches; a rank that fails ends the job with a message naming it, within seconds."""
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from symdl import launch, nn

JOB = Path(__file__).parent / "distributed" / "job.py"
HAS_MPI = importlib.util.find_spec("mpi4py") is not None
try:
    MPIEXEC = launch.mpiexec()
except RuntimeError:
    MPIEXEC = None
needs_mpi = pytest.mark.skipif(not HAS_MPI or MPIEXEC is None,
                               reason=f"needs mpi4py and mpiexec: {launch.INSTALL} (CI installs it)")


def _one_process(out: Path, kind: str, ranks: int) -> None:
    spec = importlib.util.spec_from_file_location("distributed_job", JOB)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    job.main(str(out), kind, ranks, one=True)


def _mpiexec(ranks: int, *args, env=None, timeout=300):
    return subprocess.run([MPIEXEC, "-n", str(ranks), sys.executable, str(JOB), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@needs_mpi
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_two_ranks_train_like_one_process_on_the_same_global_batches(kind, tmp_path):
    # shuffled, uneven last batches (250 samples, 16 per rank), sample weights, validation split,
    # EarlyStopping restoring the best weights: everything a rank could get out of step on
    _one_process(tmp_path / "one.npz", kind, 2)   # compiles the kernels the ranks then load
    done = _mpiexec(2, str(tmp_path / "two.npz"), kind, "2")
    assert done.returncode == 0, done.stdout + done.stderr
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert sorted(one.files) == sorted(two.files)
    history = [k for k in one.files if k.startswith("history_")]
    assert {"history_loss", "history_val_loss", "history_accuracy"} <= set(history)
    for k in one.files:   # float32 training: 1e-5
        np.testing.assert_allclose(two[k], one[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert not np.array_equal(one["arr_0"], _initial_weights(kind)[0])   # it trained


def _initial_weights(kind):
    spec = importlib.util.spec_from_file_location("distributed_job", JOB)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    model = job.model_for(kind)
    model.build()
    return model.get_weights()


@needs_mpi
@pytest.mark.parametrize("how, says", [
    ("kill", "rank 1 of 2 (pid"),                      # SIGKILL: the launcher maps mpiexec's pid to the rank
    ("raise", "rank 1 of 2"),
    ("term", "rank 1 of 2"),
])
def test_a_failing_rank_ends_the_job_naming_it(how, says, tmp_path):
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "symdl.launch", "-n", "2", str(JOB), str(tmp_path / "f.npz"),
                           "mlp", "2", "--fail", f"1:1:2:{how}"], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert elapsed < 60, elapsed
    assert says in out, out
    expected = {"kill": "killed by signal 9", "raise": "failed: ValueError: a planted failure",
                "term": "received SIGTERM"}[how]
    assert expected in out, out


@needs_mpi
def test_a_hung_rank_ends_the_job_after_the_timeout(tmp_path):
    env = dict(os.environ, SYMDL_MPI_TIMEOUT="4")
    start = time.monotonic()
    done = _mpiexec(2, str(tmp_path / "f.npz"), "mlp", "2", "--fail", "1:1:2:hang", env=env, timeout=120)
    elapsed = time.monotonic() - start
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "rank 0 of 2" in out and "waited more than 4 s in the gradient Allreduce" in out, out
    assert elapsed < 60, elapsed


@needs_mpi
def test_symdl_train_ranks_prints_once_and_trains(tmp_path):
    done = subprocess.run([sys.executable, "-m", "symdl.cli", "train", "e2", "--ranks", "2", "--epochs", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("test accuracy:") == 1, done.stdout   # rank 0 alone speaks
    assert "batch 32 per rank x 2 ranks" in done.stdout
    accuracy = float(done.stdout.split("test accuracy: ")[1].split("%")[0])
    assert accuracy > 50, done.stdout


def test_without_mpi4py_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # import mpi4py now fails
    with pytest.raises(RuntimeError, match=r"symdl\[mpi\]"):
        nn.Distributed()
    model = nn.Sequential([nn.Input((3,)), nn.Dense(2)], seed=0)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(RuntimeError, match=r"symdl\[mpi\]"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), distributed=True, verbose=0)
    assert model.optimizer.iterations == 0   # refused before any step


def test_fit_refuses_a_distributed_value_it_does_not_know():
    model = nn.Sequential([nn.Input((3,)), nn.Dense(2)], seed=0)
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="distributed must be True, False or an nn.Distributed"):
        model.fit(np.zeros((4, 3)), np.zeros((4, 2)), distributed="yes", verbose=0)


MPICH_REPORT = """
===================================================================================
=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES
=   PID 4242 RUNNING AT node7
=   EXIT CODE: 9
=   CLEANING UP REMAINING PROCESSES
===================================================================================
YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)
"""


def test_the_launcher_maps_mpiexecs_pid_to_the_rank(tmp_path):
    for rank, pid in ((0, 4141), (1, 4242)):
        (tmp_path / f"rank-{rank}").write_text(f"{pid} node7 2\n")
    pids = launch._rank_pids(str(tmp_path))
    assert launch._killed_rank(MPICH_REPORT, pids) == "rank 1 of 2 (pid 4242 on node7) was killed by signal 9"
    assert launch._killed_rank(MPICH_REPORT, {}) is None   # a pid no rank wrote: nothing invented
    said = MPICH_REPORT + "symdl: rank 1 of 2 (pid 4242 on node7) failed: ValueError: x; ending the job"
    assert launch._killed_rank(said, pids) is None          # the rank said it itself


def test_the_launcher_refuses_bad_rank_counts():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="ranks must be a positive integer"):
            launch.run(bad, ["true"])


class _Rank:
    def __init__(self, rank):
        self.rank = rank


@pytest.mark.parametrize("rank, writes", [(0, True), (1, False)])
def test_only_rank_0_writes_checkpoints(rank, writes, tmp_path):
    model = nn.Sequential([nn.Input((3,)), nn.Dense(2)], seed=0)
    model.compile(optimizer="sgd", loss="mse")
    model.build()
    checkpoint = nn.ModelCheckpoint(str(tmp_path / "ckpt-{epoch}.symdl"), save_best_only=False)
    checkpoint.set_model(model)
    model._distributed = _Rank(rank)
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    assert (tmp_path / "ckpt-1.symdl").exists() == writes
