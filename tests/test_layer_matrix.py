"""Every symdl.nn layer over its options (issue 8): strides were once tested without activations
and activations without strides, and `Conv2D(4, 3, strides=2, activation="relu")` failed.

Each case builds a tiny model [Input, Dense probe, layer] (batch 2, 6x5 images, 2 channels),
sets every weight to random float64 values, and runs one training step through the model's own
machinery: `forward` with a tape, the loss's `value_and_grad`, the tape's `backward` and the
optimizer's `apply` (the steps of `Trainer._step`; `train_on_batch` casts to float32, so the
float64 step is spelled out here). It checks

* every weight's gradient against central differences of the model's own loss (float64); the
  probe's gradient passes through the layer's input gradient, so that is checked too;
* the layer's output against NumPy written here (Keras semantics: "same" padding puts the extra
  row/column at the end, "same" pooling clips windows to the image);
* the step: SGD's w - lr g.

Options a layer refuses raise a ValueError naming the option (`test_refused_options`).

Cost: every distinct formula compiles once (float64), ~1-5 s on a busy core. Options that
change a compiled formula (conv geometry, pooling windows) are crossed pairwise in CI: every pair
of option values appears together in some case. Options that only select an already compiled
formula (the activation stage) are crossed fully with those. `SYMDL_FUZZ=1` runs the full cross
product.
"""
from __future__ import annotations

import itertools
import math
import os

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import nn

from layer_references import (activation_numpy, additive_numpy, attention_numpy, conv_numpy, mha_numpy,
                              pool_numpy, rnn_numpy)

FULL = bool(os.environ.get("SYMDL_FUZZ"))
ACTIVATIONS = [None, "relu", "tanh", "sigmoid", "softmax"]
IMAGE = (6, 5, 2)  # non-square, so a swapped height and width shows
LR = 0.1


def pairwise(factors: dict, valid=lambda case: True, cost=lambda case: 0) -> list[dict]:
    """Valid cases such that every pair of option values (of two factors) that occurs in some valid
    case occurs in a chosen one: greedy from every starting case, the shortest list kept, then an
    exhaustive search for a shorter one (of least total `cost`) where that is cheap
    (deterministic). With FULL, every valid case."""
    names = list(factors)
    cases = [dict(zip(names, values, strict=True)) for values in itertools.product(*factors.values())]
    cases = [c for c in cases if valid(c)]
    if FULL:
        return cases
    pairs = [{(a, repr(c[a]), b, repr(c[b])) for a, b in itertools.combinations(names, 2)} for c in cases]
    best: list[int] = list(range(len(cases)))
    for start in range(len(cases)):
        chosen, todo = [start], set().union(*pairs) - pairs[start]
        while todo:
            n = max(range(len(cases)), key=lambda n: len(pairs[n] & todo))
            chosen.append(n)
            todo -= pairs[n]
        best = min(best, chosen, key=len)
    every = set().union(*pairs)
    sizes = sorted(len(v) for v in factors.values())
    for k in range(sizes[-1] * sizes[-2] if len(sizes) > 1 else 1, len(best)):
        if math.comb(len(cases), k) > 20_000:
            break
        found = [c for c in itertools.combinations(range(len(cases)), k)
                 if set().union(*(pairs[n] for n in c)) == every]
        if found:
            best = list(min(found, key=lambda c: sum(cost(cases[n]) for n in c)))
            break
    return [cases[n] for n in best]


def case_id(case: dict) -> str:
    return "-".join(f"{k}={v}" for k, v in case.items())


# -- one float64 training step through the model, and finite differences of its loss ---------------

def make_model(layer, input_shape, seed=0):
    """[Input, Dense probe (linear, bias), layer] with every weight random float64."""
    model = nn.Sequential([nn.Input(input_shape), nn.Dense(input_shape[-1], name="probe"), layer], seed=0)
    model.compile(optimizer=nn.optimizers.SGD(LR), loss="mse")
    model.build()
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.value = np.array(rng.normal(0, 0.5, v.shape), dtype=np.float64)
    return model


def forward(model, x):
    """(the layer's output, its input: the probe's output), copied, in inference mode."""
    probe, layer = model.layers
    h = probe.call(x)[0].copy()
    return layer.call(h)[0].copy(), h


