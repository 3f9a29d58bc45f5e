"""The preprocessing settings of the session's store and checks of what preprocessing
wrote."""

from __future__ import annotations

import hashlib
import json
import os

from finegym_ray.preprocess.config import PreprocessConfig

# Many small units (about 4 s of clips each), so that kills land between units.
TINY_PREPROCESS = PreprocessConfig(short_side=64, unit_seconds=4.0, workers=2)


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
