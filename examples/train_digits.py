"""Train softmax regression and a small MLP on the bundled UCI digits, entirely with symdl kernels.

Every number of the training arithmetic comes from compiled symdl kernels:

* forward pass and loss: a `symdl.Program` composed from catalog pieces (dense layers, the row-wise
  softmax, sparse categorical cross-entropy) whose tensor names chain x -> z -> p -> L;
* gradients: the Program's reverse-mode gradient Program (`Program.vjp(wrt=parameters)`), which
  computes the loss and the parameter gradients in one pass;
* parameter updates: the catalog's `sgd_update` kernel, or (with --momentum > 0) a momentum
  update Program declared below, applied to flattened parameter views.

NumPy is only glue: loading, shuffling, batching, Glorot initialisation, argmax for accuracy.

    python examples/train_digits.py                    # both models, default settings
    python examples/train_digits.py --model mlp --epochs 30 --lr 0.05
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

import symdl
from symdl import formulas
from symdl.datasets import digits
from symdl.formulas.activations import softmax
from symdl.formulas.dense import layer, linear

MODELS = ("logreg", "mlp")
FEATURES, HIDDEN, CLASSES = 64, 64, digits.NUM_CLASSES
TARGET = 0.95  # the test accuracy both models are expected to reach with the defaults
DEFAULTS = {"epochs": 20, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "seed": 0}


# -- programs -------------------------------------------------------------------------------------
def build_program(model: str) -> tuple[symdl.Program, dict[str, tuple[int, ...]]]:
    """The model's loss Program (inputs x, t and the parameters; output L) and its parameter shapes.

    logreg: z = x W + b;                      mlp: h = relu(x W1 + b1), z = h W2 + b2;
    both:   p = softmax(z), L = -1/B Σ_b log p[b, t[b]].
    """
    if model == "logreg":
        body = [linear("x", "W", "b", "z", name="logits.dense")]
        shapes = {"W": (FEATURES, CLASSES), "b": (CLASSES,)}
    elif model == "mlp":
        hidden = layer("relu", x="x", W="W1", b="b1", out="h")
        # Distinct formula names: Program drops a second formula with a name already used.
        body = [*hidden.formulas, linear("h", "W2", "b2", "z", name="logits.dense")]
        shapes = {"W1": (FEATURES, HIDDEN), "b1": (HIDDEN,), "W2": (HIDDEN, CLASSES), "b2": (CLASSES,)}
    else:
        raise ValueError(f"unknown model {model!r}; choose one of {MODELS}")
    head = [*softmax("z", "p").formulas, formulas.get("sparse_categorical_crossentropy")]
    return symdl.Program(body + head, name=model), shapes


def momentum_update() -> symdl.Program:
    """Heavy-ball momentum on a flat vector: v_new = mu v - lr g, then w_new = w + v_new."""
    n = sp.Symbol("N", integer=True, positive=True)
    i = sp.Idx("i", n)
    w, g, v, v_new, w_new = (sp.IndexedBase(s) for s in ("w", "g", "v", "v_new", "w_new"))
    mu, lr = sp.symbols("mu lr")
    return symdl.Program([
        symdl.Formula(sp.Eq(v_new[i], mu * v[i] - lr * g[i]), name="momentum.velocity"),
        symdl.Formula(sp.Eq(w_new[i], w[i] + v_new[i]), name="momentum.step"),
    ], name="momentum_update", outputs=["v_new", "w_new"])


class Optimizer:
    """Applies a compiled update kernel to each parameter, flattened to a vector."""

    def __init__(self, lr: float, momentum: float = 0.0):
        self.lr, self.momentum = float(lr), float(momentum)
        self.kernel = momentum_update().compile() if momentum else formulas.get("sgd_update").compile()
        self.velocity: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        for name, w in params.items():
            flat_w, flat_g = w.reshape(-1), grads[name].reshape(-1)
            if self.momentum:
                v = self.velocity.setdefault(name, np.zeros_like(flat_w))
                out = self.kernel(w=flat_w, g=flat_g, v=v, mu=self.momentum, lr=self.lr)
                self.velocity[name], new = out["v_new"], out["w_new"]
            else:
                new = self.kernel(w=flat_w, g=flat_g, lr=self.lr)
            params[name] = new.reshape(w.shape)


# -- data and parameters --------------------------------------------------------------------------
def load_digits(test_fraction: float = 0.2, seed: int = 0):
    """Flattened float32 images scaled to [0, 1] and int64 labels: ((x, t) train, (x, t) test)."""
    (xtr, ytr), (xte, yte) = digits.load_data(test_fraction=test_fraction, seed=seed)

    def prep(x, y):
        x = x.reshape(len(x), -1).astype(np.float32) / np.float32(digits.MAX_PIXEL)
        return np.ascontiguousarray(x), y.astype(np.int64)
    return prep(xtr, ytr), prep(xte, yte)


def glorot_init(shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Glorot-uniform matrices (Keras' default), zero biases; float32."""
    params = {}
    for name, shape in shapes.items():
        if len(shape) == 2:
            limit = np.sqrt(6.0 / (shape[0] + shape[1]))
            params[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        else:
            params[name] = np.zeros(shape, dtype=np.float32)
    return params


# -- training -------------------------------------------------------------------------------------
@dataclass
class Result:
    model: str
    params: dict[str, np.ndarray]
    train_loss: list[float] = field(default_factory=list)  # per epoch, mean over the samples
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_acc(self) -> float:
        return self.test_acc[-1]


def evaluate(forward, params: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy) of the loss Program's kernel on a whole set."""
    env = forward.run(x=x, t=t, **params)
    return float(env["L"]), float(np.mean(np.argmax(env["p"], axis=1) == t))


def train(model: str, data, epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
          lr: float = DEFAULTS["lr"], momentum: float = DEFAULTS["momentum"], seed: int = DEFAULTS["seed"],
          log=print) -> Result:
    """Mini-batch training of `model` ("logreg" or "mlp") on data = ((x, t) train, (x, t) test).

    Kernels are compiled once here (the first call of each builds or loads its module); the epoch
    loop then only calls them. `log(str)` receives one line per epoch (pass `None` to be quiet).
    """
    start = time.perf_counter()
    (xtr, ttr), (xte, tte) = data
    program, shapes = build_program(model)
    forward = program.compile()
    step = program.vjp(wrt=list(shapes)).compile()  # loss and parameter gradients in one pass
    optimizer = Optimizer(lr, momentum)
    rng = np.random.default_rng(seed)
    params = glorot_init(shapes, rng)
    result = Result(model, params)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(xtr))
        total = 0.0
        for lo in range(0, len(order), batch_size):
            idx = order[lo:lo + batch_size]
            env = step.run(x=xtr[idx], t=ttr[idx], grad_L=1.0, **params)
            total += float(env["L"]) * len(idx)
            optimizer.step(params, {n: env[f"grad_{n}"] for n in shapes})
        loss, acc = evaluate(forward, params, xte, tte)
        result.train_loss.append(total / len(xtr))
        result.test_loss.append(loss)
        result.test_acc.append(acc)
        if log:
            log(f"{model:6s} epoch {epoch:3d}/{epochs}  train loss {total / len(xtr):.4f}  "
                f"test loss {loss:.4f}  test acc {acc:6.2%}  ({time.perf_counter() - start:5.2f} s)")
    result.params = params
    result.seconds = time.perf_counter() - start
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: train the chosen model(s) and print the test accuracy."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=(*MODELS, "both"), default="both")
    ap.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    ap.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    ap.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    ap.add_argument("--momentum", type=float, default=DEFAULTS["momentum"],
                    help="heavy-ball momentum; 0 uses the catalog's plain sgd_update kernel")
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"], help="initialisation and shuffling")
    args = ap.parse_args(argv)

    start = time.perf_counter()
    data = load_digits()
    (xtr, _), (xte, _) = data
    print(f"UCI digits: {len(xtr)} train, {len(xte)} test; batch {args.batch_size}, lr {args.lr}, "
          f"momentum {args.momentum}, seed {args.seed}")
    results = []
    for model in (MODELS if args.model == "both" else (args.model,)):
        r = train(model, data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                  momentum=args.momentum, seed=args.seed)
        results.append(r)
        print(f"{model}: final test accuracy {r.final_acc:.2%} in {r.seconds:.2f} s")
    print("summary: " + ", ".join(
        f"{r.model} {r.final_acc:.2%} ({'meets' if r.final_acc >= TARGET else 'below'} the "
        f"{TARGET:.0%} target)" for r in results))
    print(f"total time {time.perf_counter() - start:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
