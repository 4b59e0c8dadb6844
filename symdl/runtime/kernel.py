"""Kernel: a compiled formula. Checks every argument, binds dimensions, allocates, launches.

    >>> kern = dense.compile()
    >>> Y = kern(x=X, W=Wv, b=bv)
    >>> grads = kern.vjp(G, x=X, W=Wv, b=bv)     # {"x": ..., "W": ..., "b": ...}
"""
from __future__ import annotations

import numpy as np

from .. import __version__
from ..autodiff import grad_name
from ..backends.cpu import generate
from ..declare.formula import Formula
from ..debug import show
from ..loops.ir import check, format_ir
from ..loops.lower import lower
from .binding import Binder, float_dtype
from .cache import load_module

PARALLEL_WORK = 1 << 16  # below this many operations the threads' start-up costs more than it saves
BACKENDS = ("cpu", "cuda")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "cuda":
        raise ValueError("the cuda backend is not part of this release yet: compile with backend='cpu'")


class Kernel:
    """A formula compiled for one backend; one generated module per float dtype, built on first use.

    `check_finite=True` makes every call refuse NaN or infinite inputs (off by default: it costs a
    pass over the data).
    """

    def __init__(self, formula: Formula, backend: str = "cpu", check_finite: bool = False):
        check_backend(backend)
        self.formula, self.backend, self.check_finite = formula, backend, check_finite
        show("formula", str(formula))
        self.program = lower(formula)           # GEMM detection, loops, hoisting, CSE
        check(self.program)                     # cheap: always on
        show("loop IR", format_ir(self.program))
        self.binder = Binder(formula)
        self._modules: dict = {}
        self._plans: dict = {}
        self._grads: dict = {}
        self._order = [t.name for t in formula.inputs]
        self.last_dims: dict = {}  # the dimensions the latest call bound (a Program passes them on)

    def __repr__(self) -> str:
        return f"Kernel({self.formula.name}, backend={self.backend!r})"

    # -- generated code ---------------------------------------------------------------------------
    def source(self, dtype="float32") -> str:
        """The generated Python/Numba source for one dtype."""
        source = generate(self.program, np.dtype(dtype).name, __version__)
        show(f"source {np.dtype(dtype).name}", source)
        return source

    def _module(self, dtype):
        mod = self._modules.get(dtype)
        if mod is None:
            mod = self._modules[dtype] = load_module(self.source(dtype))
        return mod

    # -- calls ------------------------------------------------------------------------------------
    def __call__(self, out: np.ndarray | None = None, dims: dict | None = None,
                 check_finite: bool | None = None, **arrays) -> np.ndarray:
        f = self.formula
        if out is not None and not isinstance(out, np.ndarray):
            raise ValueError(f"formula {f.name!r}: out= must be a numpy array, got {type(out).__name__}")
        args, dtype = self._arguments(arrays, check_finite)
        shapes = tuple(a.shape if isinstance(a, np.ndarray) else () for a in args)
        key = (dtype, shapes, None if dims is None else tuple(sorted(dims.items())),
               None if out is None else out.shape)
        plan = self._plans.get(key)
        if plan is None:
            named = {t.name: s for t, s in zip(f.inputs, shapes, strict=True)}
            bound = self.binder.bind(named, dims, None if out is None else out.shape)
            out_shape = tuple(fn(**bound) for fn, _ in self.binder.out_shape)
            values = [bound[str(d)] for d in f.dims]
            parallel = self.binder.work(**bound) >= PARALLEL_WORK
            plan = self._plans[key] = (bound, out_shape, values, parallel, self._module(dtype).run)
        bound, out_shape, values, parallel, run = plan
        self.last_dims = bound
        if self.binder.reads and any(t.integer for t in f.inputs):
            self.binder.check_gathers(dict(zip(self._order, args, strict=True)), bound)
        out = self._output(out, out_shape, dtype, args)
        run(out if out_shape else out.reshape(1), *args, *values, parallel)
        return out

    def _arguments(self, arrays: dict, check_finite):
        f = self.formula
        if arrays.keys() != set(self._order):
            missing = [n for n in self._order if n not in arrays]
            extra = [n for n in arrays if n not in self._order]
            what = (f"missing {missing}" if missing else "") + (" and " if missing and extra else "") + (
                f"unexpected {extra}" if extra else "")
            raise ValueError(f"formula {f.name!r}: {what}; it takes {self._order}")
        for t in f.inputs:
            a = arrays[t.name]
            if t.rank == 0:
                if isinstance(a, np.ndarray) and a.size == 1:
                    arrays[t.name] = a = a.reshape(()).item()
                if not isinstance(a, (int, float, np.integer, np.floating)) or isinstance(a, bool):
                    raise ValueError(f"formula {f.name!r}: scalar {t.name!r} must be a number, got "
                                     f"{type(a).__name__}")
                continue
            if not isinstance(a, np.ndarray):
                raise ValueError(f"formula {f.name!r}: tensor {t.name!r} must be a numpy array, got "
                                 f"{type(a).__name__}")
            if a.ndim != t.rank:
                raise ValueError(f"formula {f.name!r}: tensor {t.name!r} must have rank {t.rank} "
                                 f"(shape {list(t.shape)}), got shape {a.shape}")
            if t.integer and a.dtype.kind not in "iu":
                raise ValueError(f"formula {f.name!r}: tensor {t.name!r} holds indices and must have an "
                                 f"integer dtype, got {a.dtype}")
        dtype = float_dtype(f.name, arrays, f.inputs)
        if check_finite if check_finite is not None else self.check_finite:
            for t in f.inputs:
                a = arrays[t.name]
                if not t.integer and not np.all(np.isfinite(a)):
                    raise ValueError(f"formula {f.name!r}: tensor {t.name!r} holds NaN or infinite values")
        return [arrays[n] for n in self._order], dtype

    def _output(self, out, shape, dtype, args):
        if out is None:
            return np.empty(shape, dtype=dtype)
        name = f"formula {self.formula.name!r}: out="
        if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
            raise ValueError(f"{name} must be a {dtype} array of shape {shape}, got "
                             f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}")
        if not out.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
        if any(isinstance(a, np.ndarray) and np.may_share_memory(a, out) for a in args):
            raise ValueError(f"{name} overlaps an input; kernels do not work in place")
        return out

    # -- gradients --------------------------------------------------------------------------------
    def grad_kernel(self, name: str) -> "Kernel":
        k = self._grads.get(name)
        if k is None:
            k = self._grads[name] = Kernel(self.formula.vjp([name])[name], self.backend, self.check_finite)
        return k

    def vjp(self, grad: np.ndarray, wrt=None, dims: dict | None = None, **arrays) -> dict:
        """{input name: gradient} for the upstream gradient `grad` (the output's shape and dtype)."""
        f = self.formula
        args, dtype = self._arguments(dict(arrays), None)
        shapes = {t.name: (a.shape if isinstance(a, np.ndarray) else ()) for t, a in
                  zip(f.inputs, args, strict=True)}
        bound = self.binder.bind(shapes, dims, None)
        if self.binder.reads and any(t.integer for t in f.inputs):
            self.binder.check_gathers(dict(zip(self._order, args, strict=True)), bound)
        out_shape = tuple(fn(**bound) for fn, _ in self.binder.out_shape)
        grad = np.asarray(grad) if np.isscalar(grad) else grad
        if not isinstance(grad, np.ndarray) or grad.shape != out_shape or grad.dtype != dtype:
            raise ValueError(f"formula {f.name!r}: the upstream gradient must be a {dtype} array of shape "
                             f"{out_shape} (the output's), got {getattr(grad, 'dtype', type(grad).__name__)} "
                             f"{getattr(grad, 'shape', '')}")
        names = [t.name for t in f.inputs if not t.integer] if wrt is None else list(wrt)
        result = {}
        for n in names:
            k = self.grad_kernel(n)
            feed = {m: arrays[m] for m in k.formula.input_names if m in arrays}
            g = grad_name(f.output.name)
            if g in k.formula.input_names:
                feed[g] = grad if grad.ndim else grad.item()
            t = f.input(n)
            gout = np.empty(shapes[n], dtype=dtype)
            result[n] = k(out=gout, dims={d: v for d, v in bound.items()}, **feed)
            if t.rank == 0:
                result[n] = result[n].reshape(())
        return result
