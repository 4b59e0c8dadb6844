"""Index expressions evaluated on the host: loop bounds for binding checks and trip counts, printed
once by the same printer the kernels use, so host and kernel agree on every `//`."""
from __future__ import annotations

import sympy as sp

from .expressions import Printer
from .names import py_name


def python_function(expr, names, dims=(), condition: bool = False):
    """An index expression (or an index condition) as a plain Python function of `names`, printed
    once: binding checks and trip counts evaluate bounds at Python speed, with exact `//`."""
    printer = Printer(dims)
    text = printer.cond(expr) if condition else printer.index(sp.sympify(expr))
    fn = eval(f"lambda {', '.join(py_name(str(n)) for n in names)}: {text}",  # noqa: S307 (our own printer's output)
              {"max": max, "min": min})
    renamed = {str(n): py_name(str(n)) for n in names if py_name(str(n)) != str(n)}
    if not renamed:
        return fn
    # keyword calls (binding) use the formula's names: map the few py_name changed (max -> max_)
    return lambda *args, **kw: fn(*args, **{renamed.get(k, k): v for k, v in kw.items()})
