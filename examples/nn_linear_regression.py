"""E3 of docs/catalog.md (a PyTorch example in the source article): linear regression 2 -> 1 with MSE and
SGD at lr 0.01 for 1000 epochs, loss printed per epoch (every 100th here), then the test loss.
The document's code used an undefined `linear`; this is what it meant, as a symdl.nn model.

    python examples/nn_linear_regression.py [--epochs 1000]
"""
from __future__ import annotations

import argparse
import time

from symdl import nn
from symdl.nn import zoo


class PrintEvery(nn.Callback):
    def __init__(self, every: int):
        super().__init__()
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            print(f"epoch {epoch + 1:4d}  loss {logs['loss']:.6f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=1000)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    ((xtr, ytr), (xte, yte)), (true_w, true_b) = zoo.regression_data()  # the data `symdl train e3` uses

    model = nn.Sequential([nn.Input((2,)), *zoo.e3_layers((2,))], seed=0)
    model.compile(optimizer=nn.optimizers.SGD(learning_rate=0.01), loss="mse")
    model.fit(xtr, ytr, epochs=args.epochs, batch_size=len(xtr), verbose=0, shuffle=False,
              callbacks=[PrintEvery(max(args.epochs // 10, 1))])
    W, b = model.get_weights()
    print(f"learned w = {W.ravel().astype(float).round(3).tolist()}, b = {b.astype(float).round(3).tolist()} "
          f"(true {true_w.ravel().tolist()}, {true_b})")
    print(f"test loss {model.evaluate(xte, yte, verbose=0):.6f}; {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
