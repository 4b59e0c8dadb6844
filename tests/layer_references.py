"""NumPy references (float64, Keras semantics) of the layers tests/test_layer_matrix.py trains."""
import itertools

import numpy as np


def same_pads(n: int, k: int, stride: int, dilation: int, padding: str) -> tuple[int, int, int]:
    """(output length, padding before, padding after); "same" puts the odd one at the end."""
    span = dilation * (k - 1) + 1
    if padding == "valid":
        return (n - span) // stride + 1, 0, 0
    out = -(-n // stride)
    total = max((out - 1) * stride + span - n, 0)
    return out, total // 2, total - total // 2


def conv_numpy(x, K, b, strides, padding, dilation):
    (kh, kw, _, co), (sh, sw), (dh, dw) = K.shape, strides, dilation
    oh, pt, pb = same_pads(x.shape[1], kh, sh, dh, padding)
    ow, pl, pr = same_pads(x.shape[2], kw, sw, dw, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = np.zeros((x.shape[0], oh, ow, co))
    for u, v in itertools.product(range(kh), range(kw)):
        patch = xp[:, dh * u:dh * u + sh * (oh - 1) + 1:sh, dw * v:dw * v + sw * (ow - 1) + 1:sw]
        y += patch @ K[u, v]
    return y + (0 if b is None else b)


def pool_numpy(x, kind, pool, strides, padding):
    (ph, pw), (sh, sw) = pool, strides
    oh, pt, pb = same_pads(x.shape[1], ph, sh, 1, padding)
    ow, pl, pr = same_pads(x.shape[2], pw, sw, 1, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=np.nan)  # padding never counts
    reduce = np.nanmax if kind == "max" else np.nanmean
    return np.stack([np.stack([reduce(xp[:, i * sh:i * sh + ph, j * sw:j * sw + pw], axis=(1, 2))
                               for j in range(ow)], 1) for i in range(oh)], 1)


def activation_numpy(z, name):
    if name in (None, "linear"):
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1 / (1 + np.exp(-z))
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def rnn_numpy(x, W, R, b, act, return_sequences):
    h, hs = np.zeros((x.shape[0], W.shape[1])), []
    for t in range(x.shape[1]):
        h = activation_numpy(x[:, t] @ W + h @ R + b, act)
        hs.append(h)
    return np.stack(hs, 1) if return_sequences else h


def masked_softmax(s, causal):
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    return activation_numpy(s, "softmax")


def attention_numpy(x, w, causal):
    scale = w[0] if w else 1.0
    return masked_softmax(scale * x @ x.transpose(0, 2, 1), causal) @ x


def mha_numpy(x, w, causal, use_bias):
    Wq, bq, Wk, bk, Wv, bv, Wo, bo = w if use_bias else (w[0], 0, w[1], 0, w[2], 0, w[3], 0)
    q, k, v = (np.einsum("bte,ehd->bhtd", x, W) + (b[:, None] if use_bias else 0)
               for W, b in ((Wq, bq), (Wk, bk), (Wv, bv)))
    A = masked_softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(Wq.shape[-1]), causal)
    return np.einsum("bhtd,hde->bte", A @ v, Wo) + bo


def additive_numpy(x, w, causal):
    W, R, bias, vec = w
    scores = np.tanh((x @ W)[:, :, None] + (x @ R)[:, None] + bias) @ vec
    return masked_softmax(scores, causal) @ x
