"""Changing only hyper-parameters never recompiles: the learning rate (and Adam's betas) are
arguments of the update kernels, not constants in them, so a new process with another learning
rate finds every kernel it needs in the disk cache and writes nothing there."""
import os
import subprocess
import sys

import pytest

TRAIN = """
import numpy as np
from symdl import nn
rng = np.random.default_rng(0)
x, y = rng.random((16, 12), dtype=np.float32), rng.integers(0, 3, 16)
model = nn.Sequential([nn.Input((12,)), nn.Dense(8, activation="relu"), nn.Dense(3, activation="softmax")], seed=0)
model.compile(optimizer=nn.optimizers.{optimizer}, loss="sparse_categorical_crossentropy")
model.fit(x, y, batch_size=8, epochs=1, verbose=0)
print(model.get_weights()[0].sum())
"""


def _files(folder):
    return {(p, os.stat(os.path.join(folder, p)).st_mtime_ns) for p in os.listdir(folder)}


@pytest.mark.parametrize("first, second", [
    ("Adam(learning_rate=0.001)", "Adam(learning_rate=0.05, beta_1=0.8)"),
    ("SGD(learning_rate=0.01, momentum=0.9)", "SGD(learning_rate=0.3, momentum=0.5)"),
])
def test_a_new_learning_rate_in_a_new_process_compiles_nothing(first, second, tmp_path):
    env = dict(os.environ, SYMDL_CACHE_DIR=str(tmp_path / "cache"))
    runs = []
    for optimizer in (first, second):
        done = subprocess.run([sys.executable, "-c", TRAIN.format(optimizer=optimizer)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append((done.stdout, _files(tmp_path / "cache")))
    (out1, cached), (out2, after) = runs
    assert cached and after == cached           # nothing written or rewritten: no kernel compiled
    assert out1 != out2                         # and the other learning rate did train differently
