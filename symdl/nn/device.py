"""Where a model's tensors live: "cpu" (NumPy arrays) or "cuda" (numba device arrays).

On "cuda" the weights, optimizer state, activations and gradients are numba device arrays for the
whole of `fit`; every kernel is the formula's cuda Kernel, which keeps device inputs on the
device. Only batches go in and loss values (and, for metrics, predictions) come out.
numba.cuda is imported only when "cuda" is asked for.
"""
from __future__ import annotations

import numpy as np

from symdl.backends.cuda.backend import INSTALL, is_device_array, require_cuda

DEVICES = ("cpu", "cuda")

__all__ = ["DEVICES", "DeviceOptimizer", "check_device", "is_device_array", "to_device", "to_host",
           "zeros"]


def check_device(device: str) -> str:
    """The device name, once it is known to work: ValueError for an unknown name, ImportError
    naming `pip install 'symdl[cuda]'` without numba-cuda, RuntimeError without a GPU."""
    name = str(device).lower()
    if name not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {DEVICES}")
    if name == "cuda":
        cuda = require_cuda()  # ImportError naming INSTALL
        try:
            available = bool(cuda.is_available())
        except Exception:  # no driver: some numba-cuda setups raise instead of answering False
            available = False
        if not available:
            raise RuntimeError("device='cuda': numba-cuda finds no usable NVIDIA GPU here (driver and "
                               "CUDA toolkit needed, see docs/cuda.md). To run on numba's CUDA simulator "
                               "instead, set NUMBA_ENABLE_CUDASIM=1 before numba is imported "
                               f"(numba-cuda comes with {INSTALL}).")
    return name


def to_device(a) -> object:
    """A device copy of a host array (device arrays are returned as they are)."""
    if is_device_array(a):
        return a
    return require_cuda().to_device(np.ascontiguousarray(a))


def to_host(a):
    """A NumPy array: device arrays are copied back, host arrays returned as they are."""
    return a.copy_to_host() if is_device_array(a) else a


def zeros(shape, dtype, on_device: bool):
    """Zeros on the host or the device (a host array copied in: used once per state tensor)."""
    z = np.zeros(shape, dtype=dtype)
    return to_device(z) if on_device else z


class DeviceOptimizer:
    """An Optimizer's update Program compiled for cuda, with its state on the device.

    The step rule, hyper-parameters and step count are the wrapped optimizer's (`program()`,
    `hyper()`, `state_names`, `iterations`), so cpu and cuda runs take the same steps. State the
    optimizer already holds (restored by `load_model`, or left by cpu steps) is copied in at the
    first step; `store_host_state` copies the device state back for `get_state` / `model.save`.
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.kernel = optimizer.program().compile(backend="cuda")
        self.state: dict[int, dict] = {}
        self._loaded = False

    def _load_host_state(self) -> None:
        self._loaded = True
        get_state = getattr(self.optimizer, "get_state", None)
        if get_state is None:
            return
        for key, a in get_state()[1].items():  # {"<weight position>/<slot>": flat array}
            n, slot = key.split("/")
            self.state.setdefault(int(n), {})[slot] = to_device(np.asarray(a).reshape(-1))

    def store_host_state(self) -> None:
        """Copy the device state into the wrapped optimizer (NumPy), where saving reads it."""
        set_state = getattr(self.optimizer, "set_state", None)
        if set_state is not None and self.state:
            set_state(self.optimizer.iterations, {f"{n}/{slot}": to_host(a) for n, slots in
                                                  sorted(self.state.items()) for slot, a in slots.items()})

    def apply(self, variables: list, grads: list, keys: list | None = None) -> None:
        """One step; every variable's value becomes the kernel's w_new (a device array)."""
        if not self._loaded:
            self._load_host_state()
        self.optimizer.iterations += 1
        self.optimizer.update(self.kernel, self.state, variables, grads, on_device=True, keys=keys)
