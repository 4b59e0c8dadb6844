"""E1 of docs/catalog.md (article 000, Keras): the CIFAR-10 CNN Conv2D(32, 3x3, relu) -> MaxPooling2D(2) ->
Conv2D(64, 3x3, relu) -> MaxPooling2D(2) -> Flatten -> Dense(10, softmax), Adam, categorical
cross-entropy on one-hot labels, batch 128, 10 epochs, evaluated on the test set.

The document's code expands a channel axis that CIFAR images already have; here the images go in
as (32, 32, 3), as the code meant. Offline (the default) it trains on a stand-in of colour
images: the bundled 8x8 digits scaled up to 24x24 (`--size 32`: CIFAR's 32x32, about twice the
time) and painted with a bright stroke and a dark background of random hues per image, plus pixel
noise, so that colour says nothing about the class. The network is E1's exactly (valid padding).
`--cifar` uses the real CIFAR-10 (`symdl.datasets.cifar10`, downloaded once, 50,000 + 10,000
images; `--train-size N` trains on the first N).

    python examples/nn_cifar_cnn.py [--cifar] [--epochs 10] [--size 24] [--train-size N]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from symdl import datasets
from symdl.nn import zoo


def colour_digits(size: int = 32, seed: int = 0):
    """((x_train, y_train), (x_test, y_test)): the digits as (n, size, size, 3) float32 colour
    images: a bright stroke of random hue on a dark background of random hue, plus noise."""
    rng = np.random.default_rng(seed)
    scale = size // 8

    def paint(images: np.ndarray) -> np.ndarray:
        mask = np.kron(images.astype(np.float32) / datasets.digits.MAX_PIXEL, np.ones((scale, scale), np.float32))
        fg = rng.uniform(0.6, 1.0, (len(images), 1, 1, 3)).astype(np.float32)
        bg = rng.uniform(0.0, 0.4, (len(images), 1, 1, 3)).astype(np.float32)
        x = bg + (fg - bg) * mask[..., None] + rng.normal(0, 0.05, (*mask.shape, 3)).astype(np.float32)
        return np.clip(x, 0, 1).astype(np.float32)
    (xtr, ytr), (xte, yte) = datasets.digits.load_data()
    return (paint(xtr), ytr.astype(np.int64)), (paint(xte), yte.astype(np.int64))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cifar", action="store_true", help="the real CIFAR-10 (downloaded once)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None, help="Adam's rate (0.001; 0.003 on the stand-in)")
    ap.add_argument("--train-size", type=int, default=None, help="train on the first N images only")
    ap.add_argument("--size", type=int, default=24, choices=(16, 24, 32),
                    help="stand-in image side (24; 32 is CIFAR's, ~2x the time)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    if args.cifar:
        try:
            (xtr, ytr), (xte, yte) = zoo.load_dataset("cifar10", "image")
        except datasets.DownloadError as e:
            raise SystemExit(f"CIFAR-10 is not available: {e}") from e
        name, lr = "CIFAR-10", args.lr or 0.001
    else:
        (xtr, ytr), (xte, yte) = colour_digits(args.size)
        name, lr = "the colour-digits stand-in", args.lr or 0.003  # 1,437 images: few steps per epoch
    if args.train_size:
        xtr, ytr = xtr[:args.train_size], ytr[:args.train_size]
    spec = zoo.get("e1")  # the layers, loss and one-hot targets `symdl train e1` uses
    model = spec.build(xtr.shape[1:], lr=lr)
    model.summary()
    print(f"{name}: {len(xtr)} training and {len(xte)} test images of shape {xtr.shape[1:]}")
    model.fit(xtr, spec.targets(ytr), epochs=args.epochs, batch_size=args.batch_size, verbose=2)
    loss, acc = model.evaluate(xte, spec.targets(yte), batch_size=256, verbose=0)
    print(f"test loss {loss:.4f}, test accuracy {acc:.2%} on {name}; {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
