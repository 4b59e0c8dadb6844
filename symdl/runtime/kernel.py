"""Kernel: a compiled formula. Checks every argument, binds dimensions, allocates, launches.

    >>> kern = dense.compile()
    >>> Y = kern(x=X, W=Wv, b=bv)
    >>> grads = kern.vjp(G, x=X, W=Wv, b=bv)     # {"x": ..., "W": ..., "b": ...}
"""
from __future__ import annotations

import numpy as np
import sympy as sp

from .. import __version__
from ..autodiff import grad_name
from ..backends.cpu import generate
from ..declare.formula import Formula
from ..debug import show
from ..loops.ir import If, Loop, Nest, format_ir
from ..loops.ir import check as check_ir
from ..loops.lower import lower
from .binding import Binder, float_dtype
from .cache import load_module
from .selfcheck import check_kernel

PARALLEL_WORK = 1 << 16  # below this many loop iterations the threads' start-up costs more than it saves
BACKENDS = ("cpu", "cuda")
F32, F64 = np.dtype(np.float32), np.dtype(np.float64)


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


class Kernel:
    """A formula compiled for one backend; one generated module per float dtype, built on first use.

    `check_finite=True` makes every call refuse NaN or infinite inputs (off by default: it costs a
    pass over the data). `check=True` (the default; SYMDL_CHECK=0 also turns it off) runs each
    generated module against the NumPy reference before its first use (runtime.selfcheck) and
    raises symdl.CompileError on a mismatch.
    """

    def __new__(cls, formula=None, backend: str = "cpu", *args, **kwargs):
        if backend == "cuda" and cls is Kernel:  # Kernel(f, "cuda") anywhere (programs, gradients)
            from .cuda_kernel import CudaKernel  # loads numba.cuda only when asked for
            return super().__new__(CudaKernel)
        return super().__new__(cls)

    def __init__(self, formula: Formula, backend: str = "cpu", check_finite: bool = False,
                 check: bool = True):
        check_backend(backend)
        self.formula, self.backend, self.check_finite, self.check = formula, backend, check_finite, check
        show("formula", str(formula))
        self.program = lower(formula, row_reductions=backend == "cpu")  # GEMM detection, loops, CSE
        check_ir(self.program)                  # cheap: always on
        show("loop IR", format_ir(self.program))
        self.binder = Binder(formula)
        self._modules: dict = {}
        self._plans: dict = {}
        self._grads: dict = {}
        self._order = [t.name for t in formula.inputs]
        # per input (name, rank, holds indices): all the common call's argument check needs
        self._specs = tuple((t.name, t.rank, t.integer) for t in formula.inputs)
        self._gathers = bool(self.binder.reads) and any(t.integer for t in formula.inputs)
        self._vjp_plans: dict = {}
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

    def _checked_module(self, dtype, parallel: bool, templates=None):
        """The module for `dtype`, checked against the reference before its first use in this
        flavour (runtime.selfcheck); `templates` are the call's arguments, whose numba types the
        check reuses so that it compiles nothing the call would not."""
        mod = self._module(dtype)
        if self.check:
            check_kernel(self, mod, dtype, parallel, templates)
        return mod

    # -- calls ------------------------------------------------------------------------------------
    def __call__(self, *positional, out: np.ndarray | None = None, dims: dict | None = None,
                 check_finite: bool | None = None, **arrays) -> np.ndarray:
        f = self.formula
        if positional:
            self._refuse_positional(positional, "kern(")
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
            if out is not None:  # a bad out= is refused before anything compiles or runs
                self._output(out, out_shape, dtype, args)
            values = [bound[str(d)] for d in f.dims]
            parallel = self.parallel_at(bound)
            run = self._checked_module(dtype, parallel and _threads() > 1, args).run
            plan = self._plans[key] = (bound, out_shape, values, parallel, run)
        bound, out_shape, values, parallel, run = plan
        self.last_dims = bound
        if self._gathers:
            self.binder.check_gathers(dict(zip(self._order, args, strict=True)), bound)
        out = np.empty(out_shape, dtype=dtype) if out is None else self._output(out, out_shape, dtype, args)
        run(out if out_shape else out.reshape(1), *args, *values, parallel and _threads() > 1)
        return out

    def parallel_at(self, dims: dict) -> bool:
        """Whether the loop nests are worth running in parallel at these dimensions (numba's thread
        count is checked per call on top): counted loop iterations against PARALLEL_WORK."""
        try:
            work = _nest_work(self.program, dims, PARALLEL_WORK)
        except (KeyError, TypeError):  # a bound the counter cannot evaluate: the lowering's estimate
            work = _estimated_work(self.program, dims)
        return work >= PARALLEL_WORK

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
        """The common call (Python numbers for scalars, arrays of the declared ranks: integer ones
        for index tensors, the rest all float32 or all float64) in a few attribute reads; None sends
        anything else through the full checks, which also word the errors."""
        args, dtype = [], None
        for name, rank, integer in self._specs:
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

    def vjp(self, grad: np.ndarray, *positional, wrt=None, dims: dict | None = None, **arrays) -> dict:
        """{input name: gradient} for the upstream gradient `grad` (the output's shape and dtype; a
        scalar output's may be a number or a 0-d array, as the forward call takes scalars)."""
        f = self.formula
        if positional:
            self._refuse_positional(positional, "kern.vjp(grad, ", " after grad")
        if f.recurrence is not None:  # the adjoint recurrence, then the gradients: a program
            return self._recurrence_program().vjp(grad, wrt=wrt, **arrays)
        args, dtype = self._arguments(arrays, None)
        shapes = tuple(a.shape if isinstance(a, np.ndarray) else () for a in args)
        key = (dtype, shapes, None if dims is None else tuple(sorted(dims.items())),
               None if wrt is None else tuple(wrt))
        plan = self._vjp_plans.get(key)
        if plan is None:  # binding errors come first, as the inputs are checked before the gradient
            plan = self._vjp_plans[key] = _VjpPlan(self, dtype, shapes, dims, wrt)
        if self._gathers:
            self.binder.check_gathers(dict(zip(self._order, args, strict=True)), plan.bound)
        grad = upstream(grad, plan.out_shape, dtype)
        if not isinstance(grad, np.ndarray) or grad.shape != plan.out_shape or grad.dtype != dtype:
            raise ValueError(f"formula {f.name!r}: the upstream gradient must be a {dtype} array of shape "
                             f"{plan.out_shape} (the output's), got "
                             f"{getattr(grad, 'dtype', type(grad).__name__)} {getattr(grad, 'shape', '')}")
        feed_from = [*args, grad if grad.ndim else grad.item()]  # the forward inputs, then grad
        steps = plan.steps if plan.steps is not None else plan.build(feed_from)
        if self.check_finite and plan.finite_check and not np.all(np.isfinite(grad)):
            raise ValueError(f"formula {plan.finite_check!r}: tensor {plan.grad_name!r} holds NaN or "
                             f"infinite values")
        result = {}
        for name, shape, kernel, positions, kdims, values, parallel, run in steps:
            feed = [feed_from[p] for p in positions]
            if kernel._gathers:
                kernel.binder.check_gathers(dict(zip(kernel._order, feed, strict=True)), kdims)
            out = np.empty(shape, dtype=dtype)
            run(out if shape else out.reshape(1), *feed, *values, parallel and _threads() > 1)
            kernel.last_dims = kdims
            result[name] = out
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
    bound dimensions, and per gradient its kernel's generated `run` with the argument positions,
    dimension values and serial/parallel choice the gradient kernel's own call would use."""

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
        """`feed_from`: the call's forward inputs, then grad (their numba types are what each
        gradient kernel's check reuses; None on the cuda backend, which copies to C-contiguous)."""
        k0, f = self.kernel, self.kernel.formula
        names = [t.name for t in f.inputs if not t.integer] if self.wrt is None else list(self.wrt)
        where = {n: p for p, n in enumerate(k0._order)}
        where[self.grad_name] = len(k0._order)
        shapes = dict(self.shapes, **{self.grad_name: self.out_shape})
        steps = []
        for n in names:
            k = k0.grad_kernel(n)
            shape = self.shapes[n] if f.input(n).rank else ()
            missing = [m for m in k._order if m not in where]
            if missing:
                raise ValueError(f"formula {k.formula.name!r}: missing {missing}; it takes {k._order}")
            kdims = k.binder.bind({m: shapes[m] for m in k._order}, self.bound, shape)
            values = [kdims[str(d)] for d in k.formula.dims]
            if self.finite_check is None and self.grad_name in k._order:
                self.finite_check = k.formula.name
            positions = [where[m] for m in k._order]
            parallel = k.parallel_at(kdims)
            module = k._checked_module(self.dtype, parallel and _threads() > 1,
                                       None if feed_from is None else [feed_from[p] for p in positions])
            steps.append((n, shape, k, positions, kdims, values, parallel, module.run))
        self.steps = steps
        return steps


