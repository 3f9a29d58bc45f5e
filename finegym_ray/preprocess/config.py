"""Preprocessing settings: one dataclass, loaded from YAML and ``--set key=value`` overrides.

The settings that change what lands in the shards (``OUTPUT_FIELDS``, and the flow
method with its options other than its runtime options) are hashed and stored with the
output: training reads them back, and a rerun into the same output with other values is
refused instead of mixing two kinds of clips.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import check_range
from ..errors import InputError
from ..video.decode import BACKENDS
from ..video.flow import build_flow, resolve_options, runtime_options
from ..video_job import settings_hash

# Where a flow method may run, for methods that have a ``device`` option (tvl1). Ray
# gives each flow actor its own GPU(s), numbered from 0 inside the actor, so "cuda"
# names the actor's GPU and an explicit index would name another actor's, or none.
FLOW_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class FlowConfig:
    """The optical flow method and its options: YAML ``flow: {method: tvl1, options:
    {warps: 3}}``, or ``--set flow.method=tvl1 --set flow.options.warps=3``.

    ``options`` is a free mapping checked against the method's own keyword arguments
    (``video.flow.method_defaults``), rather than one field per option of every method:
    the method stays the one place that defines its options and defaults, and options of
    one method cannot be set for another. Options left out take the method's defaults.
    A plain method name (``flow: dis``, ``--set flow=none``) stands for ``{method: NAME}``
    with every option at its default: see ``PreprocessConfig.flow``.
    """

    # "dis" (OpenCV DIS), "farneback", "tvl1" (torch TV-L1: GPU actors where the cluster
    # has GPUs) or "none" (zero flow, flow columns left out of the shards).
    method: str = "dis"
    # The keyword arguments of the method's class (video/flow.py, video/tvl1.py), e.g.
    # dis: preset (ultrafast|fast|medium); tvl1: warps, scales, ..., device (auto|cpu|cuda),
    # batch_pairs.
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.options, dict):
            raise InputError(f"flow options must be a mapping, got {self.options!r}")
        resolved = resolve_options(self.method, self.options)  # unknown method or option: ValueError
        if "device" in resolved and resolved["device"] not in FLOW_DEVICES:
            raise InputError(f"flow option device must be one of {', '.join(FLOW_DEVICES)}, "
                             f"got {resolved['device']!r}")
        # Build it once, here, so that the method's own range checks refuse a bad value
        # before Ray starts. On the CPU: the driver may have no GPU where the workers do.
        try:
            build_flow(self.method, **{**self.options, **({"device": "cpu"} if "device" in resolved else {})})
        except ValueError as e:
            raise InputError(f"flow options: {e}") from None

    @property
    def with_flow(self) -> bool:
        """Whether the shards get flow columns."""
        return self.method != "none"

    @property
    def device(self) -> str:
        """Where the method asks to run: its ``device`` option, "cpu" for methods without one."""
        return self.resolved().get("device", "cpu")

    @property
    def own_stage(self) -> bool:
        """Whether the method runs in a flow stage of its own: it has a ``device`` option
        (tvl1), so it may use a GPU, on GPU actors where the cluster has GPUs."""
        return "device" in self.resolved()

    def resolved(self) -> dict[str, Any]:
        """Every option of the method, defaults filled in."""
        return resolve_options(self.method, self.options)

    def output_options(self) -> dict[str, Any]:
        """The options that determine the flow: all but the method's runtime options
        (device, batch size), which change it only by float rounding. A rerun on a GPU
        cluster of an output started on CPUs, or with another batch size, must find the
        same settings and resume, not be refused."""
        runtime = set(runtime_options(self.method))
        return {k: v for k, v in self.resolved().items() if k not in runtime}


@dataclass(frozen=True)
class PreprocessConfig:
    """Sizes in pixels, times in seconds, rates in frames per second."""

    # Frames are resized at decode so their short side is this (aspect kept); 0 = native.
    short_side: int = 256
    # Decoder: "pyav" or "decord". Both select the same frames (from one exact PyAV index).
    # PyAV is the default: decord's decode calls look faster, but decord keeps decoding
    # ahead in a thread of its own, and on a worker's one core the whole chain (decode,
    # flow, JPEG) took longer with it (benchmarks/results/preprocessing.md).
    decoder: str = "pyav"
    # Keep at most this many frames per second of video (None: every frame).
    max_fps: float | None = None
    # Optical flow between consecutive kept frames (FlowConfig). A plain method name
    # (YAML ``flow: dis``, ``--set flow=none``) is shorthand for that method with its
    # default options: __post_init__ replaces it, so code always finds a FlowConfig.
    flow: FlowConfig | str = field(default_factory=FlowConfig)
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
    # Actor pool size (None: one per CPU the cluster has, or with a GPU flow method
    # (tvl1) see preprocess.stages.pool_sizes) and CPUs per actor (both stages).
    workers: int | None = None
    cpus_per_worker: float = 1.0
    # With tvl1 only, which runs in actors of its own: their number (None: one per
    # flow_gpus_per_worker GPUs, or on a cluster without GPUs most of the CPUs) and the
    # GPUs each takes where the cluster has GPUs.
    flow_workers: int | None = None
    flow_gpus_per_worker: float = 1.0
    # Node-local folder (absolute) where remote videos are fetched once per node, and its
    # size cap. None: a private folder per user (preprocess.local_copy.default_folder).
    # A folder that is a link, another user's or writable by others is refused.
    cache_dir: str | None = None
    cache_gb: float = 50.0

    def __post_init__(self) -> None:
        problems = []
        if self.short_side < 0 or self.short_side % 2:
            problems.append(f"short_side must be 0 or a positive even number, got {self.short_side}")
        if self.decoder not in BACKENDS:
            problems.append(f"decoder must be one of {sorted(BACKENDS)}, got {self.decoder!r}")
        check_range(problems, "max_fps", self.max_fps, gt=0, optional=True)
        if isinstance(self.flow, str):
            try:
                object.__setattr__(self, "flow", FlowConfig(method=self.flow))
            except ValueError as e:
                problems.append(str(e))
        elif not isinstance(self.flow, FlowConfig):
            problems.append(f"flow must be a method name or a FlowConfig, got {self.flow!r}")
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
        if self.flow_workers is not None and self.flow_workers < 1:
            problems.append(f"flow_workers must be >= 1 or null, got {self.flow_workers}")
        check_range(problems, "flow_gpus_per_worker", self.flow_gpus_per_worker, gt=0)
        if self.cache_dir is not None and not os.path.isabs(self.cache_dir):
            problems.append(f"cache_dir must be an absolute folder path or null, got {self.cache_dir!r}")
        check_range(problems, "cache_gb", self.cache_gb, ge=0)
        if problems:
            raise InputError("preprocess config: " + "; ".join(problems))


# Fields that change the bytes of the shards (and "flow": its method and the options
# that change the flow, see FlowConfig.output_options). Worker counts, unit sizes and
# caches do not: their clips are identical, so a rerun may change them freely.
OUTPUT_FIELDS = ("short_side", "decoder", "max_fps", "flow", "flow_bound", "jpeg_quality", "events", "subactions",
                 "allow_vfr")


def output_settings(config: PreprocessConfig) -> dict:
    """The settings that determine the shards' content, as stored with the output."""
    data = asdict(config)
    data["flow"] = {"method": config.flow.method, **config.flow.output_options()}
    return {k: data[k] for k in OUTPUT_FIELDS}


def config_hash(config: PreprocessConfig) -> str:
    """The hash identifying ``output_settings(config)`` (``video_job.settings_hash``)."""
    return settings_hash(output_settings(config))


def settings_record(config: PreprocessConfig, origin: str | None = None) -> dict:
    """What an output records of the settings that made its clips (the store's settings
    file): ``settings`` (``output_settings``, and for clips imported rather than cut
    their ``origin``, in words) and their ``hash``. Without an origin the hash is
    ``config_hash``."""
    settings = {**output_settings(config), **({"origin": origin} if origin else {})}
    return {"hash": settings_hash(settings), "settings": settings}
