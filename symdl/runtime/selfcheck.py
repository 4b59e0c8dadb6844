"""Every generated module is checked before its first use: run at small random sizes against the
NumPy reference evaluator (symdl.reference), once per module and machine.

    >>> kern = dense.compile()                # check=True by default; SYMDL_CHECK=0 turns it off
    >>> kern(x=X, W=Wv, b=bv)                 # first call: the float32 module is checked, then run

What is checked is a generated module (its source hash names it): a formula's float32 and float64
modules are different sources, each checked when a call first loads it, in the flavour (serial or
parallel) that call runs, with arrays of the call's numba types (dtype, layout, read-only flag).
So the check runs code numba compiles for the user's call anyway, and never compiles a dtype,
flavour or specialisation the call would not need; what it adds is the NumPy reference at sizes
2-8 and a run of the kernel there (microseconds). A module with Branches (a gather where it pays,
loops elsewhere: loops/lower.py) is checked on the path the call takes: the dimensions its
conditions read are raised toward the call's (4, 8, 16, ...) until the small case takes that path,
so the check neither compiles the other path's nests nor leaves the call's path unchecked; each
path is checked when a call first takes it.

A pass is memoised in the process and written as a marker file beside the module in the kernel
cache (`<module>.<flavour>.checked`; `<module>.<flavour>.path-<taken>.checked` for a path through
Branches, `taken` one 1 or 0 per Branch), so it costs once per module (and path) per machine. A
mismatch raises CompileError naming the formula, the tensor, the index and both values; the call
returns nothing.
A formula whose small sizes cannot be chosen automatically, or that the reference cannot evaluate,
is skipped with a debug note (logger "symdl.check", and SYMDL_DEBUG=2), never a false alarm.

Coverage:
- Kernel: each module on its first call (cpu; recurrences too: the generated scan is a module);
- gradient kernels: each is a Kernel, checked when Kernel.vjp first runs it (gradients nobody asks
  for are never compiled; a recurrence's vjp is a program of such kernels);
- gathers: integer tensors drawn in the range their reads allow, as reference.inputs draws them;
- ProgramKernel: each formula's Kernel on its first run; FusedKernel: the fused module, each output
  against its own formula's reference; ChainKernel: every output against the formulas' references
  run in order;
- a cuda Kernel: the same check, run on the device (the simulator with NUMBA_ENABLE_CUDASIM=1).
The check runs only the module it checks and the reference: it never builds another kernel, so
checking gradient kernels (which are Kernels themselves) cannot recurse.
"""
from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass

import numpy as np

from ..version import __version__
from ..debug import show
from ..errors import CompileError
from ..loops.trips import branch_dims, branch_path
from ..backends.cpu.buffers import poisoned
from .cache import atomic_write, cache_dir

SEED = 0
# relative to max(1, max |reference|); a wrong kernel (a lost parenthesis, a misplaced read) is off
# by O(1), while float32 polynomials and summation order stay far below these
TOLERANCE = {"float64": 1e-8, "float32": 1e-3}
_PASSED: set = set()  # (module name, flavour) checked in this process
_SKIP = object()      # a case that cannot be built: memoised like a case, so the search runs once
log = logging.getLogger("symdl.check")


def enabled(option: bool = True) -> bool:
    """The check runs unless compile(check=False) or SYMDL_CHECK=0."""
    return bool(option) and os.environ.get("SYMDL_CHECK", "1").strip() not in ("0", "false", "off", "no")


@dataclass(frozen=True)
class Case:
    """Inputs at small sizes (floats exactly representable in float32, so both dtypes' modules
    share them and the reference), the dimensions, and per output its shape and reference value."""
    sizes: dict
    dims: dict
    inputs: dict
    out_shapes: dict
    wants: dict


# -- entry points (called by the runtime where a call first loads a module) ----------------------

def _launch(b, run, out, args, values, parallel: bool) -> None:
    """The checked run, its driver's temporaries NaN until written (backends/cpu/buffers.py): one
    read before it is written fails the comparison."""
    with poisoned():
        b.launch(run, out, args, values, parallel)


