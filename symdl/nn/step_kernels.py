"""The kernels one training step runs, found by walking the model: what fit's first batch
compiles into an empty kernel cache (its compile line counts them)."""
from __future__ import annotations

from symdl.formulas.tensor_ops import flat_elementwise

from .graph import FormulaOp, kernel_for
from .layers.base import Layer


def step_kernels(model) -> list:
    """The cpu kernels a training step of `model` runs, found through its layers' FormulaOps (a
    Kernel per formula, and per wanted gradient), its loss and its optimizer: what the first
    batch compiles into an empty cache. Recurrences' gradient programs and the gradient-adding
    kernel are left out (the compile line's count grows when they compile)."""
    kernels: list = []
    seen: set = set()
    for n, layer in enumerate(model.layers):
        fused = layer.fused_ops() if hasattr(layer, "fused_ops") else None
        if fused is not None:  # Dense with relu, sigmoid or tanh: f(x W + b), f' from y, the product's gradients
            seen.update(map(id, vars(layer).values()))
            wrt = ([] if n == 0 else ["x"]) + [t.name for t in layer.op.inputs if t.name != "x"]
            kernels += fused[0].kernels + fused[1].kernels + _op_kernels(layer.op, wrt, forward=False)
            continue
        for owner, op in _formula_ops(layer, seen):
            skip = set(getattr(owner, "constants", None) or ())
            if n == 0 and owner is layer:  # the model input needs no gradient (pooling computes one)
                skip |= {"x", "query", "value", "key", getattr(layer, "input_name", "x")}
            wrt = [t.name for t in op.inputs if not t.integer and t.name not in skip]
            kernels += _op_kernels(op, wrt)
    kernels += _op_kernels(model.loss.op, [model.loss.pred_name], whole=True)
    opt = model.optimizer.kernel
    if getattr(opt, "_fused", None) is not None:  # a ProgramKernel running its formulas as one nest
        kernels.append(opt._fused)
    else:
        kernels += getattr(opt, "kernels", None) or [opt]
    return kernels


def _formula_ops(obj, seen: set, owner=None):
    """(owning layer, FormulaOp) for every FormulaOp reachable from a layer's attributes."""
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, FormulaOp):
        yield owner, obj
    elif isinstance(obj, Layer):
        for value in vars(obj).values():
            yield from _formula_ops(value, seen, obj)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _formula_ops(value, seen, owner)
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _formula_ops(value, seen, owner)


def _op_kernels(op: FormulaOp, wrt: list, whole: bool = False, forward: bool = True) -> list:
    """op's forward kernels (unless not `forward`) and the gradient kernels FormulaOp.backward calls
    for `wrt` (and the add kernel where two formulas send gradient to one tensor); a Program's
    formulas run as one module each way where they chain (`whole`: forward and gradient as one, a
    loss's value_and_grad)."""
    if getattr(op.source, "systems", ()):  # forward: its system kernels; the adjoint program is left out
        states = {o for s in op.source.systems for o in s.outputs}
        return [k for f, k in zip(op.formulas, op.kernels, strict=True) if f.output.name not in states] + list(
            {id(k): k for k in op.systems_on(False).values()}.values())
    live = set(wrt)
    for f in op.formulas:
        if any(t.name in live for t in f.inputs):
            live.add(f.output.name)
    chained = len(op.formulas) > 1
    back = op.gradient_chain(wrt, whole) if chained and wrt else None
    if whole and back is not None:
        return [back]
    fwd = op._chain(None, op.formulas) if chained and forward else None
    kernels = ([fwd] if fwd is not None else list(op.kernels)) if forward else []
    if back is not None:
        return [*kernels, back]
    reached, summed = set(op.outputs), False
    for f, k in zip(reversed(op.formulas), reversed(op.kernels), strict=True):
        if f.output.name not in reached or f.recurrence is not None:
            continue
        for t in f.inputs:
            if t.name in live and not t.integer:
                kernels.append(k.grad_kernel(t.name))
                summed |= t.name in reached
                reached.add(t.name)
    if summed:
        kernels.append(kernel_for(flat_elementwise("add")))
    return kernels
