"""The digits training example: its gradients and updates against NumPy, and short runs that learn."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "train_digits.py"


@pytest.fixture(scope="module")
def td():
    spec = importlib.util.spec_from_file_location("train_digits_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.fixture(scope="module")
def data(td):
    return td.load_digits()


def numpy_loss_and_grads(model, params, x, t):
    """Softmax cross-entropy and its gradients, written out by hand in float64."""
    p64 = {n: v.astype(np.float64) for n, v in params.items()}
    x = x.astype(np.float64)
    if model == "mlp":
        a = x @ p64["W1"] + p64["b1"]
        h = np.maximum(a, 0.0)
        z = h @ p64["W2"] + p64["b2"]
    else:
        z = x @ p64["W"] + p64["b"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    rows = np.arange(len(t))
    loss = -np.log(p[rows, t]).mean()
    dz = p.copy()
    dz[rows, t] -= 1.0
    dz /= len(t)
    if model == "logreg":
        return loss, {"W": x.T @ dz, "b": dz.sum(0)}
    da = (dz @ p64["W2"].T) * (a > 0)
    return loss, {"W2": h.T @ dz, "b2": dz.sum(0), "W1": x.T @ da, "b1": da.sum(0)}


@pytest.mark.parametrize("model", ["logreg", "mlp"])
def test_loss_and_gradients_match_numpy(td, data, model):
    (xtr, ttr), _ = data
    program, shapes = td.build_program(model)
    step = program.vjp(wrt=list(shapes)).compile()
    params = td.glorot_init(shapes, np.random.default_rng(1))
    for name in params:  # nonzero biases so their gradients flow through every path
        if params[name].ndim == 1:
            params[name] += np.float32(0.1)
    x, t = xtr[:50], ttr[:50]
    env = step.run(x=x, t=t, grad_L=1.0, **params)
    loss, grads = numpy_loss_and_grads(model, params, x, t)
    np.testing.assert_allclose(float(env["L"]), loss, rtol=1e-5)
    for name, g in grads.items():
        assert env[f"grad_{name}"].dtype == np.float32
        np.testing.assert_allclose(env[f"grad_{name}"], g, rtol=1e-4, atol=1e-6)
    # The ProgramKernel.vjp entry point gives the same gradients.
    via_vjp = program.compile().vjp(np.float32(1.0), x=x, t=t, **params)
    for name, g in grads.items():
        np.testing.assert_allclose(via_vjp[name], g, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_optimizer_steps_match_numpy(td, momentum):
    rng = np.random.default_rng(2)
    params = {"W": rng.standard_normal((4, 3)).astype(np.float32),
              "b": rng.standard_normal(3).astype(np.float32)}
    start = {n: v.copy() for n, v in params.items()}
    grads = [{n: rng.standard_normal(v.shape).astype(np.float32) for n, v in params.items()}
             for _ in range(2)]
    opt = td.Optimizer(lr=0.1, momentum=momentum)
    for g in grads:
        opt.step(params, g)
    for n in params:
        v, w = np.zeros_like(start[n], dtype=np.float64), start[n].astype(np.float64)
        for g in grads:
            v = momentum * v - 0.1 * g[n]
            w = w + v
        assert params[n].shape == start[n].shape and params[n].dtype == np.float32
        np.testing.assert_allclose(params[n], w, rtol=1e-5, atol=1e-6)


def test_logreg_learns_with_plain_sgd(td, data):
    result = td.train("logreg", data, epochs=4, lr=0.5, momentum=0.0, seed=0, log=None)
    assert result.final_acc >= 0.90
    assert result.train_loss[-1] < 0.5 * result.train_loss[0]
    assert all(b < a for a, b in zip(result.train_loss, result.train_loss[1:]))
    assert result.test_loss[-1] < result.test_loss[0]


def test_mlp_learns_with_momentum(td, data):
    lines = []
    result = td.train("mlp", data, epochs=4, seed=0, log=lines.append)
    assert result.final_acc >= 0.90
    assert result.train_loss[-1] < 0.5 * result.train_loss[0]
    assert len(lines) == 4 and "test acc" in lines[-1]
    assert set(result.params) == {"W1", "b1", "W2", "b2"}


def test_cli_runs_and_reports(td, capsys):
    assert td.main(["--model", "logreg", "--epochs", "2", "--lr", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "epoch   2/2" in out and "logreg: final test accuracy" in out and "total time" in out