def check_kernel(kernel, module, dtype, parallel: bool, templates=None, dims: dict | None = None) -> None:
    """Check `module` (the generated module of `kernel` at `dtype`) unless done already; CompileError
    on a mismatch. `templates`: the call's arguments in kernel order (their numba types are reused);
    `dims`: the call's dimensions (the check takes the call's path through the module's Branches)."""
    b = kernel.backend
    path = branch_path(kernel.program, dims) if dims else ()
    flavour = _flavour(b.name, parallel) + _path_name(path)
    if not enabled() or not _pending(module, flavour):
        return
    case = _case(kernel, [kernel], path=(kernel.program, dims, path) if path else None)
    if case is None:
        return
    f = kernel.formula
    args = [_argument(case.inputs[t.name], t, dtype, _template(templates, i))
            for i, t in enumerate(f.inputs)]
    values = [case.dims[str(d)] for d in f.dims]
    shape = case.out_shapes[f.output.name]
    out = b.empty(shape, dtype)  # as a call runs it: inputs placed where `run` reads them
    _launch(b, module.run, out, b.place([t.name for t in f.inputs], args, {}), values, parallel)
    got = b.to_host(b.result(out, shape, False))
    _compare(f.name, f.output.name, got, case, dtype, b.name)
    _passed(module, flavour)


def check_fused(fused, module, dtype, parallel: bool, templates: dict | None = None) -> None:
    """Check a FusedKernel's module: every output against its own formula's reference."""
    b = fused.backend
    flavour = _flavour(b.name, parallel)
    if not enabled() or not _pending(module, flavour):
        return
    case = _case(fused, fused.kernels)
    if case is None:
        return
    args = [_argument(case.inputs[t.name], t, dtype, (templates or {}).get(t.name))
            for t in fused.program.inputs]
    values = [case.dims[str(d)] for d in fused.program.dims]
    names = [k.formula.output.name for k in fused.kernels]  # the fused driver's output order
    outs = [b.empty(case.out_shapes[n], dtype) for n in names]
    _launch(b, module.run, outs[0], [*outs[1:], *b.place([t.name for t in fused.program.inputs], args, {})],
             values, parallel)
    for k, got in zip(fused.kernels, outs, strict=True):
        got = b.to_host(b.result(got, case.out_shapes[k.formula.output.name], False))
        _compare(k.formula.name, k.formula.output.name, got, case, dtype, b.name)
    _passed(module, flavour)


def check_chain(chain, module, dtype, parallel: bool, templates: dict | None = None) -> None:
    """Check a ChainKernel's module: every output against the reference of the formulas run in
    order, each reading the reference values of the outputs before it."""
    b = chain.backend
    flavour = _flavour(b.name, parallel)
    if not enabled() or not _pending(module, flavour):
        return
    case = _case(chain, chain.kernels, _in_order, accept=lambda dims, inputs: _agrees(chain, dims, inputs))
    if case is None:
        return
    args = [_argument(case.inputs[t.name], t, dtype, (templates or {}).get(t.name)) for t in chain.program.inputs]
    values = [case.dims[str(d)] for d in chain.program.dims]
    outs = [b.empty(case.out_shapes[n] or (1,), dtype) for n in chain.outputs]
    _launch(b, module.run, outs[0], [*outs[1:], *b.place([t.name for t in chain.program.inputs], args, {})],
             values, parallel)
    for k, got in zip(chain.kernels, outs, strict=True):
        _compare(k.formula.name, k.formula.output.name, b.to_host(got), case, dtype, b.name)
    _passed(module, flavour)


def _agrees(chain, dims: dict, inputs: dict) -> bool:
    """Whether sizes drawn per member are one call of the chain: each member's declared shapes
    are drawn alone, and one formula's OH need not be another's H - 2."""
    try:
        bound, _ = chain.bind({t.name: np.shape(inputs[t.name]) for t in chain.program.inputs})
    except ValueError:
        return False
    return all(dims.get(d, v) == v for d, v in bound.items())


def _in_order(formulas, inputs, dims) -> dict:
    """The reference of formulas each reading the outputs of those before it."""
    from ..reference import evaluate
    env, out = dict(inputs), {}
    for f in formulas:
        env[f.output.name] = out[f.output.name] = evaluate(f, {t.name: env[t.name] for t in f.inputs},
                                                           {str(d): dims[str(d)] for d in f.dims})
    return out


def check_system(system, module, dtype, parallel: bool, templates: dict | None = None) -> None:
    """Check a SystemKernel's module: every state against the reference of the whole system."""
    from ..reference import evaluate_system
    b = system.backend
    flavour = _flavour(b.name, parallel)
    if not enabled() or not _pending(module, flavour):
        return
    def reference(formulas, inputs, dims):
        return evaluate_system(formulas, system.system, inputs, dims)

    case = _case(system, system.kernels, reference)
    if case is None:
        return
    args = [_argument(case.inputs[t.name], t, dtype, (templates or {}).get(t.name))
            for t in system.program.inputs]
    values = [case.dims[str(d)] for d in system.program.dims]
    outs = [b.empty(case.out_shapes[n], dtype) for n in system.outputs]
    _launch(b, module.run, outs[0], [*outs[1:], *b.place([t.name for t in system.program.inputs], args, {})],
             values, parallel)
    for k, got in zip(system.kernels, outs, strict=True):
        got = b.to_host(b.result(got, case.out_shapes[k.formula.output.name], False))
        _compare(k.formula.name, k.formula.output.name, got, case, dtype, b.name)
    _passed(module, flavour)


