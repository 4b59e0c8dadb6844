"""The loop IR: backend-neutral loops, guards, scalar accumulators, stores and library calls.

Plain frozen dataclasses holding SymPy expressions; `format_ir` prints them, `check` asserts the
invariants every backend relies on.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp


@dataclass(frozen=True)
class Loop:
    """for var in [lo, stop): body. `parallel` marks the loop a backend may run in parallel."""

    var: sp.Symbol
    lo: sp.Expr
    stop: sp.Expr
    body: tuple
    parallel: bool = False


@dataclass(frozen=True)
class Let:
    """A scalar temporary (a float unless `integer`)."""

    name: sp.Symbol
    value: sp.Expr


@dataclass(frozen=True)
class Accumulate:
    """name += value, into a scalar temporary living in registers."""

    name: sp.Symbol
    value: sp.Expr


@dataclass(frozen=True)
class Store:
    tensor: str
    index: tuple
    value: sp.Expr


@dataclass(frozen=True)
class ScatterAdd:
    """tensor[index] += value into a zeroed output: the gradient of a gather (index read from an
    integer tensor or an arg-max) or a sum run row by row. Iterations may hit the same element, so
    the IR puts it in a parallel loop only over a variable that is a whole index of it (a batch
    index: each iteration adds into its own slice; a backend may also use atomics)."""

    tensor: str
    index: tuple
    value: sp.Expr


@dataclass(frozen=True)
class If:
    cond: sp.Basic
    then: tuple
    orelse: tuple = ()


@dataclass(frozen=True)
class MatMul:
    """Library call: out = op(a) @ op(b), op transposing where asked (served by BLAS)."""

    out: str
    a: str
    b: str
    trans_a: bool
    trans_b: bool


@dataclass(frozen=True)
class Contract:
    """Library call: out[rows + cols] = Σ over `sums` of a[a_axes] · b[b_axes] (axes named by index
    symbols), one GEMM on a's axes permuted to (rows, sums) and b's to (sums, cols), each group
    flattened (passes/contraction.py); with `batch` indices, out[batch + rows + cols], one GEMM per
    batch element. `sizes` is (m, n, k), the batch counted in m, for trip counts."""

    out: str
    a: str
    a_axes: tuple
    b: str
    b_axes: tuple
    rows: tuple
    cols: tuple
    sums: tuple
    sizes: tuple
    batch: tuple = ()
    out_axes: tuple = ()  # the output's own axis order where it differs from batch + rows + cols


@dataclass(frozen=True)
class Branch:
    """Two ways to the same result, chosen per call by a condition on dimensions (the library path
    where a gather pays for itself, the loops otherwise); each way allocates its own temporaries."""

    cond: sp.Basic
    then_temps: tuple
    then_steps: tuple
    else_temps: tuple
    else_steps: tuple


@dataclass(frozen=True)
class Nest:
    """One compiled function: statements over the tensors it names."""

    name: str
    body: tuple
    tensors: tuple  # names of the arrays it reads or writes
    parallel_work: sp.Expr  # estimated work; backends parallelise the outer loop when it is large


@dataclass(frozen=True)
class Temp:
    name: str
    shape: tuple


@dataclass(frozen=True)
class LoopProgram:
    """Everything one formula's kernel does, in order."""

    name: str
    formula: str  # the formula as text, for generated headers
    inputs: tuple  # Tensor specs
    output: object  # Tensor spec
    dims: tuple
    temps: tuple
    steps: tuple  # MatMul | Contract | Nest | Branch
    extra_outputs: tuple = ()  # a fused program's other outputs (Tensor specs), written like output


def format_ir(prog: LoopProgram) -> str:
    outs = ", ".join(f"{t.name}{list(t.shape)}" for t in (prog.output, *prog.extra_outputs))
    lines = [f"kernel {prog.name}({', '.join(t.name for t in prog.inputs)}) -> {outs}"]
    return "\n".join(lines + _format_steps(prog.temps, prog.steps, "  "))


