"""The package's shape: imports go down the pipeline, never up or around, and files stay small.

Every import counts, those inside functions too (a late import is still a dependency). The layers,
bottom first, are the ones docs/layout.md describes; a module may import any layer below its own, never
one above (units of one layer may import each other where no cycle results), and never another
unit's private names.
"""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    {"errors", "debug", "version", "files"},  # leaf modules every stage may use
    {"declare"},                               # 1 declare: formulas as values
    {"printing"},                              # SymPy expressions as source, for backends and the host
    {"binding"},                               # argument shapes -> dimensions
    {"reference"},                             # the independent NumPy evaluator and random inputs
    {"autodiff"},                              # 2 differentiate
    {"passes"},                                # 3 transform
    {"loops"},                                 # 4 lower
    {"backends"},                              # 5 generate
    {"runtime"},                               # 6 run
    {"formulas", "datasets"},                  # the catalog and the bundled data
    {"nn"},                                    # 7 models
    {"verify"},                                # verification across all stages
    {"api", "cli", "bench", "launch", "symdl"},  # the verbs, the command line, its bench and MPI launcher, the facade
]
LEVEL = {unit: n for n, units in enumerate(LAYERS) for unit in units}
MAX_LINES = 450


def modules():
    """(unit, dotted module name, path) for every module of the package, the catalog included."""
    for path in sorted((ROOT / "symdl").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        unit = _unit(parts)
        yield unit, ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path
    for path in sorted((ROOT / "formulas").glob("*.py")):
        yield "formulas", "symdl.formulas" + ("" if path.stem == "__init__" else "." + path.stem), path


def _unit(parts) -> str:
    """'symdl' for the facade, else the first name under symdl/ (a package or a module)."""
    return "symdl" if parts == ("symdl", "__init__") else parts[1]


def imports(name: str, path: Path):
    """(imported module, imported names) for every import statement of a module."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module, tuple(a.name for a in node.names)


def targets(module: str, names: tuple) -> list[str]:
    """The units an import reaches: `from symdl import nn` reaches nn, `from symdl import Formula`
    the facade."""
    parts = module.split(".")
    if parts[0] != "symdl":
        return []
    if len(parts) > 1:
        return ["formulas" if parts[1] == "formulas" else parts[1]]
    return [n if n in LEVEL and n != "symdl" else "symdl" for n in names] or ["symdl"]


def edges():
    for unit, name, path in modules():
        for module, names in imports(name, path):
            for target in targets(module, names):
                if target != unit:
                    yield unit, target, name, module, names


def test_every_unit_has_a_layer():
    units = {unit for unit, _, _ in modules()}
    assert units <= set(LEVEL), f"add {sorted(units - set(LEVEL))} to LAYERS (and docs/layout.md)"


def test_imports_go_down_the_pipeline():
    upward = [f"{name} imports {module} ({unit} -> {target})" for unit, target, name, module, _ in edges()
              if LEVEL[target] > LEVEL[unit]]
    assert not upward, "imports that go up the pipeline:\n" + "\n".join(upward)


def test_no_module_imports_another_units_private_names():
    private = [f"{name}: from {module} import {n}" for unit, target, name, module, names in edges()
               for n in names if n.startswith("_") and not re.fullmatch(r"__\w+__", n)]
    private += [f"{name}: import {module}" for unit, target, name, module, _ in edges()
                if any(p.startswith("_") and not p.startswith("__") for p in module.split("."))]
    assert not private, "\n".join(private)


def test_the_unit_graph_has_no_cycle():
    graph: dict[str, set] = {}
    for unit, target, *_ in edges():
        graph.setdefault(unit, set()).add(target)
    state: dict[str, int] = {}

    def visit(node, path):
        if state.get(node) == 1:
            pytest.fail("import cycle: " + " -> ".join(path + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


def test_the_rule_itself_catches_an_upward_import(tmp_path):
    """The checker, run on a planted module: declare importing the runtime inside a function."""
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from ..runtime import Kernel\n    return Kernel\n")
    found = [t for m, n in imports("symdl.declare.planted", planted) for t in targets(m, n)]
    assert found == ["runtime"] and LEVEL["runtime"] > LEVEL["declare"]


def test_no_file_over_the_line_limit():
    sources = [p for p in ROOT.joinpath("symdl").rglob("*.py")] + list(ROOT.joinpath("formulas").glob("*.py"))
    sources += [p for p in ROOT.joinpath("tests").glob("*.py")] + list(ROOT.joinpath("tests_cuda").glob("*.py"))
    long = [f"{p.relative_to(ROOT)}: {n}" for p in sources if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, f"files over {MAX_LINES} lines:\n" + "\n".join(long)


def test_every_package_is_installed():
    """A package missing from pyproject's list works in a checkout and fails after `pip install .`."""
    text = ROOT.joinpath("pyproject.toml").read_text()
    listed = set(re.findall(r'"(symdl(?:\.\w+)*)"', text))
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.joinpath("symdl").rglob("__init__.py")}
    assert packages - listed == set(), f"add {sorted(packages - listed)} to [tool.setuptools] packages"