# -- memo: in the process, and a marker file per module in the cache ------------------------------

def _flavour(backend: str, parallel: bool) -> str:
    return "cuda" if backend == "cuda" else "parallel" if parallel else "serial"


def _path_name(path: tuple) -> str:
    return f".path-{''.join('1' if taken else '0' for taken in path)}" if path else ""


def _stamp() -> str:
    import numba  # a new numba compiles the module anew: check it again
    return f"passed: symdl {__version__}, numba {numba.__version__}\n"


def _marker(module, flavour: str):
    return cache_dir() / f"{module.__name__}.{flavour}.checked"


def _pending(module, flavour: str) -> bool:
    key = (module.__name__, flavour)
    if key in _PASSED:
        return False
    try:
        if _marker(module, flavour).read_text() == _stamp():
            _PASSED.add(key)
            return False
    except OSError:
        pass
    return True


def _passed(module, flavour: str) -> None:
    _PASSED.add((module.__name__, flavour))
    try:
        atomic_write(_marker(module, flavour), _stamp().encode())
    except OSError as err:  # a read-only cache: the check simply runs again next process
        _note(f"could not write the check's marker for {module.__name__}: {err}")


def _note(text: str) -> None:
    log.debug(text)
    show("check", text)


# -- the case: sizes, inputs, reference ----------------------------------------------------------

def _case(owner, kernels, reference=None, path=None, accept=None) -> Case | None:
    """The owner's case (per path through its Branches), built once (None when it cannot be:
    skipped with a note). `path`: (program, the call's dimensions, the call's path) or None;
    `accept(dims, inputs)`: whether drawn sizes suit the owner (else the next are tried)."""
    cases = owner.__dict__.setdefault("_check_cases", {})
    key = path[2] if path else ()
    case = cases.get(key)
    if case is None:
        case = cases[key] = _build_case(kernels, reference, path, accept) or _SKIP
    return None if case is _SKIP else case


def _each(formulas, inputs, dims) -> dict:
    """Every formula's reference value from the drawn inputs."""
    from ..reference import evaluate
    return {f.output.name: evaluate(f, {t.name: inputs[t.name] for t in f.inputs},
                                    {str(d): dims[str(d)] for d in f.dims}) for f in formulas}


def _build_case(kernels, reference=None, path=None, accept=None) -> Case | None:
    formulas = [k.formula for k in kernels]
    name = formulas[0].name if len(formulas) == 1 else "+".join(f.name for f in formulas)
    given = {str(d): int(v) for f in formulas for d, v in f.sizes.items()}
    free = sorted({str(d) for f in formulas for d in f.dims} - set(given))
    off_path = False
    for sizes in _candidates(given, free, path):
        drawn = _draw(kernels, sizes)
        if drawn is None:
            continue
        dims, inputs, out_shapes = drawn
        if accept is not None and not accept(dims, inputs):
            continue
        if path is not None and branch_path(path[0], dims) != path[2]:
            off_path = True
            continue
        try:
            with np.errstate(all="ignore"):
                wants = (reference or _each)(formulas, inputs, dims)
        except Exception as err:  # noqa: BLE001 (the reference cannot evaluate it: no check, no alarm)
            _note(f"{name}: not checked, the reference evaluator fails: {type(err).__name__}: {err}")
            return None
        return Case(sizes, dims, inputs, out_shapes, wants)
    _note(f"{name}: not checked, no small sizes take the call's path through its branches" if off_path else
          f"{name}: not checked, no small sizes satisfy its shape rules; declare sizes= to check it")
    return None


def _candidates(given: dict, free: list, path):
    """The sizes to try: each of _size_options (declared sizes kept); with a path to take, after each
    the dimensions the Branches decide on (declared or not) raised toward the call's (4, 8, 16, ...,
    at most the call's value)."""
    for values in _size_options(len(free)):
        sizes = dict(given, **dict(zip(free, values, strict=True)))
        raised = [n for n in sorted(branch_dims(path[0])) if n in sizes and n in path[1]] if path else []
        yield sizes
        call = {n: int(path[1][n]) for n in raised} if raised else {}
        top, v = max(call.values(), default=0), 4
        while raised:
            yield dict(sizes, **{n: max(sizes[n], min(call[n], v)) for n in raised})
            if v >= top:
                break
            v *= 2


