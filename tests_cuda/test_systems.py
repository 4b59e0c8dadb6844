"""Recurrences of issue 11 on cuda (the simulator here): a neighbour read of an earlier step, and
the LSTM and GRU systems (one kernel stepping every state, the adjoint system backwards), forward
and gradients against the cpu kernels, at 20 steps."""
import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import formulas


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def test_a_neighbour_read_of_an_earlier_step_runs_on_cuda():
    T, N = sp.symbols("T N", integer=True, positive=True)
    t, i = sp.Idx("t", T), sp.Idx("i", N)
    Y, x, y0 = sp.IndexedBase("Y"), sp.IndexedBase("x"), sp.IndexedBase("y0")
    f = symdl.Formula(sp.Eq(Y[t, i], Y[t - 1, i] + x[t, i] * Y[t - 1, i - 1]), name="nb", initial={"Y": y0})
    rng = np.random.default_rng(0)
    a = {"x": rng.uniform(-1, 1, (20, 4)), "y0": rng.uniform(-1, 1, 4)}
    cpu, gpu = f.compile(), f.compile(backend="cuda")
    np.testing.assert_allclose(_host(gpu(**a)), cpu(**a), atol=1e-12)
    G = rng.normal(size=(20, 4))
    want, got = cpu.vjp(G, **a), gpu.vjp(G, **a)
    for n in a:
        np.testing.assert_allclose(_host(got[n]), want[n], atol=1e-10, err_msg=n)


@pytest.mark.parametrize("name,gates,biases", [("lstm", 4, (4,)), ("gru", 3, (2, 3))])
def test_gated_systems_on_cuda_match_the_cpu(name, gates, biases):
    b, t, k, h = 2, 20, 3, 4
    rng = np.random.default_rng(1)
    a = {"x": rng.normal(size=(b, t, k)), "W": rng.normal(size=(k, gates, h)) * 0.5,
         "U": rng.normal(size=(h, gates, h)) * 0.4, "bias": rng.normal(size=(*biases, h)) * 0.2,
         "h0": rng.normal(size=(b, h)) * 0.5}
    if name == "lstm":
        a["c0"] = rng.normal(size=(b, h)) * 0.5
    prog = formulas.get(name)
    cpu, gpu = prog.compile(), prog.compile(backend="cuda")
    np.testing.assert_allclose(_host(gpu(**a)), cpu(**a), atol=1e-12)
    G = rng.normal(size=(b, t, h))
    want, got = cpu.vjp(G, **a), gpu.vjp(G, **a)
    for n in a:
        np.testing.assert_allclose(_host(got[n]), want[n], atol=1e-10, err_msg=n)


@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
def test_gated_layers_train_on_the_device_as_on_the_cpu(layer):
    """compile(device="cuda"): device arrays through the system kernels and the adjoint program."""
    from symdl import nn
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=6)

    def run(device):
        cell = nn.LSTM(4) if layer == "LSTM" else nn.GRU(4, return_sequences=True)
        tail = [nn.Flatten()] if layer == "GRU" else []
        model = nn.Sequential([nn.Input((5, 3)), cell, *tail, nn.Dense(2, activation="softmax")], seed=1)
        model.compile(optimizer=nn.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", device=device)
        hist = model.fit(x, y, batch_size=3, epochs=2, verbose=0)
        return hist.history["loss"], model.get_weights()

    (cpu_loss, cpu_w), (gpu_loss, gpu_w) = run("cpu"), run("cuda")
    np.testing.assert_allclose(gpu_loss, cpu_loss, rtol=1e-4)
    for a, b in zip(gpu_w, cpu_w, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