def upstream(grad, shape: tuple, dtype):
    """The upstream gradient as given, but for a scalar output a number (not a bool) or a 0-d
    array of numbers is taken in the call's dtype: `kern.vjp(1.0, ...)` seeds a loss."""
    if shape == ():
        if isinstance(grad, (int, float, np.integer, np.floating)) and not isinstance(grad, (bool, np.bool_)):
            return np.asarray(grad, dtype=dtype)
        if isinstance(grad, np.ndarray) and grad.shape == () and grad.dtype.kind in "iuf":
            return grad.astype(dtype)
    return np.asarray(grad) if np.isscalar(grad) else grad


def _threads() -> int:
    """numba's thread count, without starting its thread pool just to ask (a process that forks
    after the GNU OpenMP pool has started may not survive the fork)."""
    import numba
    from numba.np.ufunc import parallel

    if getattr(parallel, "_is_initialized", True):
        return numba.get_num_threads()
    return numba.config.NUMBA_NUM_THREADS


def _nest_work(prog, dims: dict, limit: int) -> int:
    """Iterations of the loop nests that have a parallel loop (what `parallel` changes: matrix
    products go to BLAS either way, and a nest without one, such as a full reduction, runs the same
    loops in both flavours), counted like loops.trip_count, but stopping once past `limit`, and
    multiplying where an inner count does not depend on the outer index (a 10^4 x 10^3 guarded
    reduction would otherwise be walked index by index)."""
    env = {str(d): int(v) for d, v in dims.items()}
    total = 0
    for step in prog.steps:
        if isinstance(step, Nest) and _has_parallel_loop(step.body) and total < limit:
            total += _count(step.body, env, limit - total)
    return total


