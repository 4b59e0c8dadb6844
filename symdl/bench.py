"""`symdl bench`: training steps of the documents' workloads, symdl next to NumPy written by hand.

    symdl bench                                   every workload, 2 threads, a markdown table
    symdl bench --workloads mlp_small_b32 --threads 1

Each row times one step (forward, loss, backward, optimizer update; float32, synthetic data) as
the median of --steps steps after two warm-up steps: symdl through its Keras contract
(`train_on_batch`, `predict` for inference), and, where one is written here, the same model in
NumPy with hand-written gradients (matrix products through the same BLAS). Workloads without a
NumPy peer show "-". Read ratios from one run, never times across runs: shared machines are noisy.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

# name: (layers, input shape without the batch axis, batch, kind)
WORKLOADS = {
    "mlp_small_b32": ("mlp", (784,), 32, "train"),
    "mlp_small_b128": ("mlp", (784,), 128, "train"),
    "mlp_512_b256": ("mlp512", (784,), 256, "train"),
    "cnn_mnist_b32": ("cnn_mnist", (28, 28, 1), 32, "train"),
    "cnn_cifar_b128": ("cnn_cifar", (32, 32, 3), 128, "train"),
    "rnn_b32": ("rnn", (50, 32), 32, "train"),
    "attention_b32": ("attention", (128, 64), 32, "train"),
    "linreg_b100": ("linreg", (2,), 100, "train"),
    "infer_mlp_small_b1024": ("mlp", (784,), 1024, "infer"),
}
HIDDEN = {"mlp": (64, 64), "mlp512": (512,)}


def symdl_model(kind: str):
    from symdl import nn

    if kind in HIDDEN:
        layers = [nn.Input((784,))] + [nn.Dense(n, activation="relu") for n in HIDDEN[kind]] + [
            nn.Dense(10, activation="softmax")]
    elif kind == "cnn_mnist":
        layers = [nn.Input((28, 28, 1)), nn.Conv2D(32, (3, 3), activation="relu"), nn.MaxPooling2D((2, 2)),
                  nn.Flatten(), nn.Dense(10, activation="softmax")]
    elif kind == "cnn_cifar":
        layers = [nn.Input((32, 32, 3)), nn.Conv2D(32, (3, 3), activation="relu"), nn.MaxPooling2D((2, 2)),
                  nn.Conv2D(64, (3, 3), activation="relu"), nn.MaxPooling2D((2, 2)), nn.Flatten(),
                  nn.Dense(10, activation="softmax")]
    elif kind == "rnn":
        layers = [nn.Input((50, 32)), nn.SimpleRNN(128), nn.Dense(10, activation="softmax")]
    elif kind == "attention":  # one-head self-attention (Keras' projections, no biases), mean over time
        layers = [nn.Input((128, 64)), nn.MultiHeadAttention(1, 64, use_bias=False), nn.GlobalAveragePooling1D(),
                  nn.Dense(10, activation="softmax")]
    else:
        layers = [nn.Input((2,)), nn.Dense(1)]
    model = nn.Sequential(layers, seed=0)
    if kind == "linreg":
        model.compile(optimizer=nn.optimizers.SGD(learning_rate=0.01), loss="mse")
    else:
        model.compile(optimizer=nn.optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
    return model


class NumpyAdam:
    """Adam as Keras and symdl take it (bias-corrected moments, eps outside the square root) over
    the weights `self.w`."""

    def __init__(self, weights: list, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7):
        self.w = [np.array(a) for a in weights]
        self.m = [np.zeros_like(a) for a in self.w]
        self.v = [np.zeros_like(a) for a in self.w]
        self.lr, self.b1, self.b2, self.eps, self.t = lr, beta1, beta2, eps, 0

    def update(self, grads: list) -> None:
        self.t += 1
        for k, gk in enumerate(grads):
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * gk
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * gk * gk
            mhat, vhat = self.m[k] / (1 - self.b1 ** self.t), self.v[k] / (1 - self.b2 ** self.t)
            self.w[k] -= (self.lr * mhat / (np.sqrt(vhat) + self.eps)).astype(self.w[k].dtype)


def softmax_cross_entropy(z, y):
    """(softmax probabilities, the mean sparse cross-entropy (probabilities clipped to 1e-7, as
    Keras), its gradient in the logits z)."""
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    rows = np.arange(len(y))
    loss = -np.log(np.clip(p[rows, y], 1e-7, 1)).mean()
    g = p.copy()
    g[rows, y] -= 1
    return p, loss, g / len(y)


class NumpyMLP(NumpyAdam):
    """Dense layers (relu, then softmax with sparse cross-entropy), Adam; gradients written by hand."""

    def logits(self, x):
        acts = [x]
        for n in range(0, len(self.w) - 2, 2):
            acts.append(np.maximum(acts[-1] @ self.w[n] + self.w[n + 1], 0))
        return acts, acts[-1] @ self.w[-2] + self.w[-1]

    def forward(self, x):
        acts, z = self.logits(x)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return acts, z / z.sum(axis=1, keepdims=True)

    def step(self, x, y):
        acts, z = self.logits(x)
        _, loss, g = softmax_cross_entropy(z, y)
        grads = [None] * len(self.w)
        for n in range(len(self.w) - 2, -1, -2):
            grads[n], grads[n + 1] = acts[n // 2].T @ g, g.sum(axis=0)
            if n:
                g = (g @ self.w[n].T) * (acts[n // 2] > 0)
        self.update(grads)
        return loss


class NumpyAttention(NumpyAdam):
    """bench's attention model: q, k, v = x Wq, x Wk, x Wv; softmax(q kᵀ / sqrt(d)) v; the output
    projection Wo; the mean over time; Dense softmax with sparse cross-entropy; Adam. Weights in
    Keras order (query, key, value, output kernels (one head), dense kernel, bias); gradients
    written by hand, batched products through np.matmul."""

    def forward(self, x):
        wq, wk, wv, wo, wd, bd = self.w
        e, d = wq.shape[0], wq.shape[-1]
        q, k, v = (x @ w.reshape(e, d) for w in (wq, wk, wv))
        s = q @ k.transpose(0, 2, 1) / np.float32(np.sqrt(d))
        a = np.exp(s - s.max(axis=-1, keepdims=True))
        a /= a.sum(axis=-1, keepdims=True)
        o = a @ v
        pooled = (o @ wo.reshape(d, e)).mean(axis=1)
        return (q, k, v, a, o, pooled), pooled @ wd + bd

    def step(self, x, y):
        (q, k, v, a, o, pooled), z = self.forward(x)
        wq, wk, wv, wo, wd, _ = self.w
        e, d, steps = wq.shape[0], wq.shape[-1], x.shape[1]
        _, loss, g = softmax_cross_entropy(z, y)
        g_wd, g_bd = pooled.T @ g, g.sum(axis=0)
        g_y = np.broadcast_to(((g @ wd.T) / np.float32(steps))[:, None, :], o.shape[:2] + (e,))
        g_wo = np.einsum("btd,bte->de", o, g_y).reshape(wo.shape)
        g_o = g_y @ wo.reshape(d, e).T
        g_a, g_v = g_o @ v.transpose(0, 2, 1), a.transpose(0, 2, 1) @ g_o
        g_s = a * (g_a - (g_a * a).sum(axis=-1, keepdims=True)) / np.float32(np.sqrt(d))
        g_q, g_k = g_s @ k, g_s.transpose(0, 2, 1) @ q
        x2 = x.reshape(-1, e)
        grads = [(x2.T @ gi.reshape(-1, d)).reshape(w.shape) for gi, w in ((g_q, wq), (g_k, wk), (g_v, wv))]
        self.update(grads + [g_wo, g_wd, g_bd])
        return loss


class NumpyLinreg:
    """y = x·w + b, mean squared error, plain gradient descent."""

    def __init__(self, weights: list, lr=0.01):
        self.w, self.b, self.lr = np.array(weights[0]), np.array(weights[1]), lr

    def step(self, x, y):
        err = x @ self.w + self.b - y
        loss = float((err ** 2).mean())
        g = 2 * err / err.size
        self.w -= (self.lr * (x.T @ g)).astype(self.w.dtype)
        self.b -= (self.lr * g.sum(axis=0)).astype(self.b.dtype)
        return loss


def data(name: str, rng):
    kind, shape, batch, _ = WORKLOADS[name]
    x = rng.random((batch, *shape), dtype=np.float32)
    if kind == "linreg":
        return x, (x @ np.array([[2.0], [-3.0]], np.float32) + 1).astype(np.float32)
    return x, rng.integers(0, 10, batch)


def steps(name: str):
    """{framework: step function} for one workload, from the same initial weights and data."""
    kind, _, batch, mode = WORKLOADS[name]
    x, y = data(name, np.random.default_rng(0))
    model = symdl_model(kind)
    if mode == "infer":
        out = {"symdl": lambda: model.predict(x, batch_size=batch, verbose=0)}
        if kind in HIDDEN:
            peer = NumpyMLP(model.get_weights())
            out["numpy"] = lambda: peer.forward(x)
        return out
    out = {"symdl": lambda: model.train_on_batch(x, y)}
    peer = NumpyMLP(model.get_weights()) if kind in HIDDEN else \
        NumpyLinreg(model.get_weights()) if kind == "linreg" else \
        NumpyAttention(model.get_weights()) if kind == "attention" else None
    if peer is not None:
        out["numpy"] = lambda: peer.step(x, y)
    return out


def median_ms(fn, n: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def table(names, n: int) -> list[dict]:
    rows = []
    for name in names:
        fns = steps(name)
        times = {k: median_ms(fn, n) for k, fn in fns.items()}  # symdl first: its first steps compile
        rows.append({"workload": name, **times})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="symdl bench", description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=None, help="symdl.set_num_threads (numba and BLAS)")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown or args.steps < 1:
        ap.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}" if unknown else "--steps must be >= 1")
    if args.threads is not None:
        import symdl
        symdl.set_num_threads(args.threads)
    print("| workload | symdl ms | NumPy by hand ms | symdl / NumPy |\n|---|---:|---:|---:|")
    for row in table(names, args.steps):
        peer = row.get("numpy")
        ratio = f"{row['symdl'] / peer:.2f}" if peer else "-"
        print(f"| {row['workload']} | {row['symdl']:.3f} | {f'{peer:.3f}' if peer else '-'} | {ratio} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
