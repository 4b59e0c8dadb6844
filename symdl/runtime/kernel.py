"""Kernel: a compiled formula. Checks every argument, binds dimensions, plans, launches.

    >>> kern = dense.compile()                  # backend="cuda": the same calls on the GPU
    >>> Y = kern(x=X, W=Wv, b=bv)
    >>> grads = kern.vjp(G, x=X, W=Wv, b=bv)     # {"x": ..., "W": ..., "b": ...}

One call path for every backend: the argument checks, dimension binding and CallPlan are the
runtime's; where arrays live, how `run` is launched and when it goes parallel are the Backend's
(backends/base.py). On cuda, NumPy inputs give NumPy results and device arrays give device arrays.
"""
from __future__ import annotations

import numpy as np

from ..version import __version__
from ..autodiff import grad_name
from ..backends import get as get_backend
from ..backends.base import parallel_for
from ..declare.formula import Formula
from ..debug import show
from ..loops.ir import check as check_ir
from ..loops.ir import format_ir
from ..binding import Binder, float_dtype
from . import trace
from .cache import load_module
from .kept import lowered, printed
from .plan import CallPlan, signature, stale, waiting
from .selfcheck import check_kernel

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


class Kernel:
    """A formula compiled for one backend; one generated module per float dtype, built on first use.

    `check_finite=True` makes every call refuse NaN or infinite inputs (off by default: it costs a
    pass over the data). `check=True` (the default; SYMDL_CHECK=0 also turns it off) runs each
    generated module against the NumPy reference before its first use (runtime.selfcheck) and
    raises symdl.CompileError on a mismatch.
    """

    def __init__(self, formula: Formula, backend="cpu", check_finite: bool = False, check: bool = True):
        self.backend = get_backend(backend)  # ValueError naming the choices; cuda: ImportError naming the extra
        self.formula, self.check_finite, self.check = formula, check_finite, check
        show("formula", lambda: str(formula))
        self.program = lowered(formula, self.backend.row_reductions)  # GEMM detection, loops, CSE (runtime/kept.py)
        check_ir(self.program)                  # cheap: always on
        show("loop IR", lambda: format_ir(self.program))
        self.binder = Binder(formula)
        self._modules: dict = {}
        self._plans: dict = {}
        self._grads: dict = {}
        self._order = [t.name for t in formula.inputs]
        # per input (name, rank, holds indices): all the common call's argument check needs
        self._specs = tuple((t.name, t.rank, t.integer) for t in formula.inputs)
        self._integer = {t.name for t in formula.inputs if t.integer}
        self._gathers = bool(self.binder.reads) and any(t.integer for t in formula.inputs)
        self._vjp_plans: dict = {}
        self.last_dims: dict = {}  # the dimensions the latest call bound (a Program passes them on)

    def __repr__(self) -> str:
        return f"Kernel({self.formula.name}, backend={self.backend.name!r})"

    # -- generated code ---------------------------------------------------------------------------
    def source(self, dtype="float32") -> str:
        """The generated source for one dtype."""
        source = printed(self.backend, self.program, np.dtype(dtype).name, __version__,
                         f"{self.formula.key()}|{self.backend.row_reductions}")
        show(f"{self.backend.name} source {np.dtype(dtype).name}", source)
        return source

    def _module(self, dtype):
        mod = self._modules.get(dtype)
        if mod is None:
            mod = self._modules[dtype] = load_module(self.source(dtype))
        return mod

    def plan(self, dtype, shapes: tuple, dims=None, out_shape=None, templates=None, out=None) -> CallPlan:
        """The CallPlan for one signature: dimensions bound (ValueError on a mismatch), a bad
        host `out=` refused, then the module loaded and checked against the reference before its
        first use in this flavour (runtime.selfcheck). `templates`: the call's arguments, whose
        numba types the check reuses so that it compiles nothing the call would not."""
        f, b = self.formula, self.backend
        bound = self.binder.bind(dict(zip(self._order, shapes, strict=True)), dims, out_shape)
        shape = tuple(fn(**bound) for fn, _ in self.binder.out_shape)
        if isinstance(out, np.ndarray):  # refused before anything compiles or runs
            self._output(out, shape, dtype, templates or ())
        module = self._module(dtype)
        parallel = parallel_for(b, self.program, bound, module)
        if self.check:
            check_kernel(self, module, dtype, b.flavour(parallel), templates if b.checks_layout else None, bound)
        return CallPlan(bound, ((f.output.name, shape),), tuple(bound[str(d)] for d in f.dims), parallel,
                        module.run, waiting(module, parallel))

    # -- calls ------------------------------------------------------------------------------------
    def __call__(self, *positional, out=None, dims: dict | None = None, check_finite: bool | None = None,
                 **arrays):
        """Run the kernel. With native (device) arrays among the inputs or as `out=`, the result
        is a native array; otherwise a NumPy array."""
        f, b = self.formula, self.backend
        if positional:
            self._refuse_positional(positional, "kern(")
        if out is not None and not isinstance(out, np.ndarray) and not b.is_native(out):
            raise ValueError(f"formula {f.name!r}: out= must be {b.arrays}, got {type(out).__name__}")
        stand, native = b.split(arrays, self._needs_values(check_finite))
        args, dtype = self._arguments(stand, check_finite)
        shapes = tuple(a.shape if isinstance(a, np.ndarray) else () for a in args)
        given = None if out is None else tuple(out.shape)
        key = signature(dtype, shapes, dims, given)
        plan = self._plans.get(key)
        if plan is None or stale(plan):
            plan = self._plans[key] = self.plan(dtype, shapes, dims, given, args, out)
        self.last_dims = plan.bound
        if self._gathers:
            self.binder.check_gathers(dict(zip(self._order, args, strict=True)), plan.bound)
        shape = plan.out_shape
        if out is None:
            buf = b.empty(shape, dtype)
        elif isinstance(out, np.ndarray):
            buf = self._output(out, shape, dtype, args)
            buf = buf if b.host_memory else b.empty(shape, dtype)
        else:
            buf = b.native(out)
            if tuple(buf.shape) != shape or np.dtype(buf.dtype) != dtype:
                raise ValueError(f"formula {f.name!r}: out= must be a {dtype} array of shape {shape}, got "
                                 f"{buf.dtype} {tuple(buf.shape)}")
        placed = b.place(self._order, args, native)
        if trace.RECORDING is not None and b.host_memory:
            trace.note(plan.run, [buf if buf.ndim else buf.reshape(1)], [*placed, *plan.values],
                       [*self._order, *map(str, f.dims)], plan.parallel, self._gathers, f.name)
        b.launch(plan.run, buf, placed, plan.values, plan.parallel)
        keep = bool(native) or (out is not None and not isinstance(out, np.ndarray))
        result = b.result(buf, shape, keep)
        if isinstance(out, np.ndarray) and result is not out:
            out[...] = result
            return out
        return result

    def _needs_values(self, check_finite):
        """Which native inputs the checks read values of: all under check_finite, index tensors
        where gathers are checked (scalars always come to the host)."""
        if self.check_finite if check_finite is None else check_finite:
            return lambda name: True
        return lambda name: self._gathers and name in self._integer

    def _refuse_positional(self, positional: tuple, call: str, after: str = ""):
        """Tensors go by name: a TypeError that spells out the call with this formula's inputs."""
        names = ", ".join(f"{n}=..." for n in self._order)
        raise TypeError(f"formula {self.formula.name!r}: pass tensors by name: {call}{names}) (got "
                        f"{len(positional)} positional argument{'s' if len(positional) > 1 else ''}{after})")

    def _arguments(self, arrays: dict, check_finite):
        """The inputs in the kernel's order and the call's float dtype; ValueError naming the tensor
        on anything wrong."""
        if len(arrays) == len(self._specs) and not (self.check_finite if check_finite is None
                                                    else check_finite):
            fast = self._common_arguments(arrays)
            if fast is not None:
                return fast
        return self._checked_arguments(arrays, check_finite)

    def _common_arguments(self, arrays: dict):
        return common_arguments(self._specs, arrays)

    def _checked_arguments(self, arrays: dict, check_finite):
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
        if not out.flags.writeable:
            raise ValueError(f"{name} is read-only; pass a writeable array (or leave out= out)")
        if not out.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (strides {out.strides}); pass "
                             f"np.ascontiguousarray(...) or leave out= out")
        if any(isinstance(a, np.ndarray) and np.may_share_memory(a, out) for a in args):
            raise ValueError(f"{name} overlaps an input; kernels do not work in place")
        return out

    # -- gradients --------------------------------------------------------------------------------
    def grad_kernel(self, name: str) -> "Kernel":
        k = self._grads.get(name)
        if k is None:
            k = self._grads[name] = Kernel(self.formula.vjp([name])[name], self.backend, self.check_finite,
                                           self.check)
        return k

    def vjp(self, grad, *positional, wrt=None, dims: dict | None = None, forward=None, **arrays) -> dict:
        """{input name: gradient} for the upstream gradient `grad` (the output's shape and dtype; a
        scalar output's may be a number or a 0-d array, as the forward call takes scalars). Native
        (device) arrays in give native arrays out, as for a call. `forward`: this kernel's output
        for these inputs, when the caller kept it: a recurrence's gradient then reads its states
        instead of running the recurrence again."""
        f, b = self.formula, self.backend
        if positional:
            self._refuse_positional(positional, "kern.vjp(grad, ", " after grad")
        if f.recurrence is not None:  # the adjoint recurrence, then the gradients: a program
            given = None if forward is None else {f.output.name: forward}
            return self._recurrence_program().vjp(grad, wrt=wrt, dims=dims, given=given, **arrays)
        keep = any(b.is_native(a) for a in arrays.values()) or b.is_native(grad)
        stand, native = b.split(arrays, self._needs_values(None))
        args, dtype = self._arguments(stand, None)
        shapes = tuple(a.shape if isinstance(a, np.ndarray) else () for a in args)
        key = signature(dtype, shapes, dims, None if wrt is None else tuple(wrt))
        plan = self._vjp_plans.get(key)
        if plan is None:  # binding errors come first, as the inputs are checked before the gradient
            plan = self._vjp_plans[key] = _VjpPlan(self, dtype, shapes, dims, wrt)
        if self._gathers:
            self.binder.check_gathers(dict(zip(self._order, args, strict=True)), plan.bound)
        if b.is_native(grad):
            grad = b.native(grad)
            g_shape, g_dtype = tuple(grad.shape), np.dtype(grad.dtype)
        else:
            grad = upstream(grad, plan.out_shape, dtype)
            g_shape, g_dtype = getattr(grad, "shape", None), getattr(grad, "dtype", None)
        if not (isinstance(grad, np.ndarray) or b.is_native(grad)) or g_shape != plan.out_shape \
                or g_dtype != dtype:
            raise ValueError(f"formula {f.name!r}: the upstream gradient must be a {dtype} array of shape "
                             f"{plan.out_shape} (the output's), got {g_dtype or type(grad).__name__} "
                             f"{g_shape if g_shape is not None else ''}")
        # a scalar output's gradient is a scalar argument; an array goes where `run` reads it
        grad = b.to_host(grad).reshape(()).item() if not plan.out_shape else b.upstream(grad)
        checks = [*args, grad]  # host stand-ins: the gather checks read these
        steps = plan.steps if plan.steps is not None else plan.build(checks if b.checks_layout else None)
        if self.check_finite and plan.finite_check and not np.all(np.isfinite(b.to_host(grad))):
            raise ValueError(f"formula {plan.finite_check!r}: tensor {plan.grad_name!r} holds NaN or "
                             f"infinite values")
        feed_from = [*b.place(self._order, args, native), grad]
        result = {}
        for name, kernel, positions, kp in steps:
            if kernel._gathers:
                kernel.binder.check_gathers(dict(zip(kernel._order, [checks[p] for p in positions],
                                                     strict=True)), kp.bound)
            out = b.empty(kp.out_shape, dtype)
            feed = [feed_from[p] for p in positions]
            if trace.RECORDING is not None and b.host_memory:
                trace.note(kp.run, [out if out.ndim else out.reshape(1)], [*feed, *kp.values],
                           [*kernel._order, *map(str, kernel.formula.dims)], kp.parallel, kernel._gathers,
                           kernel.formula.name)
            b.launch(kp.run, out, feed, kp.values, kp.parallel)
            kernel.last_dims = kp.bound
            result[name] = b.result(out, kp.out_shape, keep)
        return result

    def _recurrence_program(self):
        if "_scan" not in self.__dict__:
            from ..declare.program import Program
            from .program import ProgramKernel
            self._scan = ProgramKernel(Program([self.formula], name=self.formula.name), self.backend,
                                       self.check_finite, self.check)
        return self._scan


