"""Cut one work unit's clips out of one video: decode, flow, JPEG, one Arrow table.

This is the whole per-unit computation, without Ray: the pipeline runs it in actors,
the benchmarks and tests call it directly. Two ways through it:

- ``cut_unit``: everything in one process, flow computed per chunk as frames are
  decoded, so memory stays bounded by ``chunk_frames`` frames plus the JPEG bytes (the
  CPU methods: dis, farneback, none).
- ``decode_unit`` then ``add_flow``: decoding and JPEG in one process, flow in another
  (tvl1 on a GPU): the first returns the clips without flow and the grey frames of all
  of them, the second computes the flow of all those frames in batches of pairs that run
  across clips (one call per batch, not per clip) and adds the flow columns.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute in table_totals

from ..video.decode import VideoError, WindowDecoder
from ..video.encode import encode_jpeg
from ..video.flow import FlowMethod, build_flow, quantize_flow
from ..video.stream import frame_stream
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


# ... and the shard's totals (clips, frames, seconds of clips), so that the summary of a
# whole output is read from footers too.
TOTALS_KEY = b"finegym_ray.unit_totals"


def table_totals(table: pa.Table) -> dict:
    """``clips``, ``frames`` and ``video_seconds`` (the clips' windows, seconds) of a shard's rows."""
    frames = pa.compute.sum(table.column("num_frames")).as_py() if table.num_rows else 0
    seconds = pa.compute.sum(pa.compute.subtract(table.column("end_s"), table.column("start_s"))).as_py() \
        if table.num_rows else 0.0
    return {"clips": table.num_rows, "frames": int(frames or 0), "video_seconds": float(seconds or 0.0)}


def with_fingerprint(table: pa.Table, fingerprint: str) -> pa.Table:
    """``table`` with the unit's fingerprint and totals (``table_totals``) in its schema
    metadata (written to the footer)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), FINGERPRINT_KEY: fingerprint.encode(),
                                          TOTALS_KEY: json.dumps(table_totals(table)).encode()})


def shard_footer(filesystem, path: str) -> tuple[str | None, dict | None]:
    """(fingerprint, totals) in the footer of the shard at ``path`` on a pyarrow
    filesystem (on S3: ranged reads of the footer only), each None if it has none. A file
    that is not complete Parquet raises OSError or pyarrow.ArrowInvalid."""
    import pyarrow.parquet as pq

    with filesystem.open_input_file(path) as f:
        metadata = pq.read_metadata(f).metadata or {}
    value, totals = metadata.get(FINGERPRINT_KEY), metadata.get(TOTALS_KEY)
    return value.decode() if value is not None else None, json.loads(totals) if totals is not None else None


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


def cut_unit(video_path: str, windows: list[Window], config: PreprocessConfig,
             flow: FlowMethod | None = None) -> UnitResult:
    """Decode every window of one video and return its clips as a table (one row each),
    flow computed chunk by chunk as the frames are decoded.

    flow: the method object of ``config.flow``, built once by the caller (an actor cuts
        many units with one); None: built here.
    Raises VideoError when the video cannot be used at all; a window that fails (for
    example past the end of the file, or holding no frame) is reported in
    ``UnitResult.errors`` and the others are still cut.
    """
    seconds: dict[str, float] = defaultdict(float)
    with_flow = config.flow.with_flow
    if with_flow and flow is None:
        flow = build_flow(config.flow.method, **config.flow.options)
    rows, errors = _decode_windows(video_path, windows, config, seconds, flow=flow if with_flow else None)
    if with_flow:
        for r in rows:
            r["flow_bound"] = config.flow_bound
    return unit_result(rows, errors, seconds, with_flow)


def decode_unit(video_path: str, windows: list[Window], config: PreprocessConfig) -> tuple[UnitResult, np.ndarray]:
    """The first half of ``cut_unit`` for a flow method that runs elsewhere: the clips
    without flow columns, and their grey frames for ``add_flow``.

    Returns (result, grey): ``result.table`` has ``clip_schema(with_flow=False)``;
    grey is (T, H, W) uint8, every clip's frames end to end in row order (T is the sum
    of ``num_frames``; H, W the clips' pixels: 87 KB a frame at 340x256). Raises and
    reports failures as ``cut_unit`` does.
    """
    seconds: dict[str, float] = defaultdict(float)
    rows, errors = _decode_windows(video_path, windows, config, seconds, keep_grey=True)
    chunks = [c for r in rows for c in r.pop("grey")]
    height, width = (rows[0]["height"], rows[0]["width"]) if rows else (0, 0)
    frames = np.concatenate(chunks) if chunks else np.empty((0, height, width), dtype=np.uint8)
    return unit_result(rows, errors, seconds, with_flow=False), frames