def _size_options(n: int):
    """Small sizes, distinct ones first (a swapped pair of axes then shows)."""
    yield list(range(2, 2 + n))
    yield list(range(2 + n, 2, -1))
    for v in (3, 4, 5, 7):
        yield [v] * n
    yield from (list(c) for c in itertools.islice(itertools.product((2, 3, 5, 8), repeat=n), 40))


def _draw(kernels, sizes: dict):
    """(dims, inputs, output shapes) at these sizes, or None where they do not fit every formula."""
    from ..reference.inputs import dim_value, random_inputs

    rng = np.random.default_rng(SEED)
    dims, inputs, out_shapes = {}, {}, {}
    try:
        for k in kernels:
            f = k.formula
            shapes = {t.name: tuple(dim_value(d, sizes) for d in t.shape) for t in f.inputs}
            if any(n < 1 for s in shapes.values() for n in s):
                return None
            bound = k.binder.bind(shapes, sizes, None)
            for t, v in random_inputs(f, sizes, rng, np.float64).items():
                inputs.setdefault(t, _representable(v))
            if k._gathers:
                k.binder.check_gathers({t.name: inputs[t.name] for t in f.inputs}, bound)
            dims.update(bound)
            out_shapes[f.output.name] = tuple(fn(**bound) for fn, _ in k.binder.out_shape)
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        return None
    return dims, inputs, out_shapes


def _representable(v):
    """Floats rounded to float32 (then held as float64): the same values feed either dtype's module."""
    if isinstance(v, np.ndarray):
        return v.astype(np.float32).astype(np.float64) if v.dtype.kind == "f" else v
    return float(np.float32(v)) if isinstance(v, float) else v


# -- arguments of the call's numba types ---------------------------------------------------------

def _template(templates, i: int):
    return None if templates is None else templates[i]


def _argument(value, tensor, dtype, template):
    """The case's value with the numba type of the call's argument: numba compiles one
    specialisation per (dtype, layout, read-only), and the check must reuse the call's."""
    if tensor.rank == 0:
        return value  # the generated driver casts scalars to its float type itself
    like = template if isinstance(template, np.ndarray) else None
    a = value.astype(like.dtype if tensor.integer and like is not None
                     else np.int64 if tensor.integer else dtype)
    if like is not None and not like.flags.c_contiguous:
        if like.flags.f_contiguous:
            a = np.asfortranarray(a)
        else:  # an 'A'-layout view, as a strided slice gives
            wide = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=a.dtype)
            wide[..., ::2] = a
            a = wide[..., ::2]
    if like is not None and not like.flags.writeable:
        a.flags.writeable = False
    return a


# -- the comparison ------------------------------------------------------------------------------

def _compare(formula: str, tensor: str, got, case: Case, dtype, backend: str) -> None:
    want = case.wants[tensor]
    got = np.asarray(got, dtype=np.float64).reshape(np.shape(want))
    dtype = np.dtype(dtype).name
    finite = np.isfinite(want)  # where the reference overflows or leaves the domain: no verdict
    scale = max(1.0, float(np.max(np.abs(want), where=finite, initial=0.0)))
    with np.errstate(invalid="ignore"):
        diff = np.abs(got - want)
    bad = finite & ~(diff <= TOLERANCE[dtype] * scale)  # a NaN from the kernel is bad too
    if not bad.any():
        return
    at = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(diff, nan=np.inf), -1.0))), want.shape)
    index = tuple(int(i) for i in at)
    g, w = float(got[at]), float(want[at])
    where = f"{tensor}[{', '.join(map(str, index))}]" if index else tensor
    raise CompileError(formula, (
        f"the generated {backend} kernel ({dtype}) disagrees with the NumPy reference evaluator: "
        f"{where} = {g!r} from the kernel, {w!r} from the reference (difference {abs(g - w):.3g}, "
        f"allowed {TOLERANCE[dtype] * scale:.3g}; inputs drawn at sizes {case.sizes}, seed {SEED}). "
        f"The kernel was not used. This is a bug in symdl's code generation: please report it with "
        f"the formula; SYMDL_CHECK=0 or compile(check=False) skips this check"),
        tensor=tensor, index=index, got=g, want=w)