class _VjpPlan:
    """What one Kernel.vjp signature (dtype, input shapes, dims=, wrt=) needs, worked out once: the
    bound dimensions, and per gradient its kernel, the argument positions and its CallPlan (the
    one the gradient kernel's own call would make)."""

    def __init__(self, kernel: Kernel, dtype, shapes: tuple, dims, wrt):
        f = kernel.formula
        self.kernel, self.dtype, self.wrt = kernel, dtype, wrt
        self.shapes = dict(zip(kernel._order, shapes, strict=True))
        self.bound = kernel.binder.bind(self.shapes, dims, None)
        self.out_shape = tuple(fn(**self.bound) for fn, _ in kernel.binder.out_shape)
        self.grad_name = grad_name(f.output.name)
        self.steps = None
        self.finite_check = None  # the first gradient kernel reading grad: it names the check

    def build(self, feed_from=None) -> list:
        """[(input name, gradient kernel, argument positions, CallPlan)]. `feed_from`: the call's
        forward inputs, then grad (their numba types are what each gradient kernel's check reuses)."""
        k0, f = self.kernel, self.kernel.formula
        names = [t.name for t in f.inputs if not t.integer] if self.wrt is None else list(self.wrt)
        where = {n: p for p, n in enumerate(k0._order)}
        where[self.grad_name] = len(k0._order)
        shapes = dict(self.shapes, **{self.grad_name: self.out_shape})
        steps = []
        for n in names:
            k = k0.grad_kernel(n)
            missing = [m for m in k._order if m not in where]
            if missing:
                raise ValueError(f"formula {k.formula.name!r}: missing {missing}; it takes {k._order}")
            if self.finite_check is None and self.grad_name in k._order:
                self.finite_check = k.formula.name
            positions = [where[m] for m in k._order]
            shape = self.shapes[n] if f.input(n).rank else ()
            plan = k.plan(self.dtype, tuple(shapes[m] for m in k._order), self.bound, shape,
                          None if feed_from is None else [feed_from[p] for p in positions])
            steps.append((n, k, positions, plan))
        self.steps = steps
        return steps


