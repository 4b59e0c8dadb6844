"""F17 tensor operations: elementwise arithmetic, transpose, broadcasting, gathers.

`flat_elementwise` (not an entry) is the 1-D add and multiply that symdl.nn runs on reshaped
tensors (gradient accumulation, dropout masks).
"""
import sympy as sp

from symdl.declare import Formula

from . import entry
from .common import B, N, idx

i, j = idx("i", B), idx("j", N)
x, y, z, b = (sp.IndexedBase(n) for n in "x y z b".split())

OPS = {"add": lambda a, c: a + c, "sub": lambda a, c: a - c, "mul": lambda a, c: a * c,
       "div": lambda a, c: a / c}


def elementwise(op: str) -> Formula:
    """z[i, j] = x[i, j] ∘ y[i, j]."""
    domains = {"y": (0.5, 1.5)} if op == "div" else None
    return Formula(sp.Eq(z[i, j], OPS[op](x[i, j], y[i, j])), name=op, domains=domains)


def flat_elementwise(op: str, a: str = "a", b: str = "b", out: str = "y") -> Formula:
    """out[i] = a[i] ∘ b[i] on flat vectors (callers reshape)."""
    flat = idx("i", N)
    lhs, rhs = sp.IndexedBase(a)[flat], sp.IndexedBase(b)[flat]
    return Formula(sp.Eq(sp.IndexedBase(out)[flat], OPS[op](lhs, rhs)), name=f"vec_{op}")


def transpose() -> Formula:
    """z[j, i] = x[i, j]."""
    return Formula(sp.Eq(z[j, i], x[i, j]), name="transpose")


def broadcast_add() -> Formula:
    """z[i, j] = x[i, j] + b[j]: b is broadcast along the rows."""
    return Formula(sp.Eq(z[i, j], x[i, j] + b[j]), name="broadcast_add")


def outer() -> Formula:
    """z[i, j] = x[i] y[j]: both operands broadcast."""
    return Formula(sp.Eq(z[i, j], x[i] * y[j]), name="outer")


for _op in OPS:
    entry(_op, "F17", f"elementwise {_op}")(lambda o=_op: elementwise(o))
entry("transpose", "F17", "transpose")(transpose)
entry("broadcast_add", "F17", "row-broadcast addition")(broadcast_add)
entry("outer", "F17", "outer product by broadcasting")(outer)


def embedding() -> Formula:
    """out[b, s, d] = E[tok[b, s], d]: a gather by an integer tensor (an embedding lookup); its
    gradient for E is a scatter-add (loops/scatter.py), at the lookup's cost."""
    Bt, S, V, D = sp.symbols("B S V D", integer=True, positive=True)
    bi, s, d = idx("b", Bt), idx("s", S), idx("d", D)
    E, tok, out = sp.IndexedBase("E", shape=(V, D)), sp.IndexedBase("tok", integer=True), sp.IndexedBase("out")
    return Formula(sp.Eq(out[bi, s, d], E[tok[bi, s], d]), name="embedding",
                   sizes={"B": 2, "S": 3, "V": 4, "D": 2})


entry("embedding", "F17", "gather rows by integer ids (embedding); gradient by scatter-add")(embedding)
