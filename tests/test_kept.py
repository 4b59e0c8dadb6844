"""Lowered programs and generated source kept between processes (runtime/kept.py): what a warm
process reads back must be what lowering and printing give, for every kind of formula."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_random_formulas import build_contraction, build_window, contraction_specs, window_specs

import formulas
from symdl.backends import get as get_backend
from symdl.backends.cpu.backend import CpuBackend
from symdl.loops.ir import format_ir
from symdl.loops.lower import lower
from symdl.runtime import cache, kept


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMDL_CACHE_DIR", str(tmp_path / "cache"))
    s = cache.DerivedStore(kept.STAGES)
    monkeypatch.setattr(kept, "STORE", s)
    return s


def _read_back_as_made(f):
    """Lower and print through the store twice: the second time reads the files the first wrote,
    and must give the program and the source that lowering and printing give now."""
    cpu = get_backend("cpu")
    for row_reductions in (True, False):
        fresh = lower(f, row_reductions=row_reductions)
        first = kept.lowered(f, row_reductions)
        again = kept.lowered(f, row_reductions)
        assert again is not first  # read from the file, not this process's object
        assert again == fresh and format_ir(again) == format_ir(fresh), (f.name, row_reductions)
    for dtype in ("float32", "float64"):
        want = cpu.generate(lower(f, row_reductions=cpu.row_reductions), dtype, "v")
        assert kept.printed(cpu, kept.lowered(f, cpu.row_reductions), dtype, "v") == want
        assert kept.printed(cpu, kept.lowered(f, cpu.row_reductions), dtype, "v") == want  # from the file


CATALOG = ["dense_relu", "conv2d_same_strided", "max_pool2d", "average_pool2d_same", "softmax",
           "sparse_categorical_crossentropy_logits", "multi_head_attention", "adam_update", "rnn_tanh", "lstm",
           "embedding", "logsumexp"]


@pytest.mark.parametrize("name", CATALOG)
def test_catalog_formulas_and_gradients_read_back_as_made(store, name):
    built = formulas.get(name)
    for f in getattr(built, "formulas", None) or [built]:
        _read_back_as_made(f)
        if f.recurrence is None:
            for g in f.vjp().values():
                for h in getattr(g, "formulas", None) or [g]:
                    _read_back_as_made(h)


@settings(max_examples=10, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(st.one_of(contraction_specs().map(build_contraction), window_specs().map(build_window)))
def test_random_formulas_read_back_as_made(store, f):
    _read_back_as_made(f)


def _one(name):
    built = formulas.get(name)
    return (getattr(built, "formulas", None) or [built])[0]


def test_edited_code_lowers_afresh(store, tmp_path):
    f = _one("dense_relu")
    kept.lowered(f, True)
    assert len(list((tmp_path / "cache").glob("symdl_derived_*.pkl"))) == 1
    store._code = "an edited lowering"  # what a change to loops/, passes/, backends/ ... gives
    kept.lowered(f, True)
    assert len(list((tmp_path / "cache").glob("symdl_derived_*.pkl"))) == 2


def test_another_backends_source_is_never_kept(store, tmp_path):
    """A backend outside symdl prints with code the store's hash does not cover."""
    class Mine(CpuBackend):
        name = "mine"
    f, mine = _one("dense_relu"), Mine()
    program = kept.lowered(f, mine.row_reductions)
    before = set((tmp_path / "cache").glob("symdl_derived_*.pkl"))
    assert kept.printed(mine, program, "float32", "v") == mine.generate(program, "float32", "v")
    assert set((tmp_path / "cache").glob("symdl_derived_*.pkl")) == before
