"""Every catalog Program (systems of recurrences aside) through symdl.nn's FormulaOp on the cpu,
where its formulas run as one chain (runtime/chain.py): forward against the NumPy reference
evaluator run formula by formula, backward against the formula-by-formula backward (each
formula's own gradient kernels and the add kernel), both dtypes, at sizes several each."""
from __future__ import annotations

import numpy as np
import pytest

import symdl.nn.graph as graph
from symdl import formulas
from symdl.declare import Program
from symdl.reference import evaluate
from symdl.reference.inputs import random_inputs
from symdl.runtime.chain import ChainKernel
from symdl.runtime.program import kernel_for

TOL = {np.float32: 2e-3, np.float64: 1e-9}  # relative to max(1, max |reference|)
PROGRAMS = [n for n in formulas.names() if isinstance(formulas.get(n), Program) and not formulas.get(n).systems]


def _close(got, want, dtype, what):
    want = np.asarray(want, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64).reshape(want.shape)
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    assert np.all(np.abs(got - want) <= TOL[dtype] * scale), (what, float(np.max(np.abs(got - want))))


def _sizes(prog, base: int) -> dict:
    given = {str(d): int(v) for f in prog.formulas for d, v in f.sizes.items()}
    free = sorted({str(d) for f in prog.formulas for d in f.dims} - set(given))
    return dict(given, **{d: base + n for n, d in enumerate(free)})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", PROGRAMS)
def test_catalog_program_through_its_chain(name, dtype, monkeypatch):
    prog = formulas.get(name)
    rng = np.random.default_rng(0)
    op = graph.FormulaOp(prog)
    for base in (2, 5):
        sizes = _sizes(prog, base)
        inputs = {n: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
                  for n, v in random_inputs(prog, sizes, rng, np.float64).items()}
        env = op.forward(**inputs)
        ref = {n: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
               for n, v in inputs.items()}
        for f in prog.formulas:  # the reference, formula by formula, on its own values and lengths
            args = {t.name: ref[t.name] for t in f.inputs}  # (a name like N may differ per formula)
            dims = kernel_for(f).binder.bind({n: np.shape(a) for n, a in args.items()}, None, None)
            ref[f.output.name] = evaluate(f, args, dims)
            _close(env[f.output.name], ref[f.output.name], dtype, f"{name}: {f.output.name}")
        wrt = [t.name for t in prog.inputs if not t.integer]
        grads = {o: rng.normal(size=np.shape(env[o])).astype(dtype) if np.ndim(env[o]) else 1.0
                 for o in prog.outputs}
        got = op.backward(env, grads, wrt)
        with monkeypatch.context() as m:  # the same Program with no chain: kernel by kernel
            m.setattr(graph, "chain_kernel", lambda kernels, name: None)
            plain = graph.FormulaOp(prog)
            want = plain.backward(plain.forward(**inputs), grads, wrt)
        for n in wrt:
            _close(got[n], want[n], dtype, f"{name}: d/d{n}")
    if name in CHAINED:  # ran as chains, forward and backward (not only fell back to the kernels)
        chains = [c for c in (op._chains[None], op._chains[("vjp", tuple(wrt), False)])]
        assert all(isinstance(c, ChainKernel) and any(c._plans.values()) for c in chains), name


# Programs whose formulas bind each length name to one length (a Program's formulas may each use
# N for another axis, dense_softmax does: such a chain's plan refuses and the kernels run instead)
CHAINED = {"softmax", "log_softmax", "logsumexp", "dot_product_attention", "multi_head_attention",
           "additive_attention", "categorical_crossentropy_logits"}