def add_flow(decoded: UnitResult, grey: np.ndarray, flow: FlowMethod, config: PreprocessConfig, *,
             batch_pairs: int) -> UnitResult:
    """``decoded`` (from ``decode_unit``) with the flow columns added: the same rows as
    ``cut_unit`` gives, up to the method's float rounding.

    grey: (T, H, W) uint8, the frames ``decode_unit`` returned with it. The flow of all
    of them is computed end to end, ``batch_pairs`` pairs per call of ``flow``, so that
    a GPU gets many pairs at once however short the clips; the pair across each clip
    boundary is computed too (the price of one call per batch: one pair per clip, 2-4 %
    of sub-action pairs) and dropped.
    """
    seconds = defaultdict(float, decoded.seconds)
    counts = decoded.table.column("num_frames").to_pylist()
    clip_of = np.repeat(np.arange(len(counts)), counts)  # (T,) the clip of each frame
    flow_x: list[list[bytes]] = [[] for _ in counts]
    flow_y: list[list[bytes]] = [[] for _ in counts]
    prev, lo = None, 0
    while lo < len(grey):
        hi = min(lo + batch_pairs + (prev is None), len(grey))  # batch_pairs pairs either way
        t0 = time.perf_counter()
        # A copy: ``grey`` may be a read-only view of the stage's input, which torch does not wrap.
        pairs = flow(grey[lo:hi].copy(), prev)  # (n, H, W, 2) float32
        seconds["flow"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        first = lo - 1 if prev is not None else lo  # the frame the call's first pair starts from
        for j, f in enumerate(pairs):
            clip = clip_of[first + j]
            if clip == clip_of[first + j + 1]:  # else the pair runs from one clip into the next
                x, y = encode_flow(f, config)
                flow_x[clip].append(x)
                flow_y[clip].append(y)
        seconds["encode"] += time.perf_counter() - t0
        prev, lo = grey[hi - 1], hi
    schema = clip_schema(with_flow=True)
    table = decoded.table
    for name, values in (("flow_x", flow_x), ("flow_y", flow_y), ("flow_bound", [config.flow_bound] * len(counts))):
        table = table.append_column(schema.field(name), pa.array(values, schema.field(name).type))
    return UnitResult(table=table, errors=decoded.errors, frames=decoded.frames, video_seconds=decoded.video_seconds,
                      seconds=seconds)


def encode_flow(flow: np.ndarray, config: PreprocessConfig) -> tuple[bytes, bytes]:
    """(H, W, 2) float32 pixels -> JPEG bytes of its x and y, quantized with ``flow_bound``."""
    qx, qy = quantize_flow(flow, config.flow_bound)
    return encode_jpeg(qx, config.jpeg_quality), encode_jpeg(qy, config.jpeg_quality)


def clip_row(w: Window, fps: float, size: tuple[int, int], frames: dict) -> dict:
    """The row of window ``w``'s clip (``clip_schema``'s columns but ``flow_bound``):
    ``frames`` holds ``frame_times_s`` and ``rgb`` (JPEG per frame), and with flow
    ``flow_x`` and ``flow_y``; ``fps`` frames per second; ``size`` (width, height) pixels."""
    width, height = size
    return {"key": w.key, "kind": w.kind, "video_id": w.video_id, "event_id": w.event_id,
            "event_label": w.event_label, "start_s": w.start_s, "end_s": w.end_s, "fps": fps,
            "num_frames": len(frames["rgb"]), "height": height, "width": width, **frames}


def unit_result(rows: list[dict], errors: list[dict], seconds: dict[str, float], with_flow: bool) -> UnitResult:
    """A unit's clips as one table (``clip_schema(with_flow)``), its failed windows and timings."""
    table = pa.Table.from_pylist(rows, schema=clip_schema(with_flow))
    return UnitResult(table=table, errors=errors, frames=sum(r["num_frames"] for r in rows),
                      video_seconds=sum(r["end_s"] - r["start_s"] for r in rows), seconds=seconds)


def _decode_windows(video_path: str, windows: list[Window], config: PreprocessConfig, seconds: dict[str, float], *,
                    flow: FlowMethod | None = None, keep_grey: bool = False) -> tuple[list[dict], list[dict]]:
    """Decode and JPEG-encode every window: a row per clip cut (with ``flow_x`` and
    ``flow_y`` where ``flow`` is given, its (n, H, W) grey chunks as ``grey`` where
    ``keep_grey``), and an error per window that failed (see ``cut_unit``)."""
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
                row = _decode_window(decoder, w, config, seconds, flow, keep_grey)
            except VideoError as e:
                errors.append({"key": w.key, "reason": e.reason})
                continue
            if not row["rgb"]:
                errors.append({"key": w.key, "reason": f"window [{w.start_s:.3f}, {w.end_s:.3f}) s holds no frame"})
                continue
            rows.append(clip_row(w, fps, decoder.size, row))
    return rows, errors


def _decode_window(decoder: WindowDecoder, w: Window, config: PreprocessConfig, seconds: dict[str, float],
                   flow: FlowMethod | None, keep_grey: bool) -> dict:
    """``frame_times_s`` and ``rgb`` (JPEG per frame) of one window, its ``flow_x`` and
    ``flow_y`` (JPEG per pair) where ``flow`` is given, its grey chunks as ``grey`` where
    ``keep_grey``."""
    row: dict = {"frame_times_s": [], "rgb": []}
    if flow is not None:
        row.update(flow_x=[], flow_y=[])
    if keep_grey:
        row["grey"] = []
    for chunk in frame_stream(decoder, w.start_s, w.end_s, max_fps=config.max_fps, chunk_frames=config.chunk_frames,
                              flow=flow, grey=keep_grey, seconds=seconds):
        row["frame_times_s"].extend(chunk.times_s.tolist())
        t0 = time.perf_counter()
        row["rgb"].extend(encode_jpeg(f, config.jpeg_quality) for f in chunk.rgb)
        for f in chunk.flow if chunk.flow is not None else ():
            x, y = encode_flow(f, config)
            row["flow_x"].append(x)
            row["flow_y"].append(y)
        seconds["encode"] += time.perf_counter() - t0
        if keep_grey:
            row["grey"].append(chunk.grey)
    return row
