"""E2 of docs/catalog.md (tf.keras MLP: Dense(64, relu) -> Dense(64, relu) -> Dense(10, softmax), Adam, sparse
categorical cross-entropy, accuracy, 5 epochs, predict) and E4 (Dense(512, relu) ->
Dense(10, softmax), Adam lr 0.001, batch 256, 10 epochs), plus logistic regression, with symdl.nn.

    python examples/nn_mlp_digits.py                   # E2 on the bundled 8x8 digits
    python examples/nn_mlp_digits.py --arch logreg
    python examples/nn_mlp_digits.py --arch e4 --mnist # E4 on MNIST (784 inputs)
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from nn_data import load
from symdl import nn
from symdl.nn import zoo

ARCHS = {"e2": zoo.e2_layers, "e4": zoo.e4_layers, "logreg": zoo.logreg_layers}  # shared with `symdl train`
DEFAULTS = {"e2": (5, 32, 0.001), "e4": (10, 256, 0.001), "logreg": (20, 32, 0.01)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", choices=sorted(ARCHS), default="e2")
    ap.add_argument("--mnist", action="store_true", help="MNIST instead of the bundled digits")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    args = ap.parse_args(argv)
    epochs, batch, lr = DEFAULTS[args.arch]
    epochs, batch, lr = args.epochs or epochs, args.batch_size or batch, args.lr or lr
    if not args.mnist and args.arch != "logreg" and args.lr is None:
        lr = 0.005  # the 1,437 digits give few steps per epoch; Keras' 0.001 needs more epochs
    start = time.perf_counter()
    (xtr, ytr), (xte, yte) = load(args.mnist, images=False)
    model = nn.Sequential([nn.Input(xtr.shape[1:]), *ARCHS[args.arch](xtr.shape[1:])], seed=0)
    model.compile(optimizer=nn.optimizers.Adam(learning_rate=lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.summary()
    model.fit(xtr, ytr, epochs=epochs, batch_size=batch, validation_split=0.1, verbose=1)
    loss, acc = model.evaluate(xte, yte, verbose=0)
    pred = model.predict(xte[:10]).argmax(1)
    print(f"test loss {loss:.4f}, test accuracy {acc:.2%}; first predictions {pred.tolist()} "
          f"(labels {np.asarray(yte[:10]).tolist()}); {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
