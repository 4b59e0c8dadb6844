"""compile / fit / evaluate / predict, Keras' semantics (batch-mean losses, per-epoch logs).

Their arguments are checked by nn/checks.py, sample and class weights applied by nn/weighting.py;
nn/step_kernels.py tells fit what its first batch will compile. train_on_batch, fit, evaluate and
predict flush subnormals to zero (runtime/floats.py: a step slowed 2.5x once Adam's moments
decayed into them).
"""
from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

from symdl.runtime import ahead, trace
from symdl.runtime.floats import flushing

from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from .callbacks import Callback, History
from .checks import (check_batch_axis, check_batch_size, check_callbacks, check_count, check_fraction,
                     check_shapes, check_targets, check_verbose)
from .device import DeviceOptimizer, check_device, to_host
from .replay import StepReplay
from .progress import CompileProgress, Progress, uncached_modules
from .step_kernels import step_kernels
from .utils import as_float32
from .weighting import sample_weights, scale_rows, weighted_loss


class Trainer:
    """The training half of Sequential (needs forward, backward, weights, rng, build)."""

    def __init__(self):
        self.optimizer = self.loss = None
        self.metric_fns: list = []
        self.stop_training = False
        self.history: History | None = None
        self.device = "cpu"
        self._device_optimizer: DeviceOptimizer | None = None
        self._nonfinite_warned = False  # fit warns once per call when the loss turns NaN or inf
        self._compiling: CompileProgress | None = None  # counts the first batch's compiles (fit)
        self._distributed = None  # the Distributed context of a data-parallel fit (nn/distributed.py)
        self._replay = None  # the recorded training steps (nn/replay.py), made by compile

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, device: str = "cpu") -> None:
        """optimizer/loss: Keras names or symdl.nn objects; metrics: names ("accuracy", "mae");
        device: "cpu" (NumPy, the default) or "cuda" (weights, optimizer state, activations and
        gradients stay on the GPU as numba device arrays; see docs/nn.md, "GPU")."""
        if loss is None:
            raise ValueError("compile needs a loss, e.g. loss='sparse_categorical_crossentropy'")
        device = check_device(device)
        self.sync_optimizer_state()  # an optimizer object passed again keeps its device state
        # resolve everything before assigning: a bad name leaves the previous settings intact
        optimizer, loss = optimizers_mod.get(optimizer), losses_mod.get(loss)
        self.metric_fns = [metrics_mod.resolve(m, loss) for m in (metrics or [])]
        self.optimizer, self.loss = optimizer, loss
        self._metric_names = list(metrics or [])
        self._device_optimizer = DeviceOptimizer(self.optimizer) if device == "cuda" else None
        self._replay = StepReplay(self)  # a new loss or optimizer: nothing recorded before counts
        self.place(device)

    def sync_optimizer_state(self) -> None:
        """On "cuda": copy the optimizer state from the device into the optimizer (what save stores)."""
        if self._device_optimizer is not None:
            self._device_optimizer.store_host_state()

    def compile_config(self) -> dict | None:
        if self.loss is None:
            return None
        return {"optimizer": self.optimizer.get_config(), "loss": self.loss.get_config(),
                "metrics": self._metric_names}

    def _require_compiled(self, what: str) -> None:
        if self.loss is None:
            raise RuntimeError(f"call model.compile(optimizer, loss, metrics) before {what}")

    # -- one step -------------------------------------------------------------------------------
    @flushing
    def train_on_batch(self, x, y, sample_weight=None, class_weight=None) -> float:
        """One optimizer step on one batch; returns the batch loss (weighted as in `fit`)."""
        self._require_compiled("train_on_batch")
        self._ensure_built()
        x, y = as_float32(x), np.asarray(y)
        check_shapes("train_on_batch", x, y, self.input_shape)  # not fit's NaN scans: they would cost a step
        return self._step(x, y, sample_weights("train_on_batch", y, sample_weight, class_weight))[0]

    def _step(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None):
        if w is None and self._replay is not None and self.device == "cpu" and self._distributed is None:
            return self._replay.step(x, y)  # the recorded step, once it has been checked (nn/replay.py)
        return self._plain_step(x, y, w)

    def _plain_step(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, parts: dict | None = None):
        """(batch loss, model output): layer by layer, as the tape says. `parts` (a dict) receives
        what a recording of the step needs: the loss's feed, its 0-d loss array, the launch count
        where the optimizer's update begins."""
        if parts is None:
            with self._compiling_ahead(lambda: self._run_step(x, y, w, None)):
                return self._run_step(x, y, w, None)
        return self._run_step(x, y, w, parts)

    def _compiling_ahead(self, dry_run):
        """While the block compiles, a forked helper compiles the kernels `dry_run` calls last
        (runtime/ahead.py); host models outside distributed training only."""
        if self.device == "cpu" and self._distributed is None:
            return ahead.armed(dry_run)
        return contextlib.nullcontext()

    def _run_step(self, x, y, w, parts):
        loss, out, grads = self._gradients(x, y, w, parts)
        if parts is not None:
            parts["update_from"] = len(trace.RECORDING)
        self._apply(grads)
        return loss, out

    def _gradients(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None, parts: dict | None = None):
        """(batch loss, model output, gradients of `trainable_weights`) for one batch."""
        tape: list = []
        out = self.forward(x, training=True, tape=tape)
        feed = self.loss.feed(y, out)
        loss, grad = self.loss.on_feed(feed, np.shape(out))
        if parts is not None:
            parts.update(feed=feed, loss=loss)
        loss = float(loss)
        if w is not None:  # Keras: mean over the batch of w_i * loss_i; its gradient scales row i by w_i
            loss, grad = weighted_loss(self.loss, y, out, w), scale_rows(grad, w)
        grads = self.backward(tape, grad)
        return loss, out, [g for v, g in zip(self.weights, grads, strict=True) if v.trainable]

    def _apply(self, grads: list) -> None:
        """One optimizer step on every trainable weight."""
        keys = [n for n, v in enumerate(self.weights) if v.trainable]
        if keys:
            (self._device_optimizer or self.optimizer).apply([self.weights[n] for n in keys], grads, keys)

    def _train_batch(self, x, y, w, idx) -> tuple[float, list]:
        """One step on the samples `idx`: (batch loss, batch metrics)."""
        yb = y[idx]
        loss, out = self._step(x[idx], yb, None if w is None else w[idx])
        out = to_host(out) if self.metric_fns else out  # metrics are NumPy: predictions come out
        return loss, [fn(yb, out) for _, fn in self.metric_fns]

    # -- fit ------------------------------------------------------------------------------------
    @flushing
    def fit(self, x, y, batch_size: int | None = 32, epochs: int = 1, verbose: int | str = "auto",
            callbacks=None, validation_split: float = 0.0, validation_data=None, shuffle: bool = True,
            initial_epoch: int = 0, sample_weight=None, class_weight=None, distributed=False) -> History:
        """Train for `epochs`; returns History (`.history["loss"]`, metrics, `val_*`). A loss that
        turns NaN or inf warns once (RuntimeWarning) and shows as such in the logs;
        `callbacks=[nn.TerminateOnNaN()]` stops there.

        `sample_weight` (one number per sample) or `class_weight` ({class: weight}, by integer
        label or one-hot argmax; classes not named weigh 1) weight the loss as Keras does: the
        batch loss is mean_i(w_i * loss_i) and sample i's gradient is scaled by w_i. Metrics stay
        unweighted (Keras' `metrics`, not `weighted_metrics`). `validation_data` may be
        (x_val, y_val, sample_weight_val).

        `distributed=True` (or an `nn.Distributed`) trains data-parallel over MPI when launched with
        `mpiexec -n N`: each step takes a global batch of batch_size × N samples, each rank
        computes its shard, gradients are averaged with one Allreduce (docs/distributed.md).

        With verbose=1 or 2, a first batch that compiles kernels (an empty kernel cache) shows one
        line counting them; nothing is printed when every kernel is cached."""
        self._require_compiled("fit")
        if distributed is not False and distributed is not None:
            from .distributed import context
            with context(distributed).running(self) as dist:  # a failing rank ends the job
                return self.fit(x, y, batch_size, epochs, 0 if dist.rank else verbose, callbacks,
                                validation_split, validation_data, shuffle, initial_epoch, sample_weight,
                                class_weight)
        # every argument is checked before the data is converted and before any kernel runs
        batch_size = check_batch_size("fit", batch_size)
        epochs = check_count("fit", "epochs", epochs, 0)
        initial_epoch = check_count("fit", "initial_epoch", initial_epoch, 0)
        verbose = check_verbose("fit", verbose)
        validation_split = check_fraction("fit", "validation_split", validation_split)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise ValueError(f"fit: shuffle must be True or False, got {shuffle!r}")
        callbacks = check_callbacks(callbacks)
        x, y = as_float32(x), np.asarray(y)
        if self.input_shape is not None:
            check_batch_axis("fit", x, self.input_shape)
        w = sample_weights("fit", y, sample_weight, class_weight)
        if validation_data is None and validation_split and x.ndim:
            cut = int(len(x) * (1.0 - validation_split))  # Keras: the last samples, before shuffling
            if not 0 < cut < len(x):
                raise ValueError(f"fit: validation_split={validation_split} of {len(x)} samples leaves "
                                 f"{cut} to train on and {len(x) - cut} to validate; both need one")
        if self.input_shape is None:
            self.input_shape = x.shape[1:]
        self._check_data(x, y, "fit")  # every check before the first kernel runs
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("fit: validation_data must be a pair (x_val, y_val) or a triple "
                                 "(x_val, y_val, sample_weight_val)")
            vx, vy = as_float32(validation_data[0]), np.asarray(validation_data[1])
            self._check_data(vx, vy, "fit (validation_data)")
            vw = validation_data[2] if len(validation_data) == 3 else None
            validation_data = (vx, vy, sample_weights("fit (validation_data)", vy, vw, None))
        if validation_data is None and validation_split:
            vw = None if w is None else w[cut:]
            x, y, validation_data = x[:cut], y[:cut], (x[cut:], y[cut:], vw)
            w = None if w is None else w[:cut]
        self._ensure_built()
        if self._distributed is not None:  # rank 0's weights and optimizer state everywhere
            self._distributed.broadcast_state(self)
        self.history = History()
        self._nonfinite_warned = False
        cbs: list[Callback] = [self.history, *callbacks]
        for cb in cbs:
            cb.set_model(self)
        steps = -(-len(x) // (batch_size * (self._distributed.size if self._distributed else 1)))
        progress = Progress(verbose, epochs, steps)
        # the first batch compiles what the cache lacks: one line counts it (numba's compile events)
        compiles = verbose and epochs > initial_epoch
        self._compiling = CompileProgress(self._expected_compiles()) if compiles else None
        self.stop_training = False
        for cb in cbs:
            cb.on_train_begin()
        epoch = initial_epoch
        try:
            if self._compiling is not None:
                self._compiling.__enter__()
            for epoch in range(initial_epoch, epochs):
                for cb in cbs:
                    cb.on_epoch_begin(epoch)
                progress.epoch_begin(epoch, defer_bar=self._compiling is not None)
                logs = self._train_epoch(x, y, w, batch_size, shuffle, cbs, progress, epoch)
                if validation_data is not None:
                    logs.update({f"val_{k}": v for k, v in self._validate(*validation_data, batch_size).items()})
                if self._distributed is not None:  # callbacks decide on rank 0's logs everywhere
                    logs = self._distributed.broadcast(logs)
                progress.epoch_end(epoch, logs)
                for cb in cbs:
                    cb.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        except KeyboardInterrupt:
            if self._distributed is not None and self._distributed.size > 1:  # ranks cannot stop apart: end the job
                raise
            # Ctrl-C stops training, not the program: the completed epochs stay in History (the
            # interrupted one is not recorded; the weights hold its updates so far) and
            # on_train_end still runs (EarlyStopping restores, files are closed)
            if progress.bar is not None:
                progress.bar.close()
                progress.bar = None
            self.history.interrupted = True
            self.stop_training = True
            print(f"\nfit interrupted in epoch {epoch + 1}; returning the history of "
                  f"{len(self.history.epoch)} completed epoch(s)", flush=True)
        finally:
            self._end_compiling(progress, open_bar=False)
        for cb in cbs:
            cb.on_train_end()
        return self.history

    def _validate(self, vx, vy, vw, batch_size: int) -> dict:
        """Loss and metrics on the validation data (sharded across ranks when data-parallel)."""
        dist = self._distributed
        if dist is None:
            return self.evaluate(vx, vy, batch_size=batch_size, verbose=0, return_dict=True, sample_weight=vw)
        mine = dist.shard(np.arange(len(vx)))
        totals = self._totals(vx[mine], vy[mine], None if vw is None else vw[mine], batch_size)
        values = dist.sum(totals) / len(vx)
        return dict(zip(self._log_names(), map(float, values), strict=True))

    def _end_compiling(self, progress: Progress, open_bar: bool = True) -> None:
        """After the first batch: stop counting compiles, end the compile line, open the bar."""
        compiling, self._compiling = self._compiling, None
        if compiling is not None:
            compiling.close()
            if open_bar:
                progress.open_bar()

    def _expected_compiles(self) -> set | int:
        """The generated modules a training step of this model runs that the disk cache
        lacks (an estimate that leaves out rarely used ones; the compile line's count grows if
        more compile). 0 on "cuda", where the count starts from the first compile."""
        if self.device != "cpu":
            return 0
        try:
            return uncached_modules(step_kernels(self))
        except Exception:  # noqa: BLE001 - a custom layer or loss the walk does not know: the
            return 0       # count then starts at the first compile; training must not fail here

    def _check_data(self, x: np.ndarray, y: np.ndarray, where: str) -> None:
        """Refuse data that would fail or poison training, before any kernel runs: sample
        counts, input shape, NaN/inf, and targets that do not fit the loss and output shape."""
        check_shapes(where, x, y, self.input_shape)
        if len(x) == 0:
            raise ValueError(f"{where}: no samples")
        if not np.isfinite(x).all():
            raise ValueError(f"{where}: x holds {int(np.size(x) - np.isfinite(x).sum())} NaN or inf values")
        if y.dtype.kind not in "fiub":
            raise ValueError(f"{where}: y must hold numbers, got dtype {y.dtype}")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            raise ValueError(f"{where}: y holds NaN or inf values")
        self._ensure_built()
        check_targets(self.loss, y, tuple(self.output_shape), where)

    def _train_epoch(self, x, y, w, batch_size, shuffle, cbs, progress, epoch: int) -> dict:
        dist = self._distributed  # data-parallel: a global batch is batch_size per rank
        if dist is None:
            order, train_batch = self.rng.permutation(len(x)) if shuffle else np.arange(len(x)), self._train_batch
        else:
            order, train_batch = dist.order(self.rng, len(x), shuffle), dist.train_batch_of(self)
            batch_size *= dist.size
        totals = np.zeros(1 + len(self.metric_fns))
        seen = 0
        for b, lo in enumerate(range(0, len(x), batch_size)):
            for cb in cbs:
                cb.on_batch_begin(b)
            idx = order[lo:lo + batch_size]
            loss, values = train_batch(x, y, w, idx)
            if self._compiling is not None:
                self._end_compiling(progress)
            if not math.isfinite(loss):
                self._warn_nonfinite(loss, epoch, b)
            totals += len(idx) * np.array([loss, *values])
            seen += len(idx)
            logs = dict(zip(self._log_names(), totals / seen, strict=True))
            progress.batch_end(logs)
            for cb in cbs:
                cb.on_batch_end(b, logs)
            if dist is not None:  # every rank stops where rank 0's callbacks stop
                self.stop_training = dist.agree(self.stop_training)
            if self.stop_training:  # Keras: a callback may stop within the epoch (TerminateOnNaN)
                break
        return {k: float(v) for k, v in logs.items()}

    def _warn_nonfinite(self, loss: float, epoch: int, batch: int) -> None:
        """Once per fit: a diverged run must not look like a normal one."""
        if self._nonfinite_warned:
            return
        self._nonfinite_warned = True
        warnings.warn(f"fit: the loss is {loss} at epoch {epoch + 1}, batch {batch + 1}: training "
                      f"diverged and the weights may hold NaN or inf. Lower the learning rate; "
                      f"callbacks=[nn.TerminateOnNaN()] stops at the first such batch",
                      RuntimeWarning, stacklevel=5)  # here, _train_epoch, fit, its @flushing wrapper: the caller

    def _log_names(self) -> list[str]:
        return ["loss", *(name for name, _ in self.metric_fns)]

    # -- evaluate / predict -----------------------------------------------------------------------
    @flushing
    def evaluate(self, x, y, batch_size: int | None = 32, verbose: int | str = "auto",
                 return_dict: bool = False, sample_weight=None):
        """Loss and metrics over (x, y): `loss` alone, or [loss, metric...], or a dict (NaN when
        the model's outputs are NaN). `sample_weight`: the loss is mean_i(w_i * loss_i), as in
        `fit`; metrics stay unweighted."""
        self._require_compiled("evaluate")
        batch_size = check_batch_size("evaluate", batch_size)
        verbose = check_verbose("evaluate", verbose)
        x, y = as_float32(x), np.asarray(y)
        if self.input_shape is None:
            self.input_shape = x.shape[1:]
        self._check_data(x, y, "evaluate")
        w = sample_weights("evaluate", y, sample_weight, None)
        values = self._totals(x, y, w, batch_size) / max(len(x), 1)
        result = dict(zip(self._log_names(), map(float, values), strict=True))
        if verbose:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in result.items()))
        if return_dict:
            return result
        return result["loss"] if len(result) == 1 else list(result.values())

    def _totals(self, x, y, w, batch_size: int) -> np.ndarray:
        """[Σ loss, Σ metric...] over the batches of (x, y), each batch mean weighted by its size."""
        def batch(lo: int) -> np.ndarray:
            xb, yb = x[lo:lo + batch_size], y[lo:lo + batch_size]
            out = self.forward(xb)
            wb = None if w is None else w[lo:lo + batch_size]
            loss = self.loss(yb, out) if wb is None else weighted_loss(self.loss, yb, out, wb)
            out = to_host(out) if self.metric_fns else out
            return len(xb) * np.array([loss, *(fn(yb, out) for _, fn in self.metric_fns)])

        totals = np.zeros(1 + len(self.metric_fns))
        with self._compiling_ahead(lambda: batch(0)):
            for lo in range(0, len(x), batch_size):
                totals += batch(lo)
        return totals

    @flushing
    def predict(self, x, batch_size: int | None = 32, verbose: int | str = 0) -> np.ndarray:
        """Model outputs for x, computed in batches (a new array)."""
        batch_size = check_batch_size("predict", batch_size)
        check_verbose("predict", verbose)
        x = as_float32(x)
        if x.ndim == 0:
            raise ValueError("predict: x needs a batch axis, got a scalar")
        if self.input_shape is None:
            self.input_shape = x.shape[1:]
        else:
            check_batch_axis("predict", x, self.input_shape)
        self._ensure_built()
        forward = self._replay.forward if self._replay is not None and self.device == "cpu" else self.forward
        out = np.zeros((0, *self.output_shape), dtype=np.float32)
        with self._compiling_ahead(lambda: forward(x[:batch_size])):
            for lo in range(0, len(x), batch_size):
                y = to_host(forward(x[lo:lo + batch_size]))  # in a buffer the next batch reuses: copied out
                if lo == 0:
                    out = np.empty((len(x), *y.shape[1:]), dtype=y.dtype)
                out[lo:lo + len(y)] = y
        return out
