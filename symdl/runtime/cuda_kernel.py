"""CudaKernel: a formula compiled for numba.cuda, with the cpu Kernel's argument checks.

    >>> kern = dense.compile(backend="cuda")
    >>> Y = kern(x=X, W=Wv, b=bv)               # NumPy in: copied to the GPU, result copied back
    >>> Yd = kern(x=cuda.to_device(X), ...)     # a device array in: the result stays on the device
    >>> grads = kern.vjp(G, x=X, W=Wv, b=bv)

Binding, shape, dtype and index checks are Kernel's, run on shape-only stand-ins for device
arrays (no copy); integer index tensors on the device are copied back for the gather check, and
`check_finite=True` copies float inputs back too (it is opt-in and costs a pass anyway).
"""
from __future__ import annotations

import numpy as np

from .. import __version__
from ..debug import show
from .kernel import Kernel, _VjpPlan, upstream

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


class CudaKernel(Kernel):
    """A formula compiled for the cuda backend (see the module docstring); Kernel(f, "cuda") makes one."""

    def __init__(self, formula, backend: str = "cuda", check_finite: bool = False, check: bool = True):
        self.cuda = require_cuda()
        super().__init__(formula, backend, check_finite, check)

    def __repr__(self) -> str:
        return f"CudaKernel({self.formula.name})"

    def source(self, dtype="float32") -> str:
        """The generated numba.cuda source for one dtype."""
        from ..backends.cuda import generate
        source = generate(self.program, np.dtype(dtype).name, __version__)
        show(f"cuda source {np.dtype(dtype).name}", source)
        return source

    def parallel_at(self, dims: dict) -> bool:
        return True  # the launch configuration follows the problem size in the generated driver

    # -- arguments --------------------------------------------------------------------------------
    def _device(self, a):
        if not hasattr(a, "copy_to_host"):  # another library's GPU array (CuPy, PyTorch): no copy
            a = self.cuda.as_cuda_array(a)
        return a

    def _split(self, arrays: dict, check_finite) -> tuple[dict, dict]:
        """(stand-ins for the checks, device arrays by name). A device array's stand-in is a
        zero-strided NumPy array of its shape and dtype, unless its values are needed on the host."""
        finite = self.check_finite if check_finite is None else check_finite
        ranks = {t.name: (t.rank, t.integer) for t in self.formula.inputs}
        stand, dev = {}, {}
        for name, a in arrays.items():
            if not is_device_array(a):
                stand[name] = a
                continue
            a = dev[name] = self._device(a)
            rank, integer = ranks.get(name, (a.ndim, False))
            if rank == 0 or finite or (integer and self._gathers):
                stand[name] = a.copy_to_host()
            else:
                stand[name] = np.broadcast_to(np.zeros((), dtype=a.dtype), a.shape)
        return stand, dev

    def _to_device(self, args, dev: dict) -> list:
        cuda = self.cuda
        out = []
        for name, a in zip(self._order, args, strict=True):
            if name in dev and np.ndim(a):
                out.append(dev[name])
            elif isinstance(a, np.ndarray):
                out.append(cuda.to_device(np.ascontiguousarray(a)))
            else:
                out.append(a)  # a scalar: passed by value
        return out

    # -- calls ------------------------------------------------------------------------------------
    def __call__(self, *positional, out=None, dims: dict | None = None, check_finite: bool | None = None,
                 **arrays):
        """Run the kernel. NumPy inputs give a NumPy result; if any input (or `out=`) is a device
        array, the result is a device array."""
        f = self.formula
        if positional:
            self._refuse_positional(positional, "kern(")
        on_device = any(is_device_array(a) for a in arrays.values()) or is_device_array(out)
        if out is not None and not isinstance(out, np.ndarray) and not is_device_array(out):
            raise ValueError(f"formula {f.name!r}: out= must be a numpy or device array, got "
                             f"{type(out).__name__}")
        stand, dev = self._split(arrays, check_finite)
        args, dtype = self._arguments(stand, check_finite)
        shapes = tuple(a.shape if isinstance(a, np.ndarray) else () for a in args)
        key = (dtype, shapes, None if dims is None else tuple(sorted(dims.items())),
               None if out is None else tuple(out.shape))
        plan = self._plans.get(key)
        if plan is None:
            named = {t.name: s for t, s in zip(f.inputs, shapes, strict=True)}
            bound = self.binder.bind(named, dims, None if out is None else tuple(out.shape))
            out_shape = tuple(fn(**bound) for fn, _ in self.binder.out_shape)
            if isinstance(out, np.ndarray):  # a bad out= is refused before anything compiles or runs
                self._output(out, out_shape, dtype, args)
            values = [bound[str(d)] for d in f.dims]
            # checked on the device, as Kernel's: the kernels take C-contiguous device arrays
            plan = self._plans[key] = (bound, out_shape, values, self._checked_module(dtype, True).run)
        bound, out_shape, values, run = plan
        self.last_dims = bound
        if self._gathers:
            self.binder.check_gathers(dict(zip(self._order, args, strict=True)), bound)
        host_out = None
        if out is not None:
            if isinstance(out, np.ndarray):
                host_out = self._output(out, out_shape, dtype, args)
                out = None
            else:
                out = self._device(out)
                if tuple(out.shape) != out_shape or np.dtype(out.dtype) != dtype:
                    raise ValueError(f"formula {f.name!r}: out= must be a {dtype} array of shape "
                                     f"{out_shape}, got {out.dtype} {tuple(out.shape)}")
        dev_args = self._to_device(args, dev)
        if out is None:
            out = self.cuda.device_array(out_shape or (1,), dtype=dtype)
        run(out if out_shape or out.shape == (1,) else out.reshape(1), *dev_args, *values, True)
        return self._result(out, out_shape, host_out, on_device)

    def _result(self, out, shape, host_out=None, on_device=False):
        if on_device and host_out is None:
            return out.reshape(()) if not shape and out.shape != () else out
        host = out.copy_to_host().reshape(shape)
        if host_out is None:
            return host
        host_out[...] = host
        return host_out

    # -- gradients --------------------------------------------------------------------------------
    def vjp(self, grad, *positional, wrt=None, dims: dict | None = None, **arrays) -> dict:
        """{input name: gradient}; device arrays in give device arrays out, as for a call. A scalar
        output's upstream gradient may be a number, as on the cpu."""
        f = self.formula
        if positional:
            self._refuse_positional(positional, "kern.vjp(grad, ", " after grad")
        if getattr(f, "recurrence", None) is not None:  # as Kernel.vjp: the adjoint scan is a program
            return self._recurrence_program().vjp(grad, wrt=wrt, **arrays)
        on_device = any(is_device_array(a) for a in arrays.values()) or is_device_array(grad)
        stand, dev = self._split(arrays, None)
        args, dtype = self._arguments(stand, None)
        shapes = tuple(a.shape if isinstance(a, np.ndarray) else () for a in args)
        key = (dtype, shapes, None if dims is None else tuple(sorted(dims.items())),
               None if wrt is None else tuple(wrt))
        plan = self._vjp_plans.get(key)
        if plan is None:
            plan = self._vjp_plans[key] = _VjpPlan(self, dtype, shapes, dims, wrt)
        if self._gathers:
            self.binder.check_gathers(dict(zip(self._order, args, strict=True)), plan.bound)
        if is_device_array(grad):
            grad = self._device(grad)
            g_shape, g_dtype = tuple(grad.shape), np.dtype(grad.dtype)
        else:
            grad = upstream(grad, plan.out_shape, dtype)
            g_shape, g_dtype = getattr(grad, "shape", None), getattr(grad, "dtype", None)
        if not isinstance(grad, np.ndarray) and not is_device_array(grad) or g_shape != plan.out_shape \
                or g_dtype != dtype:
            raise ValueError(f"formula {f.name!r}: the upstream gradient must be a {dtype} array of shape "
                             f"{plan.out_shape} (the output's), got {g_dtype or type(grad).__name__} "
                             f"{g_shape or ''}")
        steps = plan.steps if plan.steps is not None else plan.build()
        if self.check_finite and plan.finite_check:
            host = grad.copy_to_host() if is_device_array(grad) else grad
            if not np.all(np.isfinite(host)):
                raise ValueError(f"formula {plan.finite_check!r}: tensor {plan.grad_name!r} holds NaN or "
                                 f"infinite values")
        if not plan.out_shape:  # a scalar output's gradient is a scalar argument
            grad = (grad.copy_to_host() if is_device_array(grad) else grad).reshape(()).item()
        elif isinstance(grad, np.ndarray):
            grad = self.cuda.to_device(np.ascontiguousarray(grad))
        feed_from = [*self._to_device(args, dev), grad]
        checks = [*args, grad]
        result = {}
        for name, shape, kernel, positions, kdims, values, _, run in steps:
            feed = [feed_from[p] for p in positions]
            if kernel._gathers:
                kernel.binder.check_gathers(dict(zip(kernel._order, [checks[p] for p in positions],
                                                     strict=True)), kdims)
            out = self.cuda.device_array(shape or (1,), dtype=dtype)
            run(out, *feed, *values, True)
            kernel.last_dims = kdims
            result[name] = self._result(out, shape, None, on_device)
        return result
