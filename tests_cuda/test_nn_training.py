"""symdl.nn models trained with compile(device="cuda"): the same losses and weights as on the cpu,
parameters and optimizer state resident on the device for the whole of fit, every kernel called
with device arrays, one copy in per batch tensor, and the errors for a missing extra or GPU.

Tiny sizes: under NUMBA_ENABLE_CUDASIM=1 every GPU thread runs in Python.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from numba import cuda

from symdl import nn
from symdl.nn.device import DeviceOptimizer, is_device_array
from symdl.runtime import Kernel
from symdl.runtime.fused import FusedKernel

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

RNG = np.random.default_rng(3)
X_VEC = RNG.normal(size=(10, 6)).astype(np.float32)               # 3 batches of 4, 4, 2
X_IMG = RNG.normal(size=(8, 6, 6, 1)).astype(np.float32)          # 3 batches of 3, 3, 2
LABELS = RNG.integers(0, 3, size=10)
ONE_HOT = np.eye(3, dtype=np.float32)[LABELS]


def mlp() -> nn.Sequential:
    return nn.Sequential([nn.Input((6,)), nn.Dense(5, activation="relu"), nn.Dropout(0.3),
                          nn.Dense(3, activation="softmax")], seed=1)


def cnn() -> nn.Sequential:
    return nn.Sequential([nn.Input((6, 6, 1)), nn.Conv2D(2, 3, activation="relu"), nn.MaxPooling2D(2),
                          nn.Flatten(), nn.Dense(3)], seed=2)


class BatchLosses(nn.Callback):
    def __init__(self, check=None):
        self.losses, self.check = [], check

    def on_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])
        if self.check:
            self.check(self.model)


def train(make, device, x, y, batch_size, optimizer, loss, metrics=(), callbacks=()):
    model = make()
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics), device=device)
    cb = BatchLosses()
    hist = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[cb, *callbacks])
    return model, cb.losses, hist.history


def assert_same_run(make, x, y, batch_size, optimizer, loss, metrics=()):
    cpu, cpu_losses, cpu_hist = train(make, "cpu", x, y, batch_size, optimizer(), loss(), metrics)
    gpu, gpu_losses, gpu_hist = train(make, "cuda", x, y, batch_size, optimizer(), loss(), metrics)
    assert len(gpu_losses) == 3
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-4)
    for key in cpu_hist:
        np.testing.assert_allclose(gpu_hist[key], cpu_hist[key], rtol=1e-4)
    for w_gpu, w_cpu in zip(gpu.get_weights(), cpu.get_weights(), strict=True):
        assert isinstance(w_gpu, np.ndarray) and w_gpu.dtype == np.float32
        np.testing.assert_allclose(w_gpu, w_cpu, rtol=1e-4, atol=1e-6)
    assert cpu.get_weights()[0].shape == gpu.get_weights()[0].shape
    return cpu, gpu


def test_mlp_trains_as_on_the_cpu():
    cpu, gpu = assert_same_run(mlp, X_VEC, ONE_HOT, 4, lambda: nn.optimizers.Adam(0.05),
                               lambda: "categorical_crossentropy", metrics=["accuracy"])
    # predict and evaluate copy to the host and agree with the cpu model
    probs = gpu.predict(X_VEC, batch_size=4)
    assert isinstance(probs, np.ndarray)
    np.testing.assert_allclose(probs, cpu.predict(X_VEC, batch_size=4), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gpu.evaluate(X_VEC, ONE_HOT, batch_size=4, verbose=0),
                               cpu.evaluate(X_VEC, ONE_HOT, batch_size=4, verbose=0), rtol=1e-4)


def test_cnn_trains_as_on_the_cpu():
    assert_same_run(cnn, X_IMG, ONE_HOT[:8], 3, lambda: nn.optimizers.SGD(0.1, momentum=0.9),
                    lambda: nn.losses.CategoricalCrossentropy(from_logits=True))


def test_weights_stay_on_the_device_and_kernels_get_device_arrays(monkeypatch, tmp_path):
    host_inputs: list[str] = []  # "formula: tensor" for every NumPy array (not a scalar) a kernel got
    checked: set[tuple[str, str]] = set()  # (call or vjp, formula) seen

    def record(kernel, kind, arrays):
        if kernel.backend.name != "cuda":
            return
        checked.add((kind, kernel.formula.name))
        host_inputs.extend(f"{kernel.formula.name}: {n}" for n, a in arrays.items()
                           if isinstance(a, np.ndarray) and a.ndim)

    call, vjp = Kernel.__call__, Kernel.vjp

    def checked_call(self, out=None, dims=None, check_finite=None, **arrays):
        record(self, "call", {**arrays, "out": out})
        return call(self, out=out, dims=dims, check_finite=check_finite, **arrays)

    def checked_vjp(self, grad, wrt=None, dims=None, **arrays):
        record(self, "vjp", {**arrays, "grad": grad})
        return vjp(self, grad, wrt=wrt, dims=dims, **arrays)

    fused_run = FusedKernel.run

    def checked_fused(self, env):  # an optimizer step: one fused kernel per parameter (runtime/fused.py)
        if self.backend.name == "cuda":
            checked.add(("fused", self.program.name))
            host_inputs.extend(f"{self.program.name}: {n}" for n, a in env.items()
                               if isinstance(a, np.ndarray) and a.ndim)
        return fused_run(self, env)

    monkeypatch.setattr(Kernel, "__call__", checked_call)
    monkeypatch.setattr(Kernel, "vjp", checked_vjp)
    monkeypatch.setattr(FusedKernel, "run", checked_fused)
    copies_in: list[tuple] = []
    to_device = cuda.to_device
    monkeypatch.setattr(cuda, "to_device", lambda a, *args, **kw: copies_in.append(np.shape(a))
                        or to_device(a, *args, **kw))
    seen: list[int] = []

    def resident(model):
        assert model.weights and all(is_device_array(v.value) for v in model.weights)
        opt = model._device_optimizer
        assert isinstance(opt, DeviceOptimizer)
        assert all(is_device_array(s) for state in opt.state.values() for s in state.values())
        seen.append(len(copies_in))

    model, losses, _ = train(mlp, "cuda", X_VEC, ONE_HOT, 4, "rmsprop", "categorical_crossentropy",
                             callbacks=[BatchLosses(resident)])
    assert host_inputs == []
    # the layers forward and backward, the loss and the optimizer all went through the check
    assert {("call", "y.dense"), ("vjp", "y.dense"), ("vjp", "clip2"), ("call", "vec_mul"),
            ("fused", "rmsprop_keras_update")} <= checked
    assert len(seen) == 3 and all(np.isfinite(losses))
    # after the first step (weights and optimizer state moved in once), a batch copies in x, its
    # targets and the dropout mask
    assert [b - a for a, b in zip(seen, seen[1:])] == [3, 3]
    # files and weights go through the host; a reloaded model starts on the cpu
    path = tmp_path / "m.symdl"
    model.save(path)
    back = nn.load_model(path)
    assert back.device == "cpu" and all(isinstance(v.value, np.ndarray) for v in back.weights)
    np.testing.assert_allclose(back.predict(X_VEC), model.predict(X_VEC), rtol=1e-5, atol=1e-7)
    # the saved optimizer state is the device's: one more step from the file (cpu) and on the
    # device give the same loss and weights
    if hasattr(nn.optimizers.Optimizer, "get_state"):
        _, slots = back.optimizer.get_state()
        assert slots and all(np.any(a != 0) for a in slots.values())
        xb, yb = X_VEC[:4], ONE_HOT[:4]
        np.testing.assert_allclose(model.train_on_batch(xb, yb), back.train_on_batch(xb, yb), rtol=1e-5)
        for w_gpu, w_cpu in zip(model.get_weights(), back.get_weights(), strict=True):
            np.testing.assert_allclose(w_gpu, w_cpu, rtol=1e-4, atol=1e-6)
    # set_weights lands on the device; compile(device="cpu") brings the weights back
    model.set_weights(back.get_weights())
    assert all(is_device_array(v.value) for v in model.weights)
    model.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert all(isinstance(v.value, np.ndarray) for v in model.weights)


def test_sparse_labels_on_the_device():
    assert_same_run(mlp, X_VEC, LABELS, 4, lambda: nn.optimizers.Adam(0.05),
                    lambda: "sparse_categorical_crossentropy", metrics=["accuracy"])


def test_device_errors(monkeypatch):
    with pytest.raises(ValueError, match="unknown device"):
        mlp().compile(optimizer="sgd", loss="mse", device="tpu")
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="NUMBA_ENABLE_CUDASIM=1"):
        mlp().compile(optimizer="sgd", loss="mse", device="cuda")
    monkeypatch.setitem(sys.modules, "numba_cuda", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"pip install 'symdl\[cuda\]'"):
        mlp().compile(optimizer="sgd", loss="mse", device="cuda")