def check_step(model, x, reset=lambda: None, eps=1e-6) -> None:
    """One float64 training step; every gradient against central differences of the loss."""
    reset()
    tape: list = []
    out = model.forward(x, training=True, tape=tape)
    y = np.random.default_rng(1).normal(size=out.shape)
    loss, grad = model.loss.value_and_grad(y, out)
    grads = model.backward(tape, grad)
    assert len(grads) == len(model.weights) and all(g.dtype == np.float64 for g in grads)

    def model_loss():
        reset()
        return model.loss(y, model.forward(x, training=True))
    assert model_loss() == pytest.approx(loss, rel=1e-12)
    for v, g in zip(model.weights, grads, strict=True):
        assert g.shape == v.shape, v.name
        numeric = np.zeros(v.shape)
        for i in np.ndindex(v.shape):
            old = v.value[i]
            v.value[i] = old + eps
            up = model_loss()
            v.value[i] = old - eps
            down = model_loss()
            v.value[i] = old
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8, err_msg=f"gradient of {v.name}")
    before = [v.value.copy() for v in model.weights]
    model.optimizer.apply(model.trainable_weights, grads)
    for v, w, g in zip(model.weights, before, grads, strict=True):
        np.testing.assert_allclose(v.value, w - LR * g, rtol=1e-12, atol=1e-15, err_msg=v.name)


def image(seed=2):
    return np.random.default_rng(seed).normal(size=(2, *IMAGE))


# -- Conv2D ------------------------------------------------------------------------------------------

def _conv_valid(c):
    return not (max(np.atleast_1d(c["strides"])) > 1 and max(np.atleast_1d(c["dilation_rate"])) > 1)


# CI: kernel sizes 1 and (3, 2) (a 3 and a non-square size in one: "same" pads 1 + 1 rows and
# 0 + 1 columns, the odd one at the end); SYMDL_FUZZ adds 3 and (2, 3)
KERNEL_SIZES = [1, 3, (2, 3), (3, 2)] if FULL else [1, (3, 2)]
CONV_GEOMETRY = pairwise({"kernel_size": KERNEL_SIZES, "strides": [1, 2], "dilation_rate": [1, 2],
                          "padding": ["valid", "same"], "use_bias": [True, False]}, _conv_valid)
CONV_CASES = [{**g, "activation": a} for g in CONV_GEOMETRY for a in ACTIVATIONS]


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d(case):
    layer = nn.Conv2D(2, **case)
    model = make_model(layer, IMAGE)
    x = image()
    out, h = forward(model, x)
    b = layer.bias.value if case["use_bias"] else None
    z = conv_numpy(h, layer.kernel.value, b, layer.strides, case["padding"], layer.dilation_rate)
    np.testing.assert_allclose(out, activation_numpy(z, case["activation"]), rtol=1e-10, atol=1e-12)
    assert out.shape[1:] == model.output_shape
    assert layer.kernel.shape == (*layer.kernel_size, IMAGE[-1], 2)
    check_step(model, x)


# -- pooling -----------------------------------------------------------------------------------------

# CI: strides None (the window: 2, or (3, 2) non-square) and 1 (overlapping windows); the
# derivation of a clipped ("same") window's gradient is the costliest here, so 4 cases cover the pairs
POOL_CASES = pairwise({"kind": ["max", "average"], "pool_size": [2, 3, (3, 2)] if FULL else [2, (3, 2)],
                       "strides": [None, 1, 2, (1, 2)] if FULL else [None, 1],
                       "padding": ["valid", "same"]}, cost=lambda c: c["padding"] == "same")


@pytest.mark.parametrize("case", POOL_CASES, ids=case_id)
def test_pooling(case):
    kind, options = case["kind"], {k: v for k, v in case.items() if k != "kind"}
    layer = (nn.MaxPooling2D if kind == "max" else nn.AveragePooling2D)(**options)
    model = make_model(layer, IMAGE)
    x = image()
    out, h = forward(model, x)
    np.testing.assert_allclose(out, pool_numpy(h, kind, layer.pool_size, layer.strides, case["padding"]),
                               rtol=1e-12, atol=1e-12)
    assert out.shape[1:] == model.output_shape
    check_step(model, x)


def test_global_average_pooling_2d():
    model = make_model(nn.GlobalAveragePooling2D(), IMAGE)
    x = image()
    out, h = forward(model, x)
    np.testing.assert_allclose(out, h.mean(axis=(1, 2)), rtol=1e-12, atol=1e-12)
    assert model.output_shape == (IMAGE[-1],)
    check_step(model, x)


def test_global_average_pooling_1d():
    model = make_model(nn.GlobalAveragePooling1D(), (7, 3))
    x = np.random.default_rng(2).normal(size=(2, 7, 3))
    out, h = forward(model, x)
    np.testing.assert_allclose(out, h.mean(axis=1), rtol=1e-12, atol=1e-12)
    assert model.output_shape == (3,)
    check_step(model, x)


