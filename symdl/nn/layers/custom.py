"""FormulaLayer: any user Formula or Program as a layer with named trainable parameters."""
from __future__ import annotations

import numpy as np

from symdl.declare import Formula, Program

from .. import initializers
from ..graph import FormulaOp
from .base import Layer


class FormulaLayer(Layer):
    """Train your own formula: `input` names the tensor fed by the previous layer (batch first),
    `output` the tensor passed on, `params` the trainable tensors, each given as

    * a shape tuple (glorot_uniform for rank >= 2, zeros otherwise),
    * a pair (initializer, shape), e.g. ("he_uniform", (64, 10)), or
    * an array of initial values.

    `constants` fixes any scalar inputs (e.g. {"alpha": 0.1}). Example::

        i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
        f = symdl.Formula(sp.Eq(y[i, j], sp.tanh(sp.Sum(x[i, k] * W[k, j], k))), name="tanh_layer")
        nn.Sequential([nn.Input((64,)), nn.FormulaLayer(f, params={"W": (64, 32)}), ...])

    Saving records the formula's name only: pass the formula again to
    `nn.load_model(path, custom_objects={name: formula})`.
    """

    def __init__(self, formula_or_program: Formula | Program, params: dict | None = None,
                 input: str = "x", output: str | None = None, constants: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        if self.auto_named:  # named after its formula, as a Dense layer is after its class
            self.name = _name(formula_or_program)
        self.source = formula_or_program
        self.op = FormulaOp(formula_or_program)
        self.input_name = input
        outputs = self.op.outputs
        self.output_name = output or (outputs[0] if len(outputs) == 1 else None)
        if self.output_name is None:
            raise ValueError(f"FormulaLayer: {_name(formula_or_program)!r} has outputs {outputs}; say "
                             f"which one the layer passes on with output=")
        self.params = dict(params or {})
        self.constants = {k: float(v) for k, v in (constants or {}).items()}
        names = set(self.op.input_names)
        produced = {f.output.name for f in self.op.formulas}
        expected = names - {input} - set(self.params) - set(self.constants)
        problems = []
        if input not in names:
            problems.append(f"input {input!r} is not one of its inputs {sorted(names)}")
        if self.output_name not in produced:
            problems.append(f"output {self.output_name!r} is not a tensor it computes")
        if expected:
            problems.append(f"inputs {sorted(expected)} have no value: list them in params= or constants=")
        unknown = (set(self.params) | set(self.constants)) - names
        if unknown:
            problems.append(f"params/constants {sorted(unknown)} are not inputs of the formula")
        if problems:
            raise ValueError(f"FormulaLayer {_name(formula_or_program)!r}: " + "; ".join(problems))

    def build(self, input_shape, rng):
        self.input_shape = tuple(input_shape)
        self.vars = {}
        for name, spec in self.params.items():
            self.vars[name] = self.add_weight(name, _initial(name, spec, rng))
        probe = self.op.forward(**self._args(np.zeros((1, *input_shape), dtype=np.float32)))
        self.output_shape = tuple(probe[self.output_name].shape[1:])
        self.built = True

    def _args(self, x):
        return {self.input_name: x, **{n: v.value for n, v in self.vars.items()}, **self.constants}

    def call(self, x, training=False):
        env = self.op.forward(**self._args(x))
        return env[self.output_name], env

    def backward(self, ctx, grad, need_input_grad=True):
        wrt = ([self.input_name] if need_input_grad else []) + list(self.vars)
        g = self.op.backward(ctx, {self.output_name: grad}, wrt)
        return g.get(self.input_name), [g[n] for n in self.vars]

    def get_config(self):
        return {"name": self.name, "formula": _name(self.source), "input": self.input_name,
                "output": self.output_name, "constants": self.constants,
                "params": {n: list(v.shape) for n, v in self.vars.items()}
                if getattr(self, "vars", None) else {n: _shape_of(s) for n, s in self.params.items()}}


def _name(fp) -> str:
    return getattr(fp, "name", type(fp).__name__)


def _shape_of(spec) -> list:
    if isinstance(spec, np.ndarray):
        return list(spec.shape)
    if isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[0], (int, np.integer)):
        return list(spec[1])
    return list(spec)


def _initial(name: str, spec, rng) -> np.ndarray:
    if isinstance(spec, np.ndarray):
        return np.array(spec, dtype=np.float32)
    if isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[0], (int, np.integer)):
        init, shape = spec
        return initializers.get(init)(tuple(shape), rng)
    if isinstance(spec, (tuple, list)) and all(isinstance(n, (int, np.integer)) for n in spec):
        init = "glorot_uniform" if len(spec) >= 2 else "zeros"
        return initializers.get(init)(tuple(int(n) for n in spec), rng)
    raise ValueError(f"FormulaLayer parameter {name!r}: give a shape tuple, (initializer, shape) or an "
                     f"array, got {spec!r}")
