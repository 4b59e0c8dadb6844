"""The `symdl` command line: list, show, verify and their exit codes."""
import subprocess
import sys

import symdl
from symdl.cli import main


def test_list_names_every_entry(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in symdl.formulas.names():
        assert name in out


def test_show_prints_formula_gradients_latex_and_source(capsys):
    assert main(["show", "dense_relu"]) == 0
    out = capsys.readouterr().out
    assert "gradient with respect to W" in out and "grad_W" in out
    assert "LaTeX:" in out and "\\sum" in out
    assert "matmul(" in out               # the contraction goes to BLAS (blas.matmul)
    assert "def loops_parallel(" in out    # the activation is a generated loop
    assert "kernel y.relu" in out          # the loop IR


def test_verify_selected_formulas_passes(capsys):
    assert main(["verify", "relu", "sparse_categorical_crossentropy"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 formulas verified" in out


def test_verify_exits_1_on_a_failing_check(capsys, monkeypatch):
    def broken(target, **kwargs):
        raise AssertionError("deliberately wrong")
    monkeypatch.setattr(symdl.verify, "numeric", broken)
    assert main(["verify", "relu"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "deliberately wrong" in out


def test_verify_unknown_name_exits_2(capsys):
    assert main(["verify", "no_such_formula"]) == 2
    assert "no_such_formula" in capsys.readouterr().err


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "symdl.cli", "list"], capture_output=True, text=True)
    assert done.returncode == 0 and "dense" in done.stdout


def test_show_conv2d_prints_its_transposed_convolution_gradient(capsys):
    assert main(["show", "conv2d"]) == 0
    out = capsys.readouterr().out
    assert "gradient with respect to x" in out and "grad_x" in out
    assert "gradient with respect to kernel" in out
    assert "LaTeX:" in out and "\\sum" in out
    assert "def loops_serial(" in out and "kernel[" in out   # the generated source


def test_show_step_prints_an_example_models_generated_training_step(capsys):
    assert main(["show", "e3", "--step"]) == 0
    out = capsys.readouterr().out
    assert "def step(x, t, S, N, H, P):" in out
    assert "# y.dense" in out and "# sgd_update" in out and "H['lr']" in out
    assert main(["show", "no_such_model", "--step"]) == 2
    assert "unknown example model" in capsys.readouterr().err


def test_show_backend_cuda_prints_the_gpu_source_without_numba_cuda(capsys):
    """`symdl show NAME --backend cuda`: the numba.cuda.jit modules (an embedding's gradient with its
    atomic adds); an optimizer step's fused module on either backend; printing imports no numba.cuda."""
    loaded = {m for m in sys.modules if m.startswith(("numba.cuda", "numba_cuda"))}
    assert main(["show", "embedding", "--backend", "cuda"]) == 0
    out = capsys.readouterr().out
    assert "(cuda backend)" in out and "cuda.atomic.add(grad_E, (tok[b, s], d), grad_out[b, s, d])" in out
    assert "@nb.njit" not in out
    assert {m for m in sys.modules if m.startswith(("numba.cuda", "numba_cuda"))} == loaded
    assert main(["show", "adam_update"]) == 0
    out = capsys.readouterr().out
    assert "adam_update, fused (float32)" in out and "-> m_new[N], v_new[N], w_new[N]" in out


def test_show_a_recurrence_prints_its_adjoint_once_and_every_gradient(capsys):
    """A recurrence's gradients are Programs (the adjoint recurrence, then the gradient): `show` once
    crashed lowering the Program itself."""
    assert main(["show", "rnn_states"]) == 0
    out = capsys.readouterr().out
    assert out.count("loop IR and generated source: rnn_tanh_states.bptt ") == 1
    for w in ("W", "R", "bias", "x"):
        assert f"loop IR and generated source: rnn_tanh_states.vjp.{w} " in out
