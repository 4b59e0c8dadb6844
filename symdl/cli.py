"""The `symdl` command: list, show and verify the catalog.

    symdl list                 the catalog, with the SEEDS.md formula each entry implements
    symdl show dense_relu      formula, derived gradients (pretty and LaTeX), loop IR, source
    symdl verify [NAME ...]    symbolic, numeric and backend checks; exit 1 on any failure
"""
from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="symdl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the catalog")
    show = sub.add_parser("show", help="print a formula, its gradients and its generated code")
    show.add_argument("name")
    show.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    verify = sub.add_parser("verify", help="verify catalog formulas (all when no name is given)")
    verify.add_argument("names", nargs="*")
    verify.add_argument("--backend", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args(argv)
    return {"list": _list, "show": _show, "verify": _verify}[args.command](args)


def _catalog():
    from symdl import formulas
    return formulas


def _list(args) -> int:
    for e in _catalog().entries():
        print(f"{e.name:34s} {e.ref:4s} {e.summary}")
    return 0


def _show(args) -> int:
    from symdl.loops import format_ir, lower
    formulas = _catalog()
    try:
        target = formulas.get(args.name)
    except KeyError as err:
        print(err.args[0], file=sys.stderr)
        return 2
    parts = list(getattr(target, "formulas", [target]))
    stability = getattr(target, "stability", None)
    if stability is not None:  # the catalog registers its entries through symdl.passes.stabilize
        _section("stability rewrites (proven equal by symdl.verify.equivalent)")
        for rewrite in stability.rewrites:
            print(f"  {rewrite}")
    for f in parts:
        _section(f"formula {f.name}")
        print(f.pretty())
        print(f"\nLaTeX: {f.latex()}")
        for name, g in f.vjp().items():
            _section(f"gradient with respect to {name}: {g.name}")
            print(g.pretty())
            print(f"\nLaTeX: {g.latex()}")
    for f in parts:
        for g in [f, *f.vjp().values()]:
            _section(f"loop IR and generated source: {g.name} ({args.dtype})")
            print(format_ir(lower(g)))
            print()
            print(g.compile().source(args.dtype))
    return 0


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 72 - len(title)))


def _verify(args) -> int:
    import symdl
    formulas = _catalog()
    names = args.names or formulas.names()
    unknown = [n for n in names if n not in formulas.names()]
    if unknown:
        print(f"unknown catalog formula(s): {', '.join(unknown)}; see `symdl list`", file=sys.stderr)
        return 2
    header = f"{'formula':34s} {'ref':4s} {'symbolic':>10s} {'numeric':>10s} {'backends':>10s} {'time':>7s}  result"
    print(header)
    print("-" * len(header))
    refs = {e.name: e.ref for e in formulas.entries()}
    failed = 0
    for name in names:
        start = time.perf_counter()
        target = formulas.get(name)
        cells, error = [], None
        checks = (("symbolic", lambda: f"{symdl.verify.symbolic(target)} el"),
                  ("numeric", lambda: f"{symdl.verify.numeric(target, backend=args.backend):.1e}"),
                  ("backends", lambda: f"{symdl.verify.backends(target, backend=args.backend):.1e}"))
        for label, run in checks:
            if error is not None:
                cells.append("-")
                continue
            try:
                cells.append(run())
            except Exception as err:  # report every failure, keep going through the catalog
                cells.append("FAIL")
                error = f"{label}: {type(err).__name__}: {err}"
        failed += error is not None
        result = "ok" if error is None else "FAILED"
        print(f"{name:34s} {refs[name]:4s} {cells[0]:>10s} {cells[1]:>10s} {cells[2]:>10s} "
              f"{time.perf_counter() - start:6.1f}s  {result}", flush=True)
        if error:
            print(f"    {error}", flush=True)
    print(f"\n{len(names) - failed} of {len(names)} formulas verified"
          f"{'' if not failed else f', {failed} failed'}.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
