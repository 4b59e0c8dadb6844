"""The identifiers generated source uses for user names, and user text made safe for comments.

Every backend's module defines the same few names (`F`, `run`, helpers starting with `_`, functions
ending in `_serial`/`_kernel`...); `py_name` keeps user names off them, one to one.
"""
from __future__ import annotations

import builtins
import keyword
import re
import unicodedata

# names generated modules (cpu and cuda) define or call; py_name keeps user names off them. The
# generator's helpers and locals start with '_' (_exp, _t_); its functions match GENERATED
RESERVED = frozenset({"F", "np", "nb", "math", "cuda", "run", "parallel", "float32_frexp_exponent",
                      "float32_frexp_mantissa", "float32_ldexp", "RED_THREADS", "launch_grid",
                      "matmul_grid", "reduction_blocks", "split_chunks", "contract", "fp_mode", "set_fp_mode"}
                     | set(dir(builtins)) | set(keyword.kwlist) | set(keyword.softkwlist))
GENERATED = re.compile(r"\w*_(?:serial|parallel|kernel|partial|final|split|join)|matmul\d*|MM_\w*")


def py_name(name: str) -> str:
    """The identifier generated source uses for a tensor, scalar, index or dimension name.

    One to one on identifiers, and never a name the module defines: a name reserved up to its
    trailing '_' gets one more (np -> np_, np_ -> np__), a name starting with '_' gets '_u'
    (_exp -> _exp_u), any other is itself. Declarations accept only identifiers
    (declare/names.py); anything else is made one ('C_{in}' -> 'C__in_'), not one to one."""
    if not (name.isidentifier() and unicodedata.normalize("NFKC", name) == name):
        name = "".join(ch if ("a" + ch).isidentifier() else "_" for ch in unicodedata.normalize("NFKC", name))
        name = name if name.isidentifier() else "_" + name  # empty, or a leading digit
    if name.startswith("_"):
        return name + "_u"
    base = name.rstrip("_")
    return name + "_" if base in RESERVED or GENERATED.fullmatch(base) else name


def comment(text: str) -> str:
    """User text (a formula's name or text) made safe for a `#` comment: every character that is
    not printable is escaped, so nothing (\\n, \\r, \\x0c, \\u2028, NUL) can end the comment early
    or trip the tokenizer."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in str(text))
