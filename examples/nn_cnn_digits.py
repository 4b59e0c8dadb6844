"""E5 of docs/catalog.md (Keras CNN: Conv2D(32, 3x3, relu) -> MaxPooling2D(2) -> Flatten -> Dense(10, softmax),
Adam, 10 epochs, batch 32, evaluate) with symdl.nn, on the bundled digits as (8, 8, 1) images or
on MNIST (28, 28, 1) with --mnist. Also saves the model and reloads it.

    python examples/nn_cnn_digits.py [--mnist] [--epochs 10] [--filters 32]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from nn_data import load
from symdl import nn
from symdl.nn import zoo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mnist", action="store_true")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--filters", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.001)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    (xtr, ytr), (xte, yte) = load(args.mnist, images=True)
    model = nn.Sequential([nn.Input(xtr.shape[1:]), *zoo.e5_layers(xtr.shape[1:], filters=args.filters)],
                          seed=0)  # the layers `symdl train e5` uses
    model.compile(optimizer=nn.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.summary()
    stop = nn.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    model.fit(xtr, ytr, epochs=args.epochs, batch_size=32, validation_data=(xte, yte), callbacks=[stop],
              verbose=1)
    loss, acc = model.evaluate(xte, yte, verbose=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cnn.symdl"
        model.save(path)
        same = np.array_equal(nn.load_model(path).predict(xte), model.predict(xte))
    print(f"test loss {loss:.4f}, test accuracy {acc:.2%}; save/load gives identical predictions: {same}; "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
