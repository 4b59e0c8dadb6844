"""F6 of docs/catalog.md (h_t = tanh(W x_t + R h_(t-1) + b), backpropagation through time) with symdl.nn:
classify digit images read as sequences, one image row per time step (8 steps of 8 pixels for
the bundled digits, 28 of 28 for MNIST with --mnist), SimpleRNN -> Dense(10, softmax), Adam.
The whole time loop (and its reverse) runs inside one compiled kernel per batch.

    python examples/nn_rnn_sequences.py [--mnist] [--epochs 15] [--units 64] [--relu]
"""
from __future__ import annotations

import argparse
import time

from nn_data import load
from symdl import nn
from symdl.nn import zoo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mnist", action="store_true")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--units", type=int, default=64)
    ap.add_argument("--relu", action="store_true", help="relu recurrence instead of tanh")
    ap.add_argument("--lr", type=float, default=0.005)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    (xtr, ytr), (xte, yte) = load(args.mnist, images=True)
    xtr, xte = xtr[..., 0], xte[..., 0]  # (n, rows = time steps, columns = features)
    model = nn.Sequential([nn.Input(xtr.shape[1:]),
                           *zoo.rnn_layers(xtr.shape[1:], args.units, "relu" if args.relu else "tanh")],
                          seed=0)
    model.compile(optimizer=nn.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.summary()
    model.fit(xtr, ytr, epochs=args.epochs, batch_size=32, validation_data=(xte, yte), verbose=1)
    loss, acc = model.evaluate(xte, yte, verbose=0)
    print(f"{xtr.shape[1]} steps of {xtr.shape[2]} features: test loss {loss:.4f}, test accuracy {acc:.2%}; "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
