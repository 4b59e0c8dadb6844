"""Keras' sample and class weights: one weight per sample, the weighted batch loss
mean_i(w_i * loss_i), and its gradient (row i of the upstream gradient scaled by w_i)."""
from __future__ import annotations

import numpy as np

from .device import to_device, to_host


def sample_weights(where: str, y: np.ndarray, sample_weight, class_weight) -> np.ndarray | None:
    """One float32 weight per sample from `sample_weight` (shape (n,) or (n, 1)) or `class_weight`
    ({class: weight}; the class of a sample is its integer label, or the argmax of a one-hot
    row; classes not named weigh 1), or None. Both at once is refused, as in Keras 3."""
    if sample_weight is None and class_weight is None:
        return None
    if sample_weight is not None and class_weight is not None:
        raise ValueError(f"{where}: give sample_weight or class_weight, not both")
    n = len(y)
    if class_weight is not None:
        if not isinstance(class_weight, dict):
            raise ValueError(f"{where}: class_weight must be a dict {{class: weight}}, got "
                             f"{type(class_weight).__name__}")
        if y.ndim > 1 and y.shape[-1] > 1:
            if y.ndim != 2:
                raise ValueError(f"{where}: class_weight needs one label or one one-hot row per sample, "
                                 f"got y of shape {y.shape}")
            labels = np.argmax(y, axis=-1)
        else:
            labels = np.rint(np.asarray(y, dtype=np.float64)).astype(np.int64).reshape(n)
        table = {int(c): float(v) for c, v in class_weight.items()}
        sample_weight = np.array([table.get(int(c), 1.0) for c in labels])
        where = f"{where}: class_weight"
    else:
        where = f"{where}: sample_weight"
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "fiub" or w.shape not in ((n,), (n, 1)):
        raise ValueError(f"{where} must hold one number per sample, shape ({n},), got "
                         f"{w.dtype} {w.shape}")
    w = w.reshape(n).astype(np.float32)
    if not np.isfinite(w).all():
        raise ValueError(f"{where} holds NaN or inf values")
    return w


def weighted_loss(loss, y: np.ndarray, out, w: np.ndarray) -> float:
    """mean_i(w_i * loss_i): the loss kernels give batch means, so the samples are grouped by
    weight (few groups with class_weight) and each group's mean is weighted by its size."""
    out = to_host(out)
    total = 0.0
    for value in np.unique(w):
        if value == 0:
            continue
        rows = np.flatnonzero(w == value)
        total += float(value) * len(rows) * float(loss(y[rows], np.ascontiguousarray(out[rows])))
    return total / len(w)


def scale_rows(grad, w: np.ndarray):
    """grad[i, ...] * w[i] (the upstream gradient of sample i), on the host or the device."""
    host = to_host(grad)
    scaled = (host * w.reshape(-1, *([1] * (host.ndim - 1)))).astype(host.dtype, copy=False)
    if host is grad:
        return scaled
    return to_device(np.ascontiguousarray(scaled))
