"""Callbacks with Keras' hooks: Callback, History, EarlyStopping, ModelCheckpoint, TerminateOnNaN."""
from __future__ import annotations

import numpy as np


class Callback:
    """Base class: override any hook; `self.model` is set before training starts."""

    def __init__(self):
        self.model = None

    def set_model(self, model) -> None:
        self.model = model

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_batch_begin(self, batch: int, logs: dict | None = None) -> None: ...
    def on_batch_end(self, batch: int, logs: dict | None = None) -> None: ...


class History(Callback):
    """`history[key]` lists one value per epoch (loss, metrics, val_*); `fit` returns it."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.interrupted = False  # set by fit when KeyboardInterrupt stopped training

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(float(v))

    def plot(self, path: str, keys=None) -> None:
        """Write one panel per quantity (train and val_ together) to an image file; needs
        matplotlib (`pip install 'symdl[plot]'`)."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise ImportError("History.plot needs matplotlib, which symdl does not install: "
                              "pip install 'symdl[plot]' (or pip install matplotlib)") from e
        names = keys or [k for k in self.history if not k.startswith("val_")]
        fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3), squeeze=False)
        for ax, k in zip(axes[0], names, strict=True):
            epochs = [e + 1 for e in self.epoch]
            ax.plot(epochs, self.history[k], label=k)
            if f"val_{k}" in self.history:
                ax.plot(epochs, self.history[f"val_{k}"], label=f"val_{k}")
            ax.set_xlabel("epoch")
            ax.legend()
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


def _better(mode: str, monitor: str):
    if mode == "auto":
        mode = "max" if any(s in monitor for s in ("acc", "auc")) else "min"
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return (lambda a, b, d: a < b - d) if mode == "min" else (lambda a, b, d: a > b + d), mode


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs;
    `restore_best_weights` puts back the best epoch's weights at the end of training (Keras 3)."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", restore_best_weights: bool = False):
        super().__init__()
        self.monitor, self.min_delta, self.patience = monitor, abs(float(min_delta)), int(patience)
        self.verbose, self.restore_best_weights = verbose, restore_best_weights
        self.improved, self.mode = _better(mode, monitor)

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = np.inf if self.mode == "min" else -np.inf
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which the logs lack: "
                             f"{sorted(logs or {})} (val_* needs validation data)")
        self.wait += 1
        if self.improved(value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class TerminateOnNaN(Callback):
    """Stop training at the first batch whose loss is NaN or inf (Keras' callback): prints
    "Batch N: Invalid loss, terminating training" and sets `model.stop_training`, so `fit` ends
    after that batch (the epoch's logs and on_epoch_end still run, as in Keras). With
    `raise_error=True`, raises RuntimeError instead (Keras 3.10's option)."""

    def __init__(self, raise_error: bool = False):
        super().__init__()
        self.raise_error = bool(raise_error)

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}")
            print(f"Batch {batch}: Invalid loss, terminating training", flush=True)
            self.model.stop_training = True


class ModelCheckpoint(Callback):
    """Save the model after each epoch (or only when `monitor` improves, `save_best_only`) with
    the same atomic write as `model.save`: a crash or Ctrl-C during a save leaves the previous
    file intact (in a data-parallel fit, rank 0 writes). `filepath` may use {epoch} and log keys,
    as Keras:
    "ckpt-{epoch:02d}-{val_loss:.3f}.symdl". A NaN `monitor` never counts as an improvement."""

    def __init__(self, filepath: str, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto"):
        super().__init__()
        self.filepath, self.monitor, self.verbose = str(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.improved, self.mode = _better(mode, monitor)
        self.best = np.inf if self.mode == "min" else -np.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                raise ValueError(f"ModelCheckpoint monitors {self.monitor!r}, which the logs lack: "
                                 f"{sorted(logs)}")
            if not self.improved(value, self.best, 0.0):
                return
            if self.verbose and _writes_files(self.model):
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to {value:.5f}, "
                      f"saving model to {path}")
            self.best = value
        if _writes_files(self.model):
            (self.model.save_weights if self.save_weights_only else self.model.save)(path)


def _writes_files(model) -> bool:
    """In a data-parallel fit only rank 0 writes (every rank holds the same weights)."""
    dist = getattr(model, "_distributed", None)
    return dist is None or dist.rank == 0
