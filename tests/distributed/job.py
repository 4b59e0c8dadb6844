"""A short data-parallel fit, run by tests/test_distributed.py under mpiexec (or in one process).

    mpiexec -n N python job.py OUT.npz MODEL N [--fail RANK:EPOCH:BATCH:HOW]
    python job.py OUT.npz MODEL N --one

trains MODEL ("mlp" or "cnn") on the bundled digits for two epochs with per-rank batch 16
(--one: one process, batch 16 × N, distributed=False), with a validation split, sample weights and
EarlyStopping; rank 0 writes the final weights and the History to OUT.npz. --fail makes one rank
raise, hang or be killed at a given batch (HOW: raise, hang, kill, term) in a long fit.
"""
import os
import signal
import sys
import time

import numpy as np

from symdl import nn
from symdl.datasets import digits


def model_for(kind: str):
    if kind == "mlp":
        layers = [nn.Input((64,)), nn.Dense(32, activation="relu"), nn.Dense(10, activation="softmax")]
    else:
        layers = [nn.Input((8, 8, 1)), nn.Conv2D(4, 3, activation="relu"), nn.MaxPooling2D(2), nn.Flatten(),
                  nn.Dense(10, activation="softmax")]
    model = nn.Sequential(layers, seed=3)
    model.compile(optimizer=nn.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


class Fail(nn.Callback):
    """One rank misbehaves at (epoch, batch): how = raise, hang, kill (SIGKILL) or term (SIGTERM)."""

    def __init__(self, spec: str, rank: int):
        r, self.epoch, self.batch, self.how = spec.split(":")
        self.active = int(r) == rank
        self.epoch, self.batch, self.now = int(self.epoch), int(self.batch), -1

    def on_epoch_begin(self, epoch, logs=None):
        self.now = epoch

    def on_batch_begin(self, batch, logs=None):
        if not self.active or (self.now, batch) != (self.epoch, self.batch):
            return
        if self.how == "raise":
            raise ValueError("a planted failure")
        if self.how == "hang":
            time.sleep(3600)
        os.kill(os.getpid(), signal.SIGKILL if self.how == "kill" else signal.SIGTERM)
        time.sleep(60)


def main(out: str, kind: str, ranks: int, one: bool, fail: str | None = None, epochs: int = 2) -> None:
    (x, y), _ = digits.load_data()
    x, y = x[:250].astype(np.float32) / 16.0, y[:250]  # 250: the last global batches split unevenly
    x = x.reshape(len(x), 64) if kind == "mlp" else x.reshape(len(x), 8, 8, 1)
    w = np.where(y % 2 == 0, 1.0, 0.5)
    model = model_for(kind)
    distributed = False if one else nn.Distributed()
    rank = distributed.rank if distributed else 0
    callbacks = [nn.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True)]
    if fail:
        callbacks.append(Fail(fail, rank))
    batch = 16 if distributed else 16 * ranks
    history = model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, validation_split=0.2,
                        sample_weight=w, callbacks=callbacks, distributed=distributed)
    if rank == 0:
        np.savez(out, *model.get_weights(), **{f"history_{k}": np.array(v) for k, v in history.history.items()})


if __name__ == "__main__":
    args = sys.argv[1:]
    one, fail = "--one" in args, None
    args = [a for a in args if a != "--one"]
    if "--fail" in args:
        n = args.index("--fail")
        fail, args = args[n + 1], args[:n] + args[n + 2:]
    main(args[0], args[1], int(args[2]), one, fail, epochs=100 if fail else 2)
