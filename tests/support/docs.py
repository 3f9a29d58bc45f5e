"""The commands the README and docs show, as a reader would type them: read by
tests/test_docs.py (each parses and resolves) and benchmarks/walk_docs.py (each that can
run here runs)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def documented_commands(root: Path = ROOT, *, optional: bool = False) -> list[tuple[str, list[str]]]:
    """Every ``finegym-ray ...`` line of the README's, docs' and cluster README's code
    blocks, as (where, argv without ``finegym-ray``): continuation lines joined, comments
    dropped, optional ``[...]`` parts dropped (``optional``: kept, without the brackets)."""
    commands = []
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "cluster" / "README.md"]:
        for block in FENCE.findall(page.read_text()):
            text = re.sub(r"\\\n\s*", " ", block)
            for line in text.splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                line = re.sub(r"^(\.venv/bin/|.*&& \.venv/bin/)", "", line)
                if not line.startswith("finegym-ray "):
                    continue
                line = re.sub(r"\[([^\]]*)\]", r" \1 " if optional else " ", line).replace("...", " ")
                commands.append((f"{page.relative_to(root)}: {line}", shlex.split(line)[1:]))
    return commands