def common_arguments(specs, arrays: dict):
    """The common call (Python numbers for scalars, arrays of the declared ranks: integer ones for
    index tensors, the rest all float32 or all float64) in a few attribute reads: (arguments in
    `specs` order, dtype); None sends anything else through the full checks, which word the errors.
    `specs`: (name, rank, holds indices) per input."""
    args, dtype = [], None
    for name, rank, integer in specs:
        a = arrays.get(name)
        if rank == 0:
            if type(a) is not float and type(a) is not int:
                return None
        elif type(a) is not np.ndarray or a.ndim != rank:
            return None
        elif integer:
            if a.dtype.kind not in "iu":
                return None
        elif dtype is None:
            dtype = a.dtype
            if dtype is not F32 and dtype is not F64:
                return None
        elif a.dtype is not dtype:
            return None
        args.append(a)
    return args, F64 if dtype is None else dtype


def upstream(grad, shape: tuple, dtype):
    """The upstream gradient as given, but for a scalar output a number (not a bool) or a 0-d
    array of numbers is taken in the call's dtype: `kern.vjp(1.0, ...)` seeds a loss."""
    if shape == ():
        if isinstance(grad, (int, float, np.integer, np.floating)) and not isinstance(grad, (bool, np.bool_)):
            return np.asarray(grad, dtype=dtype)
        if isinstance(grad, np.ndarray) and grad.shape == () and grad.dtype.kind in "iuf":
            return grad.astype(dtype)
    return np.asarray(grad) if np.isscalar(grad) else grad
