"""The names a formula declares: tensors, scalars, indices and dimensions.

Each becomes an identifier in generated source (a parameter, a loop variable), so a declaration
accepts only names that are Python identifiers as written (not keywords, NFKC-normal: Python reads
`ℌ` as `H`), that keep clear of the names symdl generates (a leading `_`, or `__` anywhere), and
that are distinct across roles within one formula (a scalar `a` beside an index `a` would be read
as the index). Names that merely equal something a generated module defines (`np`, `run`,
`loops_serial`) are fine: the printer maps them to other identifiers (printing/names.py).
The formula's own name is free text: it only ever reaches generated source escaped.
"""
from __future__ import annotations

import keyword
import unicodedata

from ..errors import FormulaError

ROLES = ("tensor", "scalar", "index", "dimension")


def spelling_problem(name) -> str | None:
    """Why `name` cannot name a tensor, scalar, index or dimension; None when it can."""
    if not isinstance(name, str) or not name.isidentifier():
        return "is not a Python identifier; use letters, digits and '_', not starting with a digit"
    if keyword.iskeyword(name):
        return "is a Python keyword; choose another name"
    normal = unicodedata.normalize("NFKC", name)
    if normal != name:
        return f"is read by Python as {normal!r} (Unicode compatibility form); write {normal!r} instead"
    if name.startswith("_") or "__" in name:
        return "starts with '_' or contains '__'; such names are kept for the names symdl generates"
    return None


def check_spelling(formula: str, role: str, names) -> None:
    """FormulaError for the first of `names` that cannot name a `role`."""
    for name in names:
        problem = spelling_problem(name)
        if problem:
            raise FormulaError(formula, f"{role} name {name!r} {problem}")


def check_distinct(formula: str, named: dict) -> None:
    """`named` maps each role to its names; FormulaError where one name has two roles."""
    seen: dict = {}
    for role in ROLES:
        for name in named.get(role, ()):
            other = seen.setdefault(name, role)
            if other != role:
                hint = _HINTS.get(frozenset((role, other)), "")
                raise FormulaError(formula, f"{other} {name!r} and {role} {name!r} have the same name; "
                                            f"in generated code one would hide the other: rename one "
                                            f"of them{hint}")


_HINTS = {
    frozenset(("scalar", "dimension")): " (or, to use the length itself, write the dimension's own "
                                        "symbol, sympy.Symbol(name, integer=True, positive=True))",
    frozenset(("scalar", "index")): " (or, to use the index's value, write the index itself)",
}
