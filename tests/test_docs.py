"""The README and docs/ hold together: every relative link leads to a file (and heading)
that exists, and every test that docs/guarantees.md names exists."""

import ast
import re
from pathlib import Path

from tests.support.docs import FENCE, documented_commands

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "benchmarks" / "results").glob("*.md"))]
# [text](target): the target up to the closing parenthesis, no spaces (markdown's own rule).
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# `file.py::test_name`, or `::test_name` for the file named last before it.
TEST_REF = re.compile(r"`((?:[\w/]+\.py)?)(?:::(\w+))?`")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text())
    headings = re.findall(r"^#+\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def _links(page: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", page.read_text()))


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    assert len(PAGES) > 10, PAGES
    broken = []
    for page in PAGES:
        for target in _links(page):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_every_test_that_the_guarantees_name_exists():
    text = (ROOT / "docs" / "guarantees.md").read_text()
    named, missing, current = 0, [], None
    for file, test in TEST_REF.findall(text):
        if not file and not test:
            continue
        if file:
            if not file.startswith("test_") and "/test_" not in file:
                continue  # a module of the package, not a test file
            current = ROOT / "tests" / file
            if not current.exists():
                missing.append(f"tests/{file}")
                continue
        if test:
            named += 1
            assert current is not None, f"::{test} follows no file"
            if test not in _test_names(current):
                missing.append(f"{current.relative_to(ROOT)}::{test}")
    assert named > 50, named
    assert not missing, "\n".join(missing)


def test_every_command_in_the_docs_parses_and_resolves_its_settings(monkeypatch, capsys):
    # As written, from the checkout: the command and its flags exist, and where it has
    # --print-config its config files and --set settings resolve (no Ray started).
    from finegym_ray.cli import build_parser, main

    monkeypatch.chdir(ROOT)
    commands = documented_commands()
    assert len(commands) >= 20, commands
    failed, resolved = [], 0
    for where, argv in commands:
        ours = argv[:argv.index("--")] if "--" in argv else argv
        try:
            args = build_parser().parse_args(ours)
        except SystemExit:
            failed.append(f"{where}: {capsys.readouterr().err.strip().splitlines()[-1:]}")
            continue
        if hasattr(args, "print_config") and not getattr(args, "smoke_test", False):
            if main([*ours, "--print-config"]) != 0:
                failed.append(f"{where}: --print-config failed: {capsys.readouterr().err.strip()}")
            resolved += 1
    capsys.readouterr()
    assert not failed, "\n".join(failed)
    assert resolved >= 5