def _format_steps(temps, steps, pad) -> list:
    lines = [f"{pad}temp {t.name}{list(t.shape)}" for t in temps]
    for step in steps:
        if isinstance(step, Branch):
            lines.append(f"{pad}if {step.cond}:")
            lines += _format_steps(step.then_temps, step.then_steps, pad + "  ")
            lines.append(f"{pad}else:")
            lines += _format_steps(step.else_temps, step.else_steps, pad + "  ")
        elif isinstance(step, MatMul):
            ta, tb = ".T" if step.trans_a else "", ".T" if step.trans_b else ""
            lines.append(f"{pad}{step.out} = matmul({step.a}{ta}, {step.b}{tb})")
        elif isinstance(step, Contract):
            out, a, b = (", ".join(map(str, axes)) for axes in (step.out_axes or step.batch + step.rows + step.cols,
                                                                step.a_axes, step.b_axes))
            batched = f", batched over {', '.join(map(str, step.batch))}" if step.batch else ""
            lines.append(f"{pad}{step.out}[{out}] = gemm({step.a}[{a}], {step.b}[{b}]) summing "
                         f"{', '.join(map(str, step.sums))}{batched}")
        else:
            lines.append(f"{pad}nest {step.name}  (work ~ {step.parallel_work}):")
            lines += _format_body(step.body, pad + "  ")
    return lines


def _format_body(body, pad):
    out = []
    for s in body:
        if isinstance(s, Loop):
            out.append(f"{pad}{'parallel ' if s.parallel else ''}for {s.var} in [{s.lo}, {s.stop}):")
            out += _format_body(s.body, pad + "  ")
        elif isinstance(s, Let):
            out.append(f"{pad}{s.name} = {s.value}")
        elif isinstance(s, Accumulate):
            out.append(f"{pad}{s.name} += {s.value}")
        elif isinstance(s, Store):
            out.append(f"{pad}{s.tensor}[{', '.join(map(str, s.index))}] = {s.value}")
        elif isinstance(s, ScatterAdd):
            out.append(f"{pad}{s.tensor}[{', '.join(map(str, s.index))}] += {s.value}")
        elif isinstance(s, If):
            out.append(f"{pad}if {s.cond}:")
            out += _format_body(s.then, pad + "  ")
            if s.orelse:
                out.append(f"{pad}else:")
                out += _format_body(s.orelse, pad + "  ")
    return out


def check(prog: LoopProgram) -> None:
    """Invariants: temporaries are defined before use, loop variables are not reused in scope,
    stores go only to the output or to temporaries, every step's tensors exist."""
    outputs = {prog.output.name} | {t.name for t in prog.extra_outputs}
    _check_steps(prog, prog.temps, prog.steps, {t.name for t in prog.inputs} | outputs, outputs)


def _check_steps(prog, temps, steps, arrays, writable):
    arrays, writable = arrays | {t.name for t in temps}, writable | {t.name for t in temps}
    for step in steps:
        if isinstance(step, Branch):
            _check_steps(prog, step.then_temps, step.then_steps, arrays, writable)
            _check_steps(prog, step.else_temps, step.else_steps, arrays, writable)
            continue
        if isinstance(step, (MatMul, Contract)):
            assert {step.a, step.b, step.out} <= arrays, step
            assert step.out in writable, step
            continue
        assert set(step.tensors) <= arrays, (step.tensors, arrays)
        _check_body(step.body, set(), set(prog.dims) | {sp.Symbol(t.name, real=True)
                                                          for t in prog.inputs if t.rank == 0}, writable)


def _check_body(body, loop_vars, defined, writable):
    defined = set(defined)
    for s in body:
        if isinstance(s, Loop):
            assert s.var not in loop_vars, f"loop variable {s.var} reused"
            _check_body(s.body, loop_vars | {s.var}, defined | {s.var}, writable)
        elif isinstance(s, Let):
            defined.add(s.name)
        elif isinstance(s, Accumulate):
            assert s.name in defined, f"{s.name} accumulated before it is defined"
        elif isinstance(s, (Store, ScatterAdd)):
            assert s.tensor in writable, f"store to read-only {s.tensor}"
        elif isinstance(s, If):
            _check_body(s.then, loop_vars, defined, writable)
            _check_body(s.orelse, loop_vars, defined, writable)
