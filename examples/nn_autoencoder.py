"""F9 of docs/catalog.md (encoder h = σ(W1 x + b1), decoder x̂ = σ(W2 h + b2), reconstruction loss) with
symdl.nn: Dense(32, sigmoid) -> Dense(64, sigmoid) trained on the bundled digits (pixels / 16)
to reproduce its input under the mean squared error, Adam. With --mnist: 784 -> 64 -> 784.

It prints the reconstruction MSE per epoch, the test MSE against the trivial baseline (every
image reconstructed as the mean training image), and checks the model's loss against the
catalog's own F9 program `autoencoder_mse` evaluated on the trained weights.

    python examples/nn_autoencoder.py [--mnist] [--epochs 30] [--code 32]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from nn_data import load
from symdl import formulas, nn
from symdl.nn import zoo


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mnist", action="store_true")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--code", type=int, default=None, help="code width (32 on digits, 64 on MNIST)")
    ap.add_argument("--lr", type=float, default=0.005)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    (xtr, _), (xte, _) = load(args.mnist, images=False)
    code = args.code or (64 if args.mnist else 32)
    model = nn.Sequential([nn.Input(xtr.shape[1:]), *zoo.autoencoder_layers(xtr.shape[1:], code)], seed=0)
    model.compile(optimizer=nn.optimizers.Adam(args.lr), loss="mse")
    model.summary()
    hist = model.fit(xtr, xtr, epochs=args.epochs, batch_size=32, validation_data=(xte, xte), verbose=0)
    losses = hist.history["loss"]
    for epoch in sorted({0, 1, 2, 4, 9, 19, args.epochs - 1} & set(range(args.epochs))):
        print(f"epoch {epoch + 1:3d}: reconstruction MSE {losses[epoch]:.5f} (test "
              f"{hist.history['val_loss'][epoch]:.5f})")
    test = model.evaluate(xte, xte, batch_size=len(xte), verbose=0)
    baseline = float(np.mean((xte - xtr.mean(0)) ** 2))
    W1, b1, W2, b2 = model.get_weights()
    catalog = float(formulas.get("autoencoder_mse").compile()(x=xte, W1=W1, b1=b1, W2=W2, b2=b2))
    decreasing = all(b < a for a, b in zip(losses, losses[1:]))
    print(f"test MSE {test:.5f} vs {baseline:.5f} for the mean image; the catalog's autoencoder_mse on "
          f"the trained weights: {catalog:.5f}; training MSE decreased every epoch: {decreasing}; "
          f"{time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
