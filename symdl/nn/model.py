"""Sequential: a stack of layers, its weights, its tape, its config and its files."""
from __future__ import annotations

import numpy as np

from symdl.runtime.threads import adapt as adapt_threads

from . import saving
from .device import check_device, is_device_array, to_device, to_host
from .layers import LAYERS, FormulaLayer, Input, Layer
from .training import Trainer
from .utils import make_rng


class Sequential(Trainer):
    """Layers applied in order, Keras style::

        model = nn.Sequential([nn.Input((8, 8, 1)), nn.Conv2D(8, 3, activation="relu"),
                               nn.MaxPooling2D(2), nn.Flatten(), nn.Dense(10, activation="softmax")],
                              seed=0)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=5)

    `seed` fixes initial weights, shuffling and dropout (else `nn.utils.set_seed` / fresh entropy).
    `compile(..., device="cuda")` trains on the GPU (docs/nn.md, "GPU").
    """

    def __init__(self, layers=None, name: str = "sequential", seed: int | None = None):
        super().__init__()
        self.name, self.seed = name, seed
        self.rng = make_rng(seed)
        self.layers: list[Layer] = []
        self.input_shape: tuple | None = None
        self.built = False
        for layer in layers or []:
            self.add(layer)

    def add(self, layer) -> None:
        if isinstance(layer, Input):
            if self.layers or self.input_shape is not None:
                raise ValueError("nn.Input must come first, once")
            self.input_shape = layer.shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential takes symdl.nn layers, got {type(layer).__name__}")
        self._name(layer)
        if not self.layers and self.input_shape is None and layer.input_shape is not None:
            self.input_shape = layer.input_shape
        self.layers.append(layer)
        self.built = False
        if getattr(self, "_replay", None) is not None:  # the steps recorded so far ran the old layers
            self._replay.forget()

    def _name(self, layer: Layer) -> None:
        """Keras' names: a layer without name= takes the first free of dense, dense_1, ... in this
        model (and keeps it); a given name must not repeat within the model."""
        taken = {other.name for other in self.layers}
        if getattr(layer, "auto_named", False):
            name, n = layer.name, 0
            while name in taken:
                n += 1
                name = f"{layer.name}_{n}"
            layer.rename(name)
            layer.auto_named = False
        elif layer.name in taken:
            raise ValueError(f"model {self.name!r} already has a layer named {layer.name!r}: layer names "
                             f"must be unique within a model; give this {type(layer).__name__} another name=")

    def build(self, input_shape=None) -> None:
        """Create every layer's weights for inputs of `input_shape` (no batch axis)."""
        shape = tuple(input_shape) if input_shape is not None else self.input_shape
        if shape is None:
            raise ValueError("the model's input shape is unknown: start with nn.Input(shape), give the "
                             "first layer input_shape=, or call build(shape)")
        self.input_shape = shape
        for layer in self.layers:
            if not layer.built:
                layer.build(shape, self.rng)
            shape = layer.output_shape
        self.output_shape = shape
        self.built = True
        self.place(self.device)

    def place(self, device: str) -> None:
        """Move the weights to `device` ("cpu": NumPy arrays, "cuda": numba device arrays); later
        builds and set_weights follow it. compile(device=...) calls this."""
        self.device = check_device(device)
        for v in (self.weights if self.built else []):
            v.value = to_device(v.value) if self.device == "cuda" else _c_order(to_host(v.value))

    # -- weights --------------------------------------------------------------------------------
    @property
    def weights(self) -> list:
        return [v for layer in self.layers for v in layer.weights]

    @property
    def trainable_weights(self) -> list:
        return [v for v in self.weights if v.trainable]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every weight, Keras order (per layer: kernel, bias) and shapes (NumPy arrays,
        copied from the device for a model on "cuda")."""
        self._ensure_built()
        return [v.value.copy_to_host() if is_device_array(v.value) else v.value.copy() for v in self.weights]

    def set_weights(self, weights) -> None:
        self._ensure_built()
        variables = self.weights
        if len(weights) != len(variables):
            raise ValueError(f"set_weights: the model has {len(variables)} weight arrays, got {len(weights)}")
        arrays = [np.asarray(w) for w in weights]
        for n, (v, w) in enumerate(zip(variables, arrays, strict=True)):  # all checked, then all set
            if w.shape != v.shape:
                raise ValueError(f"set_weights: {v.name} (weight {n}) has shape {v.shape}, got {w.shape}")
            if w.dtype.kind not in "fiub":
                raise ValueError(f"set_weights: {v.name} (weight {n}) takes numbers, got dtype {w.dtype}")
        for v, w in zip(variables, arrays, strict=True):
            v.value = np.array(w, dtype=np.float32, order="C")
            if self.device == "cuda":
                v.value = to_device(v.value)

    def count_params(self) -> int:
        self._ensure_built()
        return sum(layer.count_params() for layer in self.layers)

    def _ensure_built(self) -> None:
        if not self.built:
            self.build()

    # -- forward and backward ---------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False, tape: list | None = None) -> np.ndarray:
        """The model's output; with `tape`, each layer's context is recorded for `backward`. On
        "cuda" the batch is copied in once and the output is a device array."""
        if self.device == "cuda":
            x = to_device(x)
        adapt_threads()  # as many threads as other processes leave cores free (runtime/threads.py)
        for layer in self.layers:
            x, ctx = layer.call(x, training=training)
            if tape is not None:
                tape.append((layer, ctx))
        return x

    def backward(self, tape: list, grad: np.ndarray) -> list[np.ndarray]:
        """Weight gradients (in `weights` order) from the recorded tape, walked in reverse."""
        grads: dict[int, list] = {}
        for n in range(len(tape) - 1, -1, -1):
            layer, ctx = tape[n]
            grad, wgrads = layer.backward(ctx, grad, need_input_grad=n > 0)
            grads[n] = wgrads
        return [g for n in range(len(tape)) for g in grads[n]]

    def __call__(self, x) -> np.ndarray:
        return self.predict(x, batch_size=max(len(x), 1))

    # -- config and files -------------------------------------------------------------------------
    def get_config(self) -> dict:
        self._ensure_built()
        return {"name": self.name, "seed": self.seed, "input_shape": list(self.input_shape),
                "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                           for layer in self.layers]}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> "Sequential":
        """The model `get_config` described, built (fresh weights). A config a layer refuses, or
        one that fails to build, raises ValueError naming the layer."""
        layers = []
        for n, spec in enumerate(config["layers"]):
            name, cfg = spec["class_name"], dict(spec["config"])
            if name not in LAYERS:
                raise ValueError(f"unknown layer class {name!r} in the saved model (layer {n}); "
                                 f"known: {', '.join(sorted(LAYERS))}")
            try:
                if name == "FormulaLayer":
                    layers.append(_formula_layer(cfg, custom_objects or {}))
                else:
                    layers.append(LAYERS[name].from_config(cfg))
            except ValueError as e:
                raise ValueError(f"layer {n} ({name}): {e}") from e
            except Exception as e:  # a constructor meeting a value of the wrong type
                raise ValueError(f"layer {n} ({name}): bad config ({type(e).__name__}: {e})") from e
        model = cls([Input(config["input_shape"]), *layers], name=config["name"], seed=config.get("seed"))
        try:
            model.build()
        except Exception as e:
            raise ValueError(f"the saved architecture does not build on inputs {tuple(model.input_shape)} "
                             f"({type(e).__name__}: {e})") from e
        return model

    def save(self, path) -> None:
        """Write architecture, weights and compile settings to one .npz file (atomic, no pickle)."""
        self.sync_optimizer_state()
        saving.save_model(self, path)

    def save_weights(self, path) -> None:
        saving.save_model(self, path, weights_only=True)

    def load_weights(self, path) -> None:
        """Weights from a file of `save_weights` or `save`. The whole file is checked first
        (count, every array's dtype and shape): on a mismatch, ValueError naming the file and the
        weight, and the model keeps its weights."""
        saving.load_weights(self, path)

    def step_source(self) -> str:
        """The generated training step(s) this model replays (nn/replay.py), one per batch shape;
        where a step is not replayed, why."""
        replay = self._replay
        if replay is None:
            return "# not compiled: call model.compile(...) and train a few steps first"
        return replay.source()

    def summary(self, print_fn=print) -> None:
        """Keras' table: each layer's name (type), output shape with the batch axis as None and
        parameter count, then total, trainable and non-trainable parameters (float32 sizes)::

            Model: "sequential"
            _________________________________________________________________
             Layer (type)                Output Shape              Param #
            =================================================================
             dense (Dense)               (None, 10)                650
            =================================================================
            Total params: 650 (2.54 KB)
            Trainable params: 650 (2.54 KB)
            Non-trainable params: 0 (0.00 B)
            _________________________________________________________________
        """
        self._ensure_built()
        width = 65
        print_fn(f'Model: "{self.name}"')
        print_fn("_" * width)
        print_fn(_summary_row("Layer (type)", "Output Shape", "Param #"))
        print_fn("=" * width)
        for n, layer in enumerate(self.layers):
            if n:
                print_fn("")
            dims = ", ".join(["None", *map(str, layer.output_shape)])
            shape = f"({dims})" if layer.output_shape else "(None,)"
            name = f"{layer.name} ({type(layer).__name__})"
            print_fn(_summary_row(name, shape, f"{layer.count_params():,}"))
        print_fn("=" * width)
        total = self.count_params()
        trainable = int(sum(v.value.size for v in self.trainable_weights))
        counts = (("Total", total), ("Trainable", trainable), ("Non-trainable", total - trainable))
        for label, count in counts:
            print_fn(f"{label} params: {count:,} ({_memory(4 * count)})")
        print_fn("_" * width)


def _summary_row(name: str, shape: str, params: str) -> str:
    """Keras' columns: name at 1, output shape at 29, parameter count at 55 (wider cells push on)."""
    row = f" {name}"
    row += " " * max(1, 29 - len(row)) + shape
    row += " " * max(1, 55 - len(row)) + params
    return row


def _memory(size: int) -> str:
    """Keras' readable size: 2.54 KB, 0.00 B (powers of 1024)."""
    value, unit = float(size), "B"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            break
        value /= 1024
    return f"{value:.2f} {unit}"

def _formula_layer(cfg: dict, custom_objects: dict) -> FormulaLayer:
    formula = custom_objects.get(cfg["formula"])
    if formula is None:
        raise ValueError(f"the saved model has a FormulaLayer on formula {cfg['formula']!r}; pass it as "
                         f"load_model(path, custom_objects={{{cfg['formula']!r}: formula}})")
    params = {n: tuple(s) for n, s in cfg["params"].items()}
    return FormulaLayer(formula, params=params, input=cfg["input"], output=cfg["output"],
                        constants=cfg.get("constants"), name=cfg["name"])


def _c_order(a: np.ndarray) -> np.ndarray:
    """`a` in C order (the recorded training step reads weights so); 0-d arrays stay 0-d."""
    return a if a.flags.c_contiguous else a.copy(order="C")
