"""Helpers shared by the tests that check preprocessing output."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def row_digests(table) -> dict[str, str]:
    """key -> digest of everything the clip holds; fails on a duplicated key."""
    digests: dict[str, str] = {}
    for row in table.to_pylist():
        assert row["key"] not in digests, f"clip {row['key']} written twice"
        blob = json.dumps({k: v for k, v in row.items() if k not in ("rgb", "flow_x", "flow_y")}, sort_keys=True)
        h = hashlib.sha1(blob.encode())
        for name in ("rgb", "flow_x", "flow_y"):
            for b in row.get(name) or []:
                h.update(b)
        digests[row["key"]] = h.hexdigest()
    return digests


def shards(out: str) -> list[str]:
    return sorted(p for p in os.listdir(os.path.join(out, "clips")) if p.endswith(".parquet"))


def pids_with(text: str) -> list[int]:
    """Processes whose command line (Ray sets actors' titles) contains ``text``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if text in Path("/proc", entry, "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry))
            except OSError:
                continue
    return found
