"""Preprocessing settings: one dataclass, loaded from YAML and ``--set key=value`` overrides.

The settings that change what lands in the shards (``OUTPUT_FIELDS``) are hashed and
stored with the output: training reads them back, and a rerun into the same output with
other values is refused instead of mixing two kinds of clips.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from ..config import check_range
from ..video.decode import BACKENDS
from ..video.flow import DIS_PRESETS, FLOW_METHODS


@dataclass(frozen=True)
class PreprocessConfig:
    """Sizes in pixels, times in seconds, rates in frames per second."""

    # Frames are resized at decode so their short side is this (aspect kept); 0 = native.
    short_side: int = 256
    # Decoder: "pyav" or "decord". Both select the same frames (from one exact PyAV index).
    # PyAV is the default: decord's decode calls look faster, but decord keeps decoding
    # ahead in a thread of its own, and on a worker's one core the whole chain (decode,
    # flow, JPEG) took longer with it (benchmarks/preprocess_efficiency.py, README).
    decoder: str = "pyav"
    # Keep at most this many frames per second of video (None: every frame).
    max_fps: float | None = None
    # Optical flow between consecutive kept frames: "dis", "farneback" or "none".
    flow: str = "dis"
    # DIS preset: "ultrafast", "fast" or "medium" (ignored by other methods).
    dis_preset: str = "fast"
    # Flow is clipped to +-flow_bound pixels before quantizing to uint8 (FineGym: 20).
    flow_bound: float = 20.0
    jpeg_quality: int = 90
    # Also cut each whole event (routine), for event-level recognition and localization.
    events: bool = False
    # Cut sub-actions (the clips the recognition models train on).
    subactions: bool = True
    # Work units hold about this many seconds of clips from one video.
    unit_seconds: float = 60.0
    # Frames decoded and processed at a time: bounds a worker's memory on long events.
    chunk_frames: int = 128
    # Variable-frame-rate videos are refused unless this is set (frame times are kept
    # per frame either way, but models assume an even rate).
    allow_vfr: bool = False
    # Actor pool size (None: one per CPU the cluster has) and CPUs per actor.
    workers: int | None = None
    cpus_per_worker: float = 1.0
    # Node-local folder where remote videos are fetched once per node, and its size cap.
    cache_dir: str = "/tmp/finegym_ray_videos"
    cache_gb: float = 50.0

    def __post_init__(self) -> None:
        problems = []
        if self.short_side < 0 or self.short_side % 2:
            problems.append(f"short_side must be 0 or a positive even number, got {self.short_side}")
        if self.decoder not in BACKENDS:
            problems.append(f"decoder must be one of {sorted(BACKENDS)}, got {self.decoder!r}")
        check_range(problems, "max_fps", self.max_fps, gt=0, optional=True)
        if self.flow not in FLOW_METHODS:
            problems.append(f"flow must be one of {sorted(FLOW_METHODS)}, got {self.flow!r}")
        if self.dis_preset not in DIS_PRESETS:
            problems.append(f"dis_preset must be one of {sorted(DIS_PRESETS)}, got {self.dis_preset!r}")
        check_range(problems, "flow_bound", self.flow_bound, gt=0)  # pixels; an infinite bound makes all flow one grey
        if not 0 <= self.jpeg_quality <= 100:
            problems.append(f"jpeg_quality must be in 0..100, got {self.jpeg_quality}")
        if not (self.events or self.subactions):
            problems.append("nothing to cut: set events=true or subactions=true")
        check_range(problems, "unit_seconds", self.unit_seconds, gt=0)
        if self.chunk_frames < 2:
            problems.append(f"chunk_frames must be >= 2, got {self.chunk_frames}")
        if self.workers is not None and self.workers < 1:
            problems.append(f"workers must be >= 1 or null, got {self.workers}")
        check_range(problems, "cpus_per_worker", self.cpus_per_worker, gt=0)
        check_range(problems, "cache_gb", self.cache_gb, ge=0)
        if problems:
            raise ValueError("preprocess config: " + "; ".join(problems))

    @property
    def flow_options(self) -> dict:
        return {"preset": self.dis_preset} if self.flow == "dis" else {}


# Fields that change the bytes of the shards. Worker counts, unit sizes and caches do
# not: their clips are identical, so a rerun may change them freely.
OUTPUT_FIELDS = ("short_side", "decoder", "max_fps", "flow", "dis_preset", "flow_bound", "jpeg_quality",
                 "events", "subactions", "allow_vfr")


def output_settings(config: PreprocessConfig) -> dict:
    """The settings that determine the shards' content, as stored with the output."""
    data = asdict(config)
    return {k: data[k] for k in OUTPUT_FIELDS}


def config_hash(config: PreprocessConfig) -> str:
    """12 hex digits identifying ``output_settings(config)``."""
    blob = json.dumps(output_settings(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
