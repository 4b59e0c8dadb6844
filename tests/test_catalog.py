"""Every catalog formula passes the three checks: symbolic, numeric (float64), reference vs cpu."""
import pytest

import symdl
from symdl import formulas

NAMES = formulas.names()


@pytest.mark.parametrize("name", NAMES)
def test_symbolic(name):
    assert symdl.verify.symbolic(formulas.get(name)) > 0


@pytest.mark.parametrize("name", NAMES)
def test_numeric(name):
    assert symdl.verify.numeric(formulas.get(name)) < 1e-6


@pytest.mark.parametrize("name", NAMES)
def test_backends(name):
    assert symdl.verify.backends(formulas.get(name)) < 2e-4


def test_catalog_covers_the_first_part_of_seeds():
    refs = {e.ref for e in formulas.entries()}
    assert {"F1", "F2", "F3", "F11", "F12", "F13", "F15", "F16", "F17"} <= refs


def test_unknown_entry_names_the_known_ones():
    with pytest.raises(KeyError, match="dense"):
        formulas.get("no_such_formula")
