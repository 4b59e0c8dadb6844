"""F7/F8 of docs/catalog.md (additive and scaled dot-product attention) with symdl.nn: digit images as
sequences of rows, self-attention over the rows (in a Sequential model query = value = key = the
previous layer's output), then Flatten and Dense(10, softmax).

    python examples/nn_attention.py [--mnist] [--epochs 15] [--kind mha|dot|additive] [--causal]

--kind mha: Dense(32) row embedding -> MultiHeadAttention(4 heads, key_dim 8) (default);
--kind dot: Dense(32) -> Attention(use_scale=True) (Keras' dot-product layer, no projections);
--kind additive: Dense(32) -> AdditiveAttention (Bahdanau scores, F7).
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
    ap.add_argument("--kind", choices=("mha", "dot", "additive"), default="mha")
    ap.add_argument("--causal", action="store_true", help="each row attends to the rows above it only")
    ap.add_argument("--lr", type=float, default=0.003)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    (xtr, ytr), (xte, yte) = load(args.mnist, images=True)
    xtr, xte = xtr[..., 0], xte[..., 0]  # (n, rows, columns): a sequence of row vectors
    # Dense(32, relu) acts on the last axis (a row embedding), then self-attention over the rows
    model = nn.Sequential([nn.Input(xtr.shape[1:]), *zoo.attention_layers(xtr.shape[1:], args.kind, args.causal)],
                          seed=0)
    model.compile(optimizer=nn.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.summary()
    model.fit(xtr, ytr, epochs=args.epochs, batch_size=32, validation_data=(xte, yte), verbose=1)
    loss, acc = model.evaluate(xte, yte, verbose=0)
    print(f"{args.kind} self-attention{' (causal)' if args.causal else ''} over {xtr.shape[1]} rows: "
          f"test loss {loss:.4f}, test accuracy {acc:.2%}; {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
