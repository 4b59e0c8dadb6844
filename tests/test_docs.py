"""The documentation runs as pasted, and cites only what the repository ships.

Every fenced ```python block of README.md and docs/*.md runs offline on the bundled data. Each
block runs on its own, in a fresh namespace (the docs are written so that every block is complete:
its imports, its data, its model), all of them in one child process whose working folder is a
temporary one (blocks save models) and whose kernel cache is the test session's (conftest.py). A
block that cannot run here carries `<!-- skip: reason -->` on the line before its fence; such
marks are few and each gives its reason. Bash blocks are not run, but every `symdl <command>` the
docs show must be a subcommand of `symdl --help`.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from symdl import formulas

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHIPPED = [ROOT / "README.md", ROOT / "docs", ROOT / "symdl", ROOT / "formulas", ROOT / "examples"]
FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = re.compile(r"^<!--\s*skip:\s*(.+?)\s*-->\s*$")
MAX_SKIPS = 3  # blocks that need a GPU or a download: rare by design

RUNNER = r'''
import json, sys, time, traceback
blocks = json.load(open(sys.argv[1]))
results = []
for block in blocks:
    start = time.perf_counter()
    try:
        exec(compile(block["code"], block["where"], "exec"), {"__name__": "__main__"})
        error = None
    except BaseException:
        error = traceback.format_exc()
    results.append({"where": block["where"], "error": error, "seconds": time.perf_counter() - start})
    json.dump(results, open(sys.argv[2], "w"))
'''


def fenced_blocks(path: Path) -> list[dict]:
    """{"lang", "line" (of the opening fence, 1-based), "code", "skip" (reason or None)} per block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, n = [], 0
    while n < len(lines):
        m = FENCE.match(lines[n])
        if m is None:
            n += 1
            continue
        start = n
        n += 1
        while n < len(lines) and lines[n].rstrip() != "```":
            n += 1
        skip = SKIP.match(lines[start - 1]) if start else None
        blocks.append({"lang": m.group(1), "line": start + 1, "code": "\n".join(lines[start + 1:n]) + "\n",
                       "skip": skip.group(1) if skip else None})
        n += 1
    return blocks


def python_blocks() -> list[dict]:
    found = []
    for path in DOCS:
        for b in fenced_blocks(path):
            if b["lang"] == "python":
                found.append(dict(b, where=f"{path.relative_to(ROOT)}:{b['line']}"))
    return found


def test_fence_parser_reads_language_line_and_skip_mark(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("text\n```python\na = 1\n```\n<!-- skip: needs a GPU -->\n```python\nb = 2\n```\n"
                   "```bash\nsymdl list\n```\n", encoding="utf-8")
    assert fenced_blocks(doc) == [
        {"lang": "python", "line": 2, "code": "a = 1\n", "skip": None},
        {"lang": "python", "line": 6, "code": "b = 2\n", "skip": "needs a GPU"},
        {"lang": "bash", "line": 9, "code": "symdl list\n", "skip": None}]


def test_skip_marks_are_rare_and_give_a_reason():
    blocks = python_blocks()
    skipped = [b for b in blocks if b["skip"]]
    assert len(blocks) >= 5 and len(skipped) <= MAX_SKIPS, [b["where"] for b in skipped]
    for b in skipped:
        assert len(b["skip"]) >= 10, f"{b['where']}: say why the block cannot run here"
    for path in DOCS:  # a mark must sit right before a fence, or it marks nothing
        lines = path.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if SKIP.match(line):
                assert n + 1 < len(lines) and FENCE.match(lines[n + 1]), f"{path.name}:{n + 1}"


def test_every_python_block_runs_as_pasted(tmp_path):
    blocks = [b for b in python_blocks() if not b["skip"]]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    (tmp_path / "runner.py").write_text(RUNNER, encoding="utf-8")
    results = tmp_path / "results.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # the checkout's symdl, from any folder
    done = subprocess.run([sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "blocks.json"),
                           str(results)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert results.exists(), done.stderr[-3000:]
    ran = json.loads(results.read_text(encoding="utf-8"))
    assert [r["where"] for r in ran] == [b["where"] for b in blocks], done.stderr[-3000:]
    failed = [f"{r['where']}:\n{r['error']}" for r in ran if r["error"]]
    assert not failed, "\n".join(failed)


def _subcommands() -> set[str]:
    done = subprocess.run([sys.executable, "-m", "symdl.cli", "--help"], capture_output=True, text=True,
                          cwd=ROOT)
    m = re.search(r"\{([a-z,]+)\}", done.stdout)
    assert m, done.stdout
    return set(m.group(1).split(","))


def test_symdl_commands_shown_in_the_docs_exist():
    commands = _subcommands()
    assert {"list", "show", "verify", "train"} <= commands
    shown = set()
    command = re.compile(r"(?:^|&&|;|\|)\s*(?:[A-Z_]+=\S*\s+)*symdl ([a-z_-]+)")
    for path in [*DOCS, ROOT / "examples" / "README.md"]:
        for b in fenced_blocks(path):  # command lines in shell blocks
            if b["lang"] in ("bash", "sh", "shell", "console", ""):
                shown |= {(m.group(1), path.name) for line in b["code"].splitlines()
                          for m in [command.search(line)] if m}
        for m in re.finditer(r"`symdl ([a-z_-]+)", path.read_text(encoding="utf-8")):  # inline code
            shown.add((m.group(1), path.name))
    assert shown, "no symdl command found in the docs"
    unknown = sorted(f"{path}: symdl {cmd}" for cmd, path in shown if cmd not in commands)
    assert not unknown, unknown


def test_shipped_files_cite_no_unshipped_document():
    """SEEDS.md and NOTES.md are not in the repository (docs/catalog.md explains the codes), and the
    development machines' ../shared folder (its data included) is never shipped."""
    cited = []
    for top in SHIPPED:
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if not path.is_file() or path.suffix not in {".py", ".md", ".txt", ".toml", ".cfg"}:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"SEEDS|NOTES\.md|\.\./shared|\"shared\" / \"data\"", line):
                    cited.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not cited, "\n".join(cited)


def test_catalog_doc_explains_every_code():
    """Every F code `symdl list` shows, and E1-E5, has a row in docs/catalog.md naming its entries."""
    text = (ROOT / "docs" / "catalog.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([FE]\d+) \|.*$", text, re.M)}
    by_code: dict[str, list[str]] = {}
    for e in formulas.entries():
        by_code.setdefault(e.ref, []).append(e.name)
    missing = [c for c in [*by_code, *(f"E{n}" for n in range(1, 6))] if c not in rows]
    assert not missing, f"docs/catalog.md has no row for {missing}"
    for code, names in by_code.items():
        absent = [n for n in names if f"`{n}`" not in rows[code]]
        assert not absent, f"docs/catalog.md, {code}: entries {absent} are not listed"
    for n in range(1, 6):
        assert f"symdl train e{n}" in rows[f"E{n}"]


@pytest.mark.parametrize("argv, expected", [
    (["list"], "docs/catalog.md"),
    (["train", "--help"], "the example models E1-E5 of docs/catalog.md"),
])
def test_cli_points_to_the_catalog_doc(argv, expected):
    done = subprocess.run([sys.executable, "-m", "symdl.cli", *argv], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert expected in " ".join(done.stdout.split())
