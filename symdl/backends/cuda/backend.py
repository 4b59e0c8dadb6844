"""The cuda backend as the runtime sees it: numba.cuda source; NumPy inputs are copied to the
device and results copied back, device arrays stay where they are.

Argument checks run on host stand-ins (runtime/kernel.py): a device array's stand-in is a
zero-strided NumPy array of its shape and dtype, so nothing is copied, except where the checks read
values (scalars, index tensors for the gather check, every float input under check_finite).
numba.cuda is imported when the first kernel is made, never by printing.
"""
from __future__ import annotations

import numpy as np

from ..base import Backend
from .codegen import generate

INSTALL = "pip install 'symdl[cuda]'"


def require_cuda():
    """numba.cuda from numba-cuda, or an ImportError naming the extra that installs it."""
    try:
        import numba_cuda  # noqa: F401  (numba's own numba.cuda is deprecated; numba-cuda replaces it)
        from numba import cuda
    except ImportError as err:
        raise ImportError(f"backend='cuda' needs numba-cuda, which is not installed: {INSTALL} (on a "
                          f"machine with a GPU, also a CUDA toolkit: a system one, or "
                          f"pip install 'symdl[cuda12]' / 'symdl[cuda13]'; see docs/cuda.md)") from err
    return cuda


def is_device_array(a) -> bool:
    """A numba device array (or the simulator's), or any object with __cuda_array_interface__."""
    return not isinstance(a, np.ndarray) and (hasattr(a, "copy_to_host")
                                               or hasattr(a, "__cuda_array_interface__"))


class CudaBackend(Backend):
    name = "cuda"
    arrays = "a numpy or device array"
    host_memory = False
    checks_layout = False  # the driver takes C-contiguous device arrays whatever the caller's layout
    fuses = True  # an optimizer step: one kernel per parameter writes the weight and every state (runtime/fused.py)

    def __init__(self):
        self.cuda = require_cuda()

    def generate(self, program, dtype: str, version: str) -> str:
        return generate(program, dtype, version)

    def parallel(self, program, dims: dict, module=None) -> bool:
        return True  # the launch configuration follows the problem size in the generated driver

    def is_native(self, a) -> bool:
        return is_device_array(a)

    def native(self, a):
        """A device array as numba takes it (another library's GPU array: a view, no copy)."""
        return a if hasattr(a, "copy_to_host") else self.cuda.as_cuda_array(a)

    def to_host(self, a):
        return self.native(a).copy_to_host() if is_device_array(a) else a

    def split(self, arrays: dict, needs_values) -> tuple[dict, dict]:
        stand, native = {}, {}
        for name, a in arrays.items():
            if not is_device_array(a):
                stand[name] = a
                continue
            a = native[name] = self.native(a)
            if a.ndim == 0 or needs_values(name):
                stand[name] = a.copy_to_host()
            else:
                stand[name] = np.broadcast_to(np.zeros((), dtype=a.dtype), a.shape)
        return stand, native

    def place(self, names, args, native: dict) -> list:
        out = []
        for name, a in zip(names, args, strict=True):
            if name in native and np.ndim(a):
                out.append(native[name])
            elif isinstance(a, np.ndarray):
                out.append(self.cuda.to_device(np.ascontiguousarray(a)))
            else:
                out.append(a)  # a scalar: passed by value
        return out

    def upstream(self, grad):
        if is_device_array(grad):
            return self.native(grad)
        return self.cuda.to_device(np.ascontiguousarray(grad)) if isinstance(grad, np.ndarray) else grad

    def empty(self, shape: tuple, dtype):
        return self.cuda.device_array(shape or (1,), dtype=dtype)

    def flavour(self, parallel: bool) -> bool:
        return True  # the driver's `parallel` flag is the cpu's; unused here

    def launch(self, run, out, args, values, parallel: bool) -> None:
        run(out, *args, *values, True)

    def result(self, out, shape: tuple, keep_native: bool):
        if keep_native:
            return out.reshape(()) if not shape and out.shape != () else out
        return out.copy_to_host().reshape(shape)