# -- Dense, Activation, Flatten, Dropout ---------------------------------------------------------------

@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense(activation, use_bias):
    layer = nn.Dense(3, activation=activation, use_bias=use_bias)
    model = make_model(layer, (4,))
    x = np.random.default_rng(2).normal(size=(2, 4))
    out, h = forward(model, x)
    z = h @ layer.kernel.value + (layer.bias.value if use_bias else 0)
    np.testing.assert_allclose(out, activation_numpy(z, activation), rtol=1e-12, atol=1e-12)
    check_step(model, x)


def test_dense_on_sequences():
    """Dense acts on the last axis of (batch, time, features), as Keras."""
    layer = nn.Dense(3, activation="tanh")
    model = make_model(layer, (3, 4))
    x = np.random.default_rng(2).normal(size=(2, 3, 4))
    out, h = forward(model, x)
    np.testing.assert_allclose(out, np.tanh(h @ layer.kernel.value + layer.bias.value), rtol=1e-12)
    check_step(model, x)


@pytest.mark.parametrize("activation", ["linear", *ACTIVATIONS[1:]])
def test_activation(activation):
    model = make_model(nn.Activation(activation), IMAGE)
    x = image()
    out, h = forward(model, x)
    np.testing.assert_allclose(out, activation_numpy(h, activation), rtol=1e-12, atol=1e-12)
    check_step(model, x)


def test_flatten():
    model = make_model(nn.Flatten(), IMAGE)
    x = image()
    out, h = forward(model, x)
    np.testing.assert_array_equal(out, h.reshape(2, -1))
    assert model.output_shape == (int(np.prod(IMAGE)),)
    check_step(model, x)


@pytest.mark.parametrize("rate", [0.0, 0.5])
def test_dropout(rate):
    """Deterministic here: the layer's generator is reseeded before every forward pass, so the
    finite differences see the mask the gradient used."""
    layer = nn.Dropout(rate, seed=3)
    model = make_model(layer, IMAGE)
    x = image()

    def reset():
        layer.rng = np.random.default_rng(3)
    out, h = forward(model, x)
    np.testing.assert_array_equal(out, h)  # the identity at inference
    reset()
    kept = np.random.default_rng(3).random(h.shape) >= rate
    out = layer.call(h, training=True)[0]
    np.testing.assert_allclose(out, np.where(kept, h / (1 - rate), 0), rtol=1e-15)
    assert rate == 0 or 0 < kept.mean() < 1
    check_step(model, x, reset)


# -- SimpleRNN ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_simple_rnn(activation, return_sequences, use_bias):
    layer = nn.SimpleRNN(3, activation=activation, return_sequences=return_sequences, use_bias=use_bias)
    model = make_model(layer, (4, 2))
    x = np.random.default_rng(2).normal(size=(2, 4, 2))
    out, h = forward(model, x)
    b = layer.bias.value if use_bias else np.zeros(3)
    ref = rnn_numpy(h, layer.kernel.value, layer.recurrent_kernel.value, b, activation, return_sequences)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert len(layer.weights) == 2 + use_bias
    check_step(model, x)


# -- attention (self-attention in a model) ----------------------------------------------------------

SEQ = (4, 3)  # (time, features)


def sequence():
    return np.random.default_rng(2).normal(size=(2, *SEQ))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_scale", [False, True])
def test_attention(use_scale, causal):
    layer = nn.Attention(use_scale=use_scale, causal=causal)
    model = make_model(layer, SEQ)
    x = sequence()
    out, h = forward(model, x)
    np.testing.assert_allclose(out, attention_numpy(h, [v.value for v in layer.weights], causal), rtol=1e-12)
    check_step(model, x)


MHA_CASES = pairwise({"num_heads": [1, 2], "key_dim": [1, 2], "use_bias": [True, False],
                      "causal": [False, True]})


@pytest.mark.parametrize("case", MHA_CASES, ids=case_id)
def test_multi_head_attention(case):
    layer = nn.MultiHeadAttention(**case)
    model = make_model(layer, SEQ)
    x = sequence()
    out, h = forward(model, x)
    ref = mha_numpy(h, [v.value for v in layer.weights], case["causal"], case["use_bias"])
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    check_step(model, x)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("units", [None, 2])
def test_additive_attention(units, causal):
    layer = nn.AdditiveAttention(units=units, causal=causal)
    model = make_model(layer, SEQ)
    x = sequence()
    out, h = forward(model, x)
    np.testing.assert_allclose(out, additive_numpy(h, [v.value for v in layer.weights], causal), rtol=1e-10)
    assert layer.weights[0].shape == (SEQ[-1], units or SEQ[-1])
    check_step(model, x)