def _estimated_work(prog, dims: dict) -> int:
    """The lowering's work estimate of the first loop nest, at these dimensions."""
    est = sp.sympify(next((s.parallel_work for s in prog.steps if isinstance(s, Nest)), 0))
    return int(est.xreplace({d: sp.Integer(int(dims[d.name])) for d in est.free_symbols}))


def _has_parallel_loop(body) -> bool:
    """A loop the backend turns into prange: the IR marks it, at the top of the nest (or in an If)."""
    return any(isinstance(s, Loop) and s.parallel
               or isinstance(s, If) and (_has_parallel_loop(s.then) or _has_parallel_loop(s.orelse))
               for s in body)


def _count(body, env: dict, limit: int) -> int:
    total = 0
    for s in body:
        if isinstance(s, Loop):
            lo, stop = _value(s.lo, env), _value(s.stop, env)
            if stop > lo:
                if not any(isinstance(t, (Loop, If)) for t in s.body):
                    total += stop - lo
                elif not _bounds_use(s.body, s.var):
                    total += (stop - lo) * (1 + _count(s.body, {**env, s.var.name: lo}, limit))
                else:
                    for v in range(lo, stop):
                        total += 1 + _count(s.body, {**env, s.var.name: v}, limit - total)
                        if total >= limit:
                            break
        elif isinstance(s, If):
            total += _count(s.then, env, limit) + _count(s.orelse, env, limit)
        if total >= limit:
            break
    return total


def _bounds_use(body, var) -> bool:
    for s in body:
        if isinstance(s, Loop):
            if var in sp.sympify(s.lo).free_symbols | sp.sympify(s.stop).free_symbols:
                return True
            if _bounds_use(s.body, var):
                return True
        elif isinstance(s, If) and (_bounds_use(s.then, var) or _bounds_use(s.orelse, var)):
            return True
    return False


def _value(e, env: dict) -> int:
    e = sp.sympify(e)
    return int(e.xreplace({s: sp.Integer(env[s.name]) for s in e.free_symbols}))
