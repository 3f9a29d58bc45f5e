"""Toy feature sequences with known segments, for ``localize --smoke-test`` and tests: a
real feature store (features.write_sequence) and ActivityNet-format ground truth, without
a backbone. Each class adds its own direction to the features inside its segments, on top
of Gaussian noise, so a detector can learn them in a few epochs. No ray, no torch."""

from __future__ import annotations

import json

import numpy as np

from .. import storage
from ..video_job import settings_hash
from .features import sequence_uri, write_sequence

CLASSES = ("VT", "FX", "BB", "UB")


def write_toy_features(out: str, *, videos: int = 8, level: str = "action", steps: int = 96, dim: int = 16,
                       stride_s: float = 0.5, seed: int = 0) -> str:
    """Write ``videos`` sequences of ``steps`` snippets (``stride_s`` seconds apart, each
    twice as long) under ``out/<level>/`` with 2 to 4 segments of 4 to 16 steps each, and
    their ground truth to ``out/ground_truth.json``; returns its path. Deterministic per seed.
    Sub-action level ids are routine keys (``toy<n>_E_..._...``) so the split groups them
    by video."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(len(CLASSES), dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    meta = {"run": "toy", "settings_hash": settings_hash({"toy": seed, "dim": dim, "stride_s": stride_s}),
            "level": level, "fps": 1 / stride_s}
    database = {}
    for v in range(videos):
        vid = f"toy{v:03d}" if level == "action" else f"toy{v // 2:03d}_E_{v:06d}_{v + 60:06d}"
        starts = np.arange(steps) * stride_s
        ends = starts + 2 * stride_s
        feats = rng.normal(scale=0.5, size=(steps, dim))
        annotations, cursor = [], int(rng.integers(2, 8))
        for _ in range(int(rng.integers(2, 5))):
            length = int(rng.integers(4, 17))
            if cursor + length >= steps - 2:
                break
            label = int(rng.integers(len(CLASSES)))
            feats[cursor:cursor + length] += 2.0 * directions[label]
            # The segment spans the snippets' centres: from the first's to the last's.
            s, e = starts[cursor] + stride_s, starts[cursor + length - 1] + stride_s
            annotations.append({"segment": [float(s), float(e)], "label": CLASSES[label]})
            cursor += length + int(rng.integers(3, 12))
        write_sequence(sequence_uri(out, level, vid), video_id=vid, starts=starts, ends=ends, features=feats,
                       meta=meta)
        database[vid] = {"subset": "toy", "annotations": annotations}
    path = storage.join(out, "ground_truth.json")
    storage.write_text(path, json.dumps({"version": "toy", "database": database}, indent=1) + "\n")
    return path
