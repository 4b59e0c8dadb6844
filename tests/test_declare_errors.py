"""Bad declarations raise symdl.FormulaError naming the formula and the offending term.

Every case builds a small formula that is wrong in exactly one way; the error must be a
FormulaError (a ValueError), carry the formula's name, and name the index, tensor or term at
fault so that the author can find it. Valid neighbours (broadcasting, affine reads, gathers)
are checked to be accepted, so the checks do not simply refuse everything.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import sympy as sp

import symdl
from symdl import FormulaError, Formula, Program

B, N, M, L, K, C = sp.symbols("B N M L K C", integer=True, positive=True)
i, j, k = sp.Idx("i", B), sp.Idx("j", M), sp.Idx("k", N)
x, W, b, y, z = (sp.IndexedBase(n) for n in "x W b y z".split())


def raises_formula_error(build, name: str, *terms: str) -> FormulaError:
    """`build()` must raise FormulaError for formula `name`; the message must name every term
    (whole words for plain identifiers, so index `k` is not found inside another word)."""
    with pytest.raises(FormulaError) as info:
        build()
    err = info.value
    assert isinstance(err, ValueError)
    msg = str(err)
    assert err.formula == name
    assert repr(name) in msg, f"formula name {name!r} missing from: {msg}"
    for term in terms:
        pattern = rf"(?<![\w.]){re.escape(term)}(?![\w])" if term.isidentifier() else re.escape(term)
        assert re.search(pattern, msg), f"{term!r} missing from: {msg}"
    return err


def test_formula_error_is_a_value_error():
    assert issubclass(FormulaError, ValueError)
    assert symdl.FormulaError is FormulaError


# -- free indices --------------------------------------------------------------------------------

def test_free_index_on_right_not_on_left():
    err = raises_formula_error(lambda: Formula(sp.Eq(y[i], x[i, k]), name="free_k"), "free_k", "k")
    assert "free" in str(err) or "left side" in str(err)


def test_free_index_with_declared_shape():
    # with x's shape declared, nothing else stops k being taken for a scalar input named "k"
    xs = sp.IndexedBase("x", shape=(B, N))
    err = raises_formula_error(lambda: Formula(sp.Eq(y[i], xs[i, k]), name="free_decl"), "free_decl", "k")
    assert "free" in str(err) or "left side" in str(err)


def test_free_index_on_a_second_tensor():
    err = raises_formula_error(lambda: Formula(sp.Eq(y[i], x[i] * b[j]), name="free_j"), "free_j", "j")
    assert "free" in str(err) or "left side" in str(err)


def test_free_index_next_to_a_sum_over_it():
    build = lambda: Formula(sp.Eq(y[i], x[i, k] * sp.Sum(x[i, k], k)), name="free_and_summed")  # noqa: E731
    raises_formula_error(build, "free_and_summed", "k")


# -- sums ----------------------------------------------------------------------------------------

def test_sum_reuses_a_summed_index():
    build = lambda: Formula(sp.Eq(y[i], sp.Sum(x[i, k] * sp.Sum(W[k, j], k), k)), name="reuse")  # noqa: E731
    err = raises_formula_error(build, "reuse", "k")
    assert "scope" in str(err)


def test_sum_reuses_an_output_index():
    build = lambda: Formula(sp.Eq(y[i, k], sp.Sum(x[i, k], k)), name="reuse_out")  # noqa: E731
    raises_formula_error(build, "reuse_out", "k")


# -- index expressions ---------------------------------------------------------------------------

@pytest.mark.parametrize("position, text", [
    (lambda: i * i, "i**2"),
    (lambda: i * k, "i*k"),
    (lambda: sp.floor(i / 2), "floor(i/2)"),
    (lambda: 2 ** i, "2**i"),
])
def test_non_affine_index_expression(position, text):
    xs = sp.IndexedBase("x", shape=(N,))
    build = lambda: Formula(sp.Eq(y[i], sp.Sum(xs[position()] * W[i, k], k)), name="nonaffine")  # noqa: E731
    err = raises_formula_error(build, "nonaffine", text)
    assert "affine" in str(err)


def test_float_tensor_used_as_an_index():
    # b is a float tensor: b[i] as a position must be refused, saying how to declare b as integer
    build = lambda: Formula(sp.Eq(y[i], W[i, b[i]]), name="float_gather")  # noqa: E731
    err = raises_formula_error(build, "float_gather", "b[i]")
    assert "integer=True" in str(err), f"the message should say to declare b integer: {err}"


def test_integer_tensor_as_index_is_accepted():
    t = sp.IndexedBase("t", integer=True)
    p = sp.IndexedBase("p", shape=(B, C))
    f = Formula(sp.Eq(y[i], p[i, t[i]]), name="gather")
    assert {tt.name: tt.integer for tt in f.inputs} == {"p": False, "t": True}


# -- functions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fn, shown", [(sp.gamma, "gamma"), (sp.erfc, "erfc"), (sp.asin, "asin"),
                                       (sp.loggamma, "loggamma")])
def test_unsupported_function(fn, shown):
    err = raises_formula_error(lambda: Formula(sp.Eq(y[i], fn(x[i])), name="unsupported"),
                               "unsupported", shown)
    assert "unsupported" in str(err).split(":", 1)[1]


def test_unsupported_function_inside_a_sum():
    build = lambda: Formula(sp.Eq(y[i], sp.Sum(sp.erfc(x[i, k]), k)), name="sum_erfc")  # noqa: E731
    raises_formula_error(build, "sum_erfc", "erfc")


# -- index declarations --------------------------------------------------------------------------

def test_index_declared_with_two_ranges():
    i_n = sp.Idx("i", N)
    build = lambda: Formula(sp.Eq(y[i], x[i] * sp.Sum(W[i_n], i_n)), name="two_ranges")  # noqa: E731
    raises_formula_error(build, "two_ranges", "i", "B - 1", "N - 1")


def test_index_declared_with_two_ranges_on_both_sides():
    build = lambda: Formula(sp.Eq(y[sp.Idx("i", B)], x[sp.Idx("i", N)]), name="two_ranges_lr")  # noqa: E731
    raises_formula_error(build, "two_ranges_lr", "i", "B - 1", "N - 1")


def test_output_index_plain_symbol():
    s = sp.Symbol("i", integer=True)
    err = raises_formula_error(lambda: Formula(sp.Eq(y[s], x[s]), name="sym_out"), "sym_out", "i")
    assert "Idx" in str(err)


def test_output_index_expression():
    err = raises_formula_error(lambda: Formula(sp.Eq(y[i + 1], x[i]), name="expr_out"), "expr_out", "i + 1")
    assert "Idx" in str(err)


def test_output_index_without_range():
    raises_formula_error(lambda: Formula(sp.Eq(y[sp.Idx("i")], x[sp.Idx("i")]), name="no_range"),
                         "no_range", "i")


def test_output_index_repeated():
    ii = sp.Idx("i", N)
    raises_formula_error(lambda: Formula(sp.Eq(y[ii, ii], x[ii]), name="diag"), "diag", "i")


def test_output_range_not_starting_at_zero():
    i1 = sp.Idx("i", (1, N))
    err = raises_formula_error(lambda: Formula(sp.Eq(y[i1], x[i1]), name="from_one"), "from_one", "i")
    assert "0" in str(err) and "1" in str(err)


def test_index_named_like_an_input_tensor():
    xi = sp.Idx("x", B)
    raises_formula_error(lambda: Formula(sp.Eq(y[xi], x[xi]), name="idx_x"), "idx_x", "x")


def test_index_named_like_the_output():
    yi = sp.Idx("y", B)
    raises_formula_error(lambda: Formula(sp.Eq(y[yi], x[yi]), name="idx_y"), "idx_y", "y")


# -- shapes and dimensions -----------------------------------------------------------------------

def test_axis_length_unknown_from_affine_read_only():
    m, io = sp.Idx("m", K), sp.Idx("i", L - K + 1)
    build = lambda: Formula(sp.Eq(y[io], sp.Sum(W[m] * x[io + m], m)), name="conv_noshape")  # noqa: E731
    err = raises_formula_error(build, "conv_noshape", "x")
    assert "shape" in str(err)


def test_affine_read_with_declared_shape_is_accepted():
    m, io = sp.Idx("m", K), sp.Idx("i", L - K + 1)
    xs = sp.IndexedBase("x", shape=(L,))
    f = Formula(sp.Eq(y[io], sp.Sum(W[m] * xs[io + m], m)), name="conv")
    assert {t.name: t.shape for t in f.inputs} == {"W": (K,), "x": (L,)}


def test_dimension_no_input_carries_is_given_at_call_time():
    # issue 11: a length no input carries is the caller's (dims=); without it the call names it
    im = sp.Idx("i", M)
    kern = Formula(sp.Eq(y[im], sp.Sum(x[k], k)), name="unbound_M").compile()
    with pytest.raises(ValueError, match=r"dimension M .* dims=\{'M'"):
        kern(x=np.ones(3))
    np.testing.assert_allclose(kern(x=np.arange(3.0), dims={"M": 4}), np.full(4, 3.0))


def test_dimension_only_in_a_sum_limit_is_given_at_call_time():
    km = sp.Idx("k", M)
    kern = Formula(sp.Eq(y[i], x[i] * sp.Sum(sp.Integer(1), km)), name="unbound_sum").compile()
    with pytest.raises(ValueError, match="dimension M"):
        kern(x=np.ones(3))
    np.testing.assert_allclose(kern(x=np.arange(3.0), dims={"M": 5}), 5 * np.arange(3.0))


def test_tensor_read_with_two_ranks():
    build = lambda: Formula(sp.Eq(y[i], sp.Sum(x[i, k] + x[k], k)), name="two_ranks")  # noqa: E731
    err = raises_formula_error(build, "two_ranks", "x")
    assert "rank" in str(err)


# -- the equation itself -------------------------------------------------------------------------

def test_output_read_on_the_right():
    raises_formula_error(lambda: Formula(sp.Eq(y[i], x[i] + y[i]), name="self_read"), "self_read", "y")


def test_scalar_output_read_on_the_right():
    Ls = sp.Symbol("L")
    build = lambda: Formula(sp.Eq(Ls, sp.Sum(x[k], k) + Ls), name="self_scalar")  # noqa: E731
    raises_formula_error(build, "self_scalar", "L")


@pytest.mark.parametrize("bad", [
    lambda: y[i] - x[i],
    lambda: sp.Lt(y[i], x[i]),
    lambda: "y[i] = x[i]",
])
def test_not_an_equation(bad):
    err = raises_formula_error(lambda: Formula(bad(), name="not_eq"), "not_eq")
    assert "Eq" in str(err)


def test_left_side_not_a_tensor():
    raises_formula_error(lambda: Formula(sp.Eq(y[i] + 1, x[i]), name="lhs_sum"), "lhs_sum", "y[i] + 1")


# -- broadcasting is valid -----------------------------------------------------------------------

def test_broadcast_row_vector_is_accepted_and_computes():
    ii, jj = sp.Idx("i", B), sp.Idx("j", M)
    f = Formula(sp.Eq(y[ii, jj], x[ii, jj] + b[jj]), name="bias_bcast")
    assert {t.name: t.shape for t in f.inputs} == {"x": (B, M), "b": (M,)}
    rng = np.random.default_rng(0)
    xv, bv = rng.standard_normal((4, 3)), rng.standard_normal(3)
    np.testing.assert_allclose(f.compile()(x=xv, b=bv), xv + bv[None, :], rtol=1e-12)


def test_broadcast_both_operands_is_accepted_and_computes():
    ii, jj = sp.Idx("i", B), sp.Idx("j", M)
    f = Formula(sp.Eq(y[ii, jj], x[ii] * b[jj]), name="outer_bcast")
    rng = np.random.default_rng(1)
    xv, bv = rng.standard_normal(5), rng.standard_normal(2)
    np.testing.assert_allclose(f.compile()(x=xv, b=bv), np.outer(xv, bv), rtol=1e-12)


# -- programs ------------------------------------------------------------------------------------

def _ew(out, src, name):
    ii = sp.Idx("i", N)
    return Formula(sp.Eq(sp.IndexedBase(out)[ii], sp.exp(sp.IndexedBase(src)[ii])), name=name)


def test_program_two_formulas_produce_one_tensor():
    build = lambda: Program([_ew("h", "x", "first"), _ew("h", "z", "second")], name="dup")  # noqa: E731
    err = raises_formula_error(build, "dup", "h")
    assert isinstance(err, ValueError)


def test_program_cycle():
    build = lambda: Program([_ew("h", "g", "f1"), _ew("g", "h", "f2")], name="loop")  # noqa: E731
    err = raises_formula_error(build, "loop", "h", "g")
    assert "cycle" in str(err)


def test_program_output_not_produced():
    build = lambda: Program([_ew("h", "x", "f1"), _ew("o", "h", "f2")], name="prog", outputs=["nope"])  # noqa: E731
    raises_formula_error(build, "prog", "nope")


def test_program_valid_chain_is_accepted_and_computes():
    prog = Program([_ew("h", "x", "f1"), _ew("o", "h", "f2")], name="chain")
    assert prog.input_names == ("x",) and prog.outputs == ("o",)
    xv = np.linspace(-1.0, 1.0, 5)
    np.testing.assert_allclose(prog.compile()(x=xv), np.exp(np.exp(xv)), rtol=1e-12)
