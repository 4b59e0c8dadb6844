"""Optimizers with Keras' names and defaults, each the compiled update Program of
formulas/optimizers.py applied to every parameter tensor (flattened) in one call.

Forms (see formulas/optimizers.py): SGD and momentum/Nesterov as Keras; RMSprop as Keras (eps
inside the square root); Adam/AdamW as Kingma & Ba Algorithm 1 (eps outside the bias-corrected
root; Keras' "epsilon hat" form differs by O(eps) in the denominator).
"""
from __future__ import annotations

import numpy as np

from symdl import formulas
from symdl.formulas import optimizers as opt_formulas

from .device import to_device, zeros


class Optimizer:
    """Holds the update kernel, per-parameter state and the step count `iterations`."""

    name = "optimizer"
    state_names: tuple[str, ...] = ()

    def __init__(self, learning_rate: float):
        self.learning_rate = float(learning_rate)
        self.iterations = 0
        self._kernel = None
        self._state: dict[int, dict[str, np.ndarray]] = {}  # the weight's position in model.weights -> slots

    def program(self):
        """The catalog Program this optimizer runs; every optimizer class defines it."""
        raise TypeError(f"{type(self).__name__} must define program(): Optimizer is a base class")

    def hyper(self) -> dict:
        """The scalar inputs of the update formulas for this step."""
        return {"lr": self.learning_rate}

    @property
    def kernel(self):
        if self._kernel is None:
            self._kernel = self.program().compile()
        return self._kernel

    def apply(self, variables: list, grads: list, keys: list | None = None) -> None:
        """One step: every variable's value is replaced by the kernel's w_new. `keys` name each
        variable's slots (a model passes its trainable weights' positions among all its weights,
        so that freezing one weight leaves every other's slots where they were); by default the
        variables' order."""
        self.iterations += 1
        self.update(self.kernel, self._state, variables, grads, on_device=False, keys=keys)

    def update(self, kernel, states: dict, variables: list, grads: list, on_device: bool,
               keys: list | None = None) -> None:
        """Run the update kernel on each variable with its state slots (zeros at its first step),
        on the host or on the device (DeviceOptimizer): w, m, v... become w_new, m_new, v_new."""
        hyper = self.hyper()
        keys = range(len(variables)) if keys is None else keys
        for n, var, g in zip(keys, variables, grads, strict=True):
            w = (to_device(var.value) if on_device else var.value).reshape(-1)
            g = to_device(g) if on_device else np.ascontiguousarray(g, dtype=w.dtype)
            state = states.get(n)
            if state is None:
                state = states[n] = {s: zeros(w.shape, w.dtype, on_device) for s in self.state_names}
            out = kernel(w=w, g=g.reshape(-1), **state, **hyper)
            if isinstance(out, dict):
                for s in self.state_names:
                    state[s] = out[f"{s}_new"]
                out = out["w_new"]
            var.value = out.reshape(var.shape)

    def get_state(self) -> tuple[int, dict[str, np.ndarray]]:
        """(iterations, {"<weight position>/<slot>": array}): what `model.save` stores so that a
        reloaded model continues training exactly where it stopped."""
        return self.iterations, {f"{n}/{s}": a for n, slots in sorted(self._state.items())
                                 for s, a in slots.items()}

    def set_state(self, iterations: int, slots: dict[str, np.ndarray]) -> None:
        """Restore what `get_state` returned."""
        self.iterations = int(iterations)
        self._state = {}
        for key, a in slots.items():
            n, s = key.split("/")
            if s not in self.state_names:
                raise ValueError(f"{self.name} has no state {s!r} (it keeps {self.state_names})")
            self._state.setdefault(int(n), {})[s] = np.array(a, dtype=np.float32).reshape(-1)

    def get_config(self) -> dict:
        return {"name": self.name, "learning_rate": self.learning_rate}


class SGD(Optimizer):
    """w - lr g; with momentum v = μv - lr g, w + v (Nesterov: w + μv - lr g). Keras defaults."""
    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(learning_rate)
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.state_names = ("v",) if self.momentum else ()

    def program(self):
        if not self.momentum:
            return formulas.get("sgd_update")
        return opt_formulas.momentum_sgd(nesterov=self.nesterov)

    def hyper(self):
        return {"lr": self.learning_rate, **({"momentum": self.momentum} if self.momentum else {})}

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    """s = ρs + (1-ρ)g², w - lr g / sqrt(s + eps) (Keras' form and defaults)."""
    name = "rmsprop"
    state_names = ("s",)

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.rho, self.epsilon = float(rho), float(epsilon)

    def program(self):
        return opt_formulas.rmsprop(eps_in_sqrt=True)

    def hyper(self):
        return {"lr": self.learning_rate, "rho": self.rho, "eps": self.epsilon}

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Adam(Optimizer):
    """Adam with bias correction; Keras defaults (lr 0.001, β 0.9/0.999, eps 1e-7)."""
    name = "adam"
    state_names = ("m", "v")

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def program(self):
        return opt_formulas.adam()

    def hyper(self):
        return {"lr": self.learning_rate, "beta1": self.beta_1, "beta2": self.beta_2,
                "eps": self.epsilon, "t": float(self.iterations)}

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class AdamW(Adam):
    """Adam with decoupled weight decay lr·wd·w; Keras defaults (weight_decay 0.004)."""
    name = "adamw"

    def __init__(self, learning_rate: float = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7):
        super().__init__(learning_rate, beta_1, beta_2, epsilon)
        self.weight_decay = float(weight_decay)

    def program(self):
        return opt_formulas.adamw()

    def hyper(self):
        return {**super().hyper(), "weight_decay": self.weight_decay}

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.weight_decay}


_BY_NAME = {c.name: c for c in (SGD, RMSprop, Adam, AdamW)}


def get(spec) -> Optimizer:
    """An Optimizer from a Keras name ("adam"), a config dict, or an Optimizer."""
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, str) and spec.lower() in _BY_NAME:
        return _BY_NAME[spec.lower()]()
    if isinstance(spec, dict) and spec.get("name") in _BY_NAME:
        return _BY_NAME[spec["name"]](**{k: v for k, v in spec.items() if k != "name"})
    raise ValueError(f"unknown optimizer {spec!r}; known: {sorted(_BY_NAME)} or a symdl.nn.optimizers.Optimizer")
