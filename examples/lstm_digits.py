"""An LSTM (issue 11: a system of recurrences, c and h reading each other's earlier steps) with
symdl.nn: classify the bundled digits read as sequences, one 8-pixel image row per time step,
LSTM(32) -> Dense(10, softmax), Adam. One compiled kernel steps every state of a batch through
the 8 rows; the gradient is the adjoint system, one kernel stepping back.

    python examples/lstm_digits.py [--epochs 20] [--units 32] [--gru] [--mnist]
"""
from __future__ import annotations

import argparse
import time

from nn_data import load

from symdl import nn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mnist", action="store_true")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--gru", action="store_true", help="a GRU instead of the LSTM")
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    (xtr, ytr), (xte, yte) = load(args.mnist, images=True)
    xtr, xte = xtr[..., 0], xte[..., 0]  # (n, rows = time steps, columns = features)
    cell = nn.GRU(args.units) if args.gru else nn.LSTM(args.units)
    model = nn.Sequential([nn.Input(xtr.shape[1:]), cell, nn.Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer=nn.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.summary()
    model.fit(xtr, ytr, epochs=args.epochs, batch_size=32, validation_data=(xte, yte), verbose=1)
    loss, acc = model.evaluate(xte, yte, verbose=0)
    print(f"{type(cell).__name__}({args.units}), {xtr.shape[1]} steps of {xtr.shape[2]} features: "
          f"test loss {loss:.4f}, test accuracy {acc:.2%}; {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
