"""Cut one work unit's clips out of one video: decode, flow, JPEG, one Arrow table.

This is the whole per-unit computation, without Ray: the pipeline runs it in actors,
the benchmarks and tests call it directly. Frames are processed in chunks as they are
decoded, so memory stays bounded by ``chunk_frames`` frames plus the JPEG bytes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import pyarrow as pa

from ..video.decode import VideoError, WindowDecoder
from ..video.encode import encode_jpeg
from ..video.flow import FLOW_METHODS, quantize_flow
from .config import PreprocessConfig
from .units import Window

_BASE_FIELDS = [
    ("key", pa.string()),
    ("kind", pa.string()),  # "subaction" or "event"
    ("video_id", pa.string()),
    ("event_id", pa.string()),
    ("event_label", pa.int16()),
    ("start_s", pa.float64()),  # the window asked for, seconds in the raw video
    ("end_s", pa.float64()),
    ("fps", pa.float64()),  # frames per second of the clip: the video's, or max_fps if lower
    ("num_frames", pa.int32()),
    ("height", pa.int32()),  # pixels, after resizing
    ("width", pa.int32()),
    ("frame_times_s", pa.list_(pa.float64())),  # each frame's time in the raw video
    ("rgb", pa.list_(pa.binary())),  # JPEG per frame
]
_FLOW_FIELDS = [
    ("flow_x", pa.list_(pa.binary())),  # grey JPEG per consecutive frame pair: num_frames - 1
    ("flow_y", pa.list_(pa.binary())),
    ("flow_bound", pa.float32()),  # pixels: q = 0 is -bound, 255 is +bound
]


# Parquet key-value metadata of each shard: the fingerprint of the unit it holds
# (units.WorkUnit.fingerprint), read back from the footer alone when a run resumes.
FINGERPRINT_KEY = b"finegym_ray.unit_fingerprint"


def with_fingerprint(table: pa.Table, fingerprint: str) -> pa.Table:
    """``table`` with the unit's fingerprint in its schema metadata (written to the footer)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), FINGERPRINT_KEY: fingerprint.encode()})


def shard_fingerprint(filesystem, path: str) -> str | None:
    """The fingerprint in the footer of the shard at ``path`` on a pyarrow filesystem
    (on S3: ranged reads of the footer only), None if it has none. A file that is not
    complete Parquet raises OSError or pyarrow.ArrowInvalid."""
    import pyarrow.parquet as pq

    with filesystem.open_input_file(path) as f:
        metadata = pq.read_metadata(f).metadata or {}
    value = metadata.get(FINGERPRINT_KEY)
    return value.decode() if value is not None else None


def clip_schema(with_flow: bool) -> pa.Schema:
    """Columns of a clip shard; the flow columns are absent when flow is ``none``."""
    return pa.schema(_BASE_FIELDS + (_FLOW_FIELDS if with_flow else []))


@dataclass
class UnitResult:
    """What cutting a unit gave: the shard's rows, the windows that failed, and timings.

    errors: one dict per failed window (``key``, ``reason``); a failure of the video
        itself (missing, corrupt, variable frame rate) raises VideoError instead.
    seconds: per stage, CPU-bound wall seconds: open, decode, flow, encode.
    """

    table: pa.Table
    errors: list[dict] = field(default_factory=list)
    frames: int = 0
    video_seconds: float = 0.0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def cut_unit(video_path: str, windows: list[Window], config: PreprocessConfig) -> UnitResult:
    """Decode every window of one video and return its clips as a table (one row each).

    Raises VideoError when the video cannot be used at all; a window that fails (for
    example past the end of the file, or holding no frame) is reported in
    ``UnitResult.errors`` and the others are still cut.
    """
    seconds: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    decoder = WindowDecoder(video_path, short_side=config.short_side or None, backend=config.decoder)
    seconds["open"] += time.perf_counter() - t0
    with decoder:
        if decoder.info.is_vfr and not config.allow_vfr:
            raise VideoError(video_path, "variable frame rate (irregular gaps between frames); "
                                         "set allow_vfr=true to cut it anyway")
        fps = decoder.info.fps if config.max_fps is None else min(decoder.info.fps, config.max_fps)
        rows, errors = [], []
        for w in windows:
            try:
                clip = _cut_window(decoder, w, config, seconds)
            except VideoError as e:
                errors.append({"key": w.key, "reason": e.reason})
                continue
            if not clip["rgb"]:
                errors.append({"key": w.key, "reason": f"window [{w.start_s:.3f}, {w.end_s:.3f}) s holds no frame"})
                continue
            width, height = decoder.size
            rows.append({"key": w.key, "kind": w.kind, "video_id": w.video_id, "event_id": w.event_id,
                         "event_label": w.event_label, "start_s": w.start_s, "end_s": w.end_s, "fps": fps,
                         "num_frames": len(clip["rgb"]), "height": height, "width": width, **clip})
    with_flow = config.flow != "none"
    if with_flow:
        for r in rows:
            r["flow_bound"] = config.flow_bound
    table = pa.Table.from_pylist(rows, schema=clip_schema(with_flow))
    return UnitResult(table=table, errors=errors, frames=sum(r["num_frames"] for r in rows),
                      video_seconds=sum(r["end_s"] - r["start_s"] for r in rows), seconds=seconds)


def _timed(chunks: Iterator, seconds: dict[str, float], stage: str) -> Iterator:
    """``chunks``, adding the time spent producing each item to ``seconds[stage]``."""
    while True:
        t0 = time.perf_counter()
        try:
            item = next(chunks)
        except StopIteration:
            seconds[stage] += time.perf_counter() - t0
            return
        seconds[stage] += time.perf_counter() - t0
        yield item


def _cut_window(decoder: WindowDecoder, w: Window, config: PreprocessConfig,
                seconds: dict[str, float]) -> dict[str, list]:
    """frame_times_s, rgb and (with flow) flow_x, flow_y of one window."""
    with_flow = config.flow != "none"
    pair_flow = FLOW_METHODS[config.flow](**config.flow_options) if with_flow else None
    times: list[float] = []
    rgb: list[bytes] = []
    flow_x: list[bytes] = []
    flow_y: list[bytes] = []
    prev_grey = None  # carries flow across chunk boundaries
    chunks = decoder.iter_decode(w.start_s, w.end_s, max_fps=config.max_fps, chunk_frames=config.chunk_frames)
    for chunk in _timed(chunks, seconds, "decode"):
        times.extend(chunk.times_s.tolist())
        t0 = time.perf_counter()
        rgb.extend(encode_jpeg(f, config.jpeg_quality) for f in chunk.rgb)
        seconds["encode"] += time.perf_counter() - t0
        if not with_flow:
            continue
        t0 = time.perf_counter()
        grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in chunk.rgb]
        pairs = [pair_flow(a, b) for a, b in zip([prev_grey] + grey[:-1], grey) if a is not None]
        prev_grey = grey[-1]
        seconds["flow"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        for f in pairs:
            qx, qy = quantize_flow(f, config.flow_bound)
            flow_x.append(encode_jpeg(qx, config.jpeg_quality))
            flow_y.append(encode_jpeg(qy, config.jpeg_quality))
        seconds["encode"] += time.perf_counter() - t0
    clip: dict[str, list] = {"frame_times_s": times, "rgb": rgb}
    if with_flow:
        clip.update(flow_x=flow_x, flow_y=flow_y)
    return clip