# -- FormulaLayer --------------------------------------------------------------------------------------

def test_formula_layer():
    """A user formula with a parameter and a constant (test_nn_layers.py's, so CI compiles it once)."""
    B, N, M = sp.symbols("B N M", integer=True, positive=True)
    i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
    x, W, y = sp.IndexedBase("x"), sp.IndexedBase("W"), sp.IndexedBase("y")
    f = symdl.Formula(sp.Eq(y[i, j], sp.tanh(sp.Symbol("alpha") * sp.Sum(x[i, k] * W[k, j], k))),
                      name="scaled_tanh")
    layer = nn.FormulaLayer(f, params={"W": ("he_uniform", (4, 3))}, constants={"alpha": 0.5})
    model = make_model(layer, (4,))
    xv = np.random.default_rng(2).normal(size=(2, 4))
    out, h = forward(model, xv)
    np.testing.assert_allclose(out, np.tanh(0.5 * h @ layer.vars["W"].value), rtol=1e-12)
    check_step(model, xv)


# -- options a layer refuses ---------------------------------------------------------------------------

REFUSED = [
    (lambda: nn.Conv2D(2, 3, strides=2, dilation_rate=2), "dilation_rate"),
    (lambda: nn.Conv2D(2, 3, strides=(1, 2), dilation_rate=(2, 1)), "dilation_rate"),
    (lambda: nn.Conv2D(2, 3, padding="full"), "padding"),
    (lambda: nn.Conv2D(2, 0), "kernel_size"),
    (lambda: nn.Conv2D(2, (3, 3, 3)), "kernel_size"),
    (lambda: nn.Conv2D(2, "3"), "kernel_size"),
    (lambda: nn.Conv2D(2, 3, padding=None), "padding"),
    (lambda: nn.Conv2D(2, 3, strides=0), "strides"),
    (lambda: nn.Conv2D(0, 3), "filters"),
    (lambda: nn.Conv2D(2, 3, activation="gelu"), "activation"),
    (lambda: nn.MaxPooling2D(0), "pool_size"),
    (lambda: nn.AveragePooling2D(2, strides=(1, 0)), "strides"),
    (lambda: nn.MaxPooling2D(2, padding="causal"), "padding"),
    (lambda: nn.Dense(0), "units"),
    (lambda: nn.Dense(3, activation="swish"), "activation"),
    (lambda: nn.Activation("gelu"), "activation"),
    (lambda: nn.Dropout(1.0), "rate"),
    (lambda: nn.SimpleRNN(0), "units"),
    (lambda: nn.SimpleRNN(3, activation="sigmoid"), "activation"),
    (lambda: nn.Attention(score_mode="concat"), "score_mode"),
    (lambda: nn.MultiHeadAttention(2, 3, value_dim=4), "value_dim"),
    (lambda: nn.MultiHeadAttention(0, 3), "num_heads"),
    (lambda: nn.MultiHeadAttention(2, 0), "key_dim"),
    (lambda: nn.AdditiveAttention(units=0), "units"),
]


@pytest.mark.parametrize("make,option", REFUSED, ids=[o for _, o in REFUSED])
def test_refused_options(make, option):
    with pytest.raises(ValueError, match=option):
        make()


BUILD_REFUSED = [  # shapes the options do not fit: refused when the model is built
    (lambda: nn.Conv2D(2, 7), (6, 5, 2), "kernel"),
    (lambda: nn.Conv2D(2, 3, dilation_rate=3), (6, 5, 2), "dilation"),
    (lambda: nn.MaxPooling2D(6), (6, 5, 2), "window"),
    (lambda: nn.Conv2D(2, 3), (6, 5), "height, width, channels"),
    (lambda: nn.SimpleRNN(2), (6, 5, 2), "time, features"),
    (lambda: nn.Attention(), (5,), "time, features"),
    (lambda: nn.GlobalAveragePooling1D(), (6, 5, 2), "steps, features"),
    (lambda: nn.GlobalAveragePooling2D(), (6, 5), "height, width, channels"),
]


@pytest.mark.parametrize("make,shape,message", BUILD_REFUSED, ids=[m for *_, m in BUILD_REFUSED])
def test_refused_shapes(make, shape, message):
    model = nn.Sequential([nn.Input(shape), make()])
    with pytest.raises(ValueError, match=message):
        model.build()
