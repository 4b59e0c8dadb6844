"""`symdl bench`: its NumPy peers compute the same training step as symdl (so the ratios compare
like with like), and the command prints one table row per workload."""
import numpy as np
import pytest

from symdl import bench
from symdl.cli import main


@pytest.mark.parametrize("kind", ["mlp", "linreg", "attention"])
def test_numpy_peers_take_the_same_step_as_symdl(kind):
    model = bench.symdl_model(kind)
    rng = np.random.default_rng(1)
    if kind == "attention":
        x, y = rng.standard_normal((2, 128, 64), dtype=np.float32), rng.integers(0, 10, 2)
        peer = bench.NumpyAttention(model.get_weights())
        weights = lambda: peer.w  # noqa: E731
    elif kind == "linreg":
        x = rng.random((16, 2), dtype=np.float32)
        y = (x @ np.array([[2.0], [-3.0]], np.float32) + 1).astype(np.float32)
        peer = bench.NumpyLinreg(model.get_weights())
        weights = lambda: [peer.w, peer.b]  # noqa: E731
    else:
        x, y = rng.random((8, 784), dtype=np.float32), rng.integers(0, 10, 8)
        peer = bench.NumpyMLP(model.get_weights())
        weights = lambda: peer.w  # noqa: E731
        np.testing.assert_allclose(peer.forward(x)[1], model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)
    for _ in range(3):
        loss = model.train_on_batch(x, y)
        peer_loss = peer.step(x, y)
        np.testing.assert_allclose(loss, peer_loss, rtol=1e-4)
    for got, want in zip(model.get_weights(), weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_symdl_bench_prints_a_row_per_workload(capsys):
    assert main(["bench", "--workloads", "linreg_b100,rnn_b32", "--steps", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| workload | symdl ms | NumPy by hand ms")
    linreg, rnn = (next(line for line in out if line.startswith(f"| {n} |")) for n in ("linreg_b100", "rnn_b32"))
    assert float(linreg.split("|")[2]) > 0 and float(linreg.split("|")[4]) > 0
    assert rnn.split("|")[3].strip() == "-"  # no NumPy peer written for the RNN


def test_symdl_bench_refuses_unknown_workloads(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--workloads", "resnet50"])
    assert "unknown workloads ['resnet50']" in capsys.readouterr().err
