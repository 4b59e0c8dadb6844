"""`symdl train`: the documents' example models from the command line (no network: data sets other
than the bundled digits are monkeypatched)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest

from symdl import datasets
from symdl.cli import TRAIN_EXAMPLES, main
from symdl.nn import zoo


def test_the_cli_offers_every_zoo_model():  # the CLI lists them without importing symdl.nn
    assert TRAIN_EXAMPLES == tuple(zoo.names())


def test_e3_linear_regression_prints_epochs_and_test_loss(capsys):
    assert main(["train", "e3", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "e3: E3 linear regression" in out and "SGD lr 0.01" in out
    assert re.search(r"Epoch 1/2 - .*loss: \d", out) and re.search(r"Epoch 2/2 - .*loss: \d", out)
    assert re.search(r"test loss: \d+\.\d+; 2 epochs in", out)
    assert "learned w = " in out


def test_default_trains_e5_on_digits(capsys):
    assert main(["train", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("e5: E5 MNIST CNN")
    assert "data: digits, 1438 training and 359 test samples of shape (8, 8, 1)" in out
    assert len(re.findall(r"Epoch \d/2 - .*accuracy: ", out)) == 2
    acc = float(re.search(r"test accuracy: ([\d.]+)%", out).group(1))
    assert acc > 80  # after two epochs (the full default, 10 epochs, reaches >= 95 %: docs/nn.md)


def test_mnist_shaped_data_through_a_patched_loader(monkeypatch, capsys):
    rng = np.random.default_rng(0)

    def fake_load_data():  # MNIST's shapes and dtypes: uint8 (n, 28, 28), labels uint8 (n,)
        y = rng.integers(0, 10, 96).astype(np.uint8)
        x = (rng.random((96, 28, 28)) * 40 + y[:, None, None] * 20).astype(np.uint8)
        return (x[:64], y[:64]), (x[64:], y[64:])
    monkeypatch.setattr(datasets.mnist, "load_data", fake_load_data)
    assert main(["train", "e2", "--dataset", "mnist", "--epochs", "1", "--batch-size", "16"]) == 0
    out = capsys.readouterr().out
    assert "data: mnist, 64 training and 32 test samples of shape (784,)" in out and "batch 16" in out
    assert "test accuracy: " in out


def test_download_failure_is_reported(monkeypatch, capsys):
    def offline():
        raise datasets.DownloadError("could not download cifar-10-binary.tar.gz; put it in /somewhere")
    monkeypatch.setattr(datasets.cifar10, "load_data", offline)
    assert main(["train", "e1", "--dataset", "cifar10"]) == 1
    assert "could not download cifar-10-binary.tar.gz" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "e9"], "unknown example 'e9'; choose one of e1, e2, e3, e4, e5"),
    (["train", "e2", "--dataset", "imagenet"], "unknown data set 'imagenet'"),
    (["train", "e3", "--dataset", "mnist"], "--dataset does not apply"),
    (["train", "e2", "--epochs", "0"], "--epochs must be at least 1"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_example_from_the_command_line_exits_2():
    proc = subprocess.run([sys.executable, "-m", "symdl.cli", "train", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown example 'nope'" in proc.stderr and not proc.stdout


def test_plot_without_matplotlib_is_refused_before_training(monkeypatch, tmp_path, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["train", "e3", "--plot", str(tmp_path / "curves.png")]) == 2
    captured = capsys.readouterr()
    assert "pip install 'symdl[plot]'" in captured.err and "Epoch" not in captured.out
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_plot_writes_the_curves(tmp_path, capsys):
    path = tmp_path / "curves.png"
    assert main(["train", "e3", "--epochs", "3", "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(path) in capsys.readouterr().out
