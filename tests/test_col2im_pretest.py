"""passes/col2im.py's pre-test: it rejects a formula before the contraction search runs again only
where the full matcher finds nothing, over every catalog formula and its gradients."""
import pytest

from symdl import formulas
from symdl.declare import Program
from symdl.formulas.conv import conv2d
from symdl.passes import col2im


def _catalog():
    for name in formulas.names():
        made = formulas.get(name)
        members = made.formulas if isinstance(made, Program) else [made]
        for f in members:
            yield f
            if f.recurrence is None and f.body.has(col2im.Sum):  # the gradients with sums to match
                yield from f.vjp().values()


def test_the_pretest_rejects_only_what_the_matcher_rejects(monkeypatch):
    cases = list(_catalog())
    rejected = [f for f in cases if not col2im._may_match(f.body)]
    assert rejected and len(rejected) < len(cases)  # it decides both ways
    monkeypatch.setattr(col2im, "_may_match", lambda body: True)
    for f in rejected:
        assert col2im.extract_col2im(f) is None, f


@pytest.mark.parametrize("options", [{}, {"strides": (2, 2)}, {"padding": "same"}, {"dilation": (2, 2)}])
def test_a_convolution_input_gradient_passes_the_pretest_and_matches(options):
    grad_x = conv2d(**options).vjp(["x"])["x"]
    assert col2im._may_match(grad_x.body) and col2im.extract_col2im(grad_x) is not None
