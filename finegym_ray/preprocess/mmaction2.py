"""mmaction2's FineGym layouts read into the store's clips: what ``import-mmaction2``
does per work unit, without Ray.

mmaction2's ``tools/data/gym`` leaves one item per sub-action, named by its FineGym key
(``<youtube_id>_E_XXXXXX_YYYYYY_A_ZZZZ_WWWW``, the annotation JSON's own ids):

- trimmed videos (``trim_subaction.py``): ``DIR/<key>.mp4``, the sub-action from its
  first stage's start to its last stage's end, re-encoded;
- rawframes (``build_rawframes.py --task both``, i.e. denseflow):
  ``DIR/<key>/img_00001.jpg ...`` (RGB) and ``flow_x_00001.jpg``, ``flow_y_00001.jpg``
  (grey): TV-L1 flow from frame i to i + 1, each component clipped to +-20 px and mapped
  linearly onto 0..255, ``q = round(255 (f + 20) / 40)`` (127.5 is no motion). denseflow
  writes one flow frame fewer than RGB frames; extractors that write as many leave a
  last flow frame that runs past the clip, which is dropped.

What is read becomes clips through preprocessing's own code (``clips.py``): a trimmed
video is decoded, resized and given flow by ``cut_unit``, as a raw video's window is;
rawframes are resized to ``short_side`` (flow vectors scaled with the frame), their
flow de-quantized from bound 20 and quantized again with the store's ``flow_bound``, and
JPEG-encoded with the store's quality. Rawframes carry no frame times: a clip's rate is
its frame count over its annotated window.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np

from .. import storage
from ..dataset.keys import parse_instance_key
from ..errors import InputError
from ..video.decode import VideoError, probe, resized_size
from ..video.encode import decode_jpeg, encode_jpeg
from ..video.files import VIDEO_EXTENSIONS, find_videos
from ..video.flow import FlowMethod, dequantize_flow, quantize_flow
from ..video_job import failure_reason, no_frames_reason, no_video_reason
from .clips import UnitResult, clip_row, cut_unit, encode_flow, unit_result
from .config import FlowConfig, PreprocessConfig
from .local_copy import local_copy
from .units import Window

SUBACTIONS = "subactions"  # trimmed sub-action videos
RAWFRAMES = "rawframes"  # a folder of RGB and flow JPEGs per sub-action
LAYOUTS = (SUBACTIONS, RAWFRAMES)

# mmaction2's build_rawframes.py runs denseflow with -b=20: flow clipped to +-20 px.
DENSEFLOW_BOUND = 20.0
_FRAME_FILE = re.compile(r"(img|flow_x|flow_y)_(\d{5,})\.jpg")
# Frame files read at a time per clip (S3 latency).
_READ_THREADS = 16
# The error record of an item whose name is no sub-action key: OUT/errors/<this><digest>.json.
UNKNOWN_ITEM = "unknown_item."
# OpenCV's JPEG quality unless told otherwise, which denseflow's frames have.
DENSEFLOW_JPEG_QUALITY = 95


@dataclass(frozen=True)
class Found:
    """What a source folder holds. ``items``: sub-action key -> the URI of its video
    file or frame folder; ``files``: rawframes only, key -> the names of its folder's
    files; ``unknown``: item name -> (URI, why it is not imported) for the items whose
    name is no sub-action key of the annotations."""

    items: dict[str, str]
    files: dict[str, list[str]]
    unknown: dict[str, tuple[str, str]]


def import_config(config: PreprocessConfig, layout: str) -> PreprocessConfig:
    """``config`` as an import of ``layout`` uses it. InputError for what mmaction2's
    layouts cannot give: routines (``events=true``; they hold sub-actions) and, from
    rawframes, ``max_fps`` (the frames carry no times, and their flow runs between
    consecutive frames). From rawframes the flow is the frames' own TV-L1, so the method
    is recorded as ``tvl1`` with OpenCV's defaults (denseflow's) unless ``flow=none``."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown mmaction2 layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if config.events or not config.subactions:
        raise InputError("import-mmaction2 imports sub-actions: mmaction2's gym layouts hold no routines; "
                         "leave events=false and subactions=true")
    if layout == RAWFRAMES and config.max_fps is not None:
        raise InputError("max_fps: rawframes carry no frame times and their flow runs between consecutive "
                         "frames, so they are imported whole; leave max_fps=null")
    if layout == RAWFRAMES and config.flow.with_flow:
        return replace(config, flow=FlowConfig("tvl1"))
    return config


def origin(config: PreprocessConfig, layout: str) -> str:
    """Where an import's clips and their flow came from, in words (the store records it,
    and training says it)."""
    if layout == RAWFRAMES:
        flow = f"flow tvl1 (denseflow JPEG, bound {DENSEFLOW_BOUND:g})" if config.flow.with_flow else "no flow"
        return f"imported from mmaction2 rawframes; {flow}"
    flow = f"flow {config.flow.method} computed at import" if config.flow.with_flow else "no flow"
    return f"imported from mmaction2 trimmed sub-action videos; {flow}"


def find_items(layout: str, root: str, keys: set[str]) -> Found:
    """The items under ``root`` (local or s3://, listed once) matched against the
    annotations' sub-action ``keys``. Hidden files and folders are left out. InputError
    when ``root`` holds no item of the layout, or none named by a key: a wrong folder or
    wrong annotations, which would record every key as missing."""
    if layout == SUBACTIONS:
        by_name, files = find_videos(root), {}
        what = f"no video files ({', '.join(VIDEO_EXTENSIONS)})"
    else:
        by_name, files = _frame_folders(root)
        what = "no folders of frames (<key>/img_00001.jpg ...)"
    if not by_name:
        raise InputError(f"--{layout} {root}: {what} there")
    items = {name: uri for name, uri in by_name.items() if name in keys}
    if not items:
        example = sorted(by_name)[0]
        raise InputError(f"--{layout} {root}: none of its {len(by_name)} item(s) is named by a sub-action key of "
                         f"the annotations (e.g. {example!r}): another folder or other annotations?")
    unknown = {name: (uri, unknown_reason(name)) for name, uri in by_name.items() if name not in keys}
    return Found(items, {k: files[k] for k in items if k in files}, unknown)


def _frame_folders(root: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(name -> URI, name -> file names) of the items directly under ``root``: folders
    with the files directly in them, and files (as items without files)."""
    uris: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    for uri in storage.list_uris(root):
        parts = uri[len(root):].strip("/").split("/")
        if any(p.startswith(".") for p in parts):
            continue
        uris.setdefault(parts[0], uri if len(parts) == 1 else storage.join(root, parts[0]))
        if len(parts) == 2:
            files.setdefault(parts[0], []).append(parts[1])
    return uris, files


def unknown_reason(name: str) -> str:
    """Why an item called ``name`` is not imported: it is no sub-action key of the annotations."""
    try:
        parse_instance_key(name)
    except InputError:
        return "its name is not a FineGym sub-action key (<youtube_id>_E_XXXXXX_YYYYYY_A_ZZZZ_WWWW)"
    return "its name is a FineGym key, but not of a sub-action of these annotations"


def unknown_record_name(name: str) -> str:
    """The error record's name of an item whose name is no key (names can be anything)."""
    return UNKNOWN_ITEM + hashlib.sha1(name.encode()).hexdigest()[:16]


def frame_count(names: Iterable[str], *, with_flow: bool) -> tuple[int, str | None]:
    """(RGB frames, None) of a rawframes folder holding files ``names``, or (0, why it
    cannot be imported): frames must be numbered 1, 2, ... without a gap and, with flow,
    ``flow_x`` and ``flow_y`` as many as each other and one fewer than the RGB frames or
    as many. Other files are left alone."""
    numbers: dict[str, list[int]] = defaultdict(list)
    for name in names:
        m = _FRAME_FILE.fullmatch(name)
        if m:
            numbers[m[1]].append(int(m[2]))
    kinds = ("img", "flow_x", "flow_y") if with_flow else ("img",)
    for kind in kinds:
        found = set(numbers[kind])
        if not found and kind == "img":
            return 0, "no RGB frames (img_00001.jpg ...)"
        if found != set(range(1, len(found) + 1)):
            missing = sorted(set(range(1, max(found) + 1)) - found)
            if not missing:
                return 0, f"{kind} frames numbered from {kind}_{min(found):05d}.jpg, not {kind}_00001.jpg"
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            return 0, f"frames missing: {kind}_{missing[0]:05d}.jpg{more} of {kind}_00001..{max(found):05d}.jpg"
    rgb = len(numbers["img"])
    if with_flow:
        fx, fy = len(numbers["flow_x"]), len(numbers["flow_y"])
        if fx != fy or fx not in (rgb - 1, rgb):
            return 0, (f"{rgb} RGB frames but {fx} flow_x and {fy} flow_y frames (expected {rgb - 1} of each, "
                       f"or {rgb})")
    return rgb, None


def plan_sources(windows: Iterable[Window], found: Found, layout: str, root: str,
                 config: PreprocessConfig) -> tuple[dict[str, dict], list[dict]]:
    """What to read for each of ``windows``, and the windows that cannot be imported:
    (key -> ``uri`` and, for rawframes, ``frames``; [{``key``, ``reason``}]). Decided on
    the driver, from the listing alone."""
    sources, failed = {}, []
    for w in windows:
        uri = found.items.get(w.key)
        if uri is None:
            reason = no_video_reason(w.key, root) if layout == SUBACTIONS else no_frames_reason(w.key, root)
            failed.append({"key": w.key, "reason": reason})
            continue
        if layout == SUBACTIONS:
            sources[w.key] = {"uri": uri}
            continue
        frames, reason = frame_count(found.files.get(w.key, []), with_flow=config.flow.with_flow)
        if reason:
            failed.append({"key": w.key, "reason": reason})
        else:
            sources[w.key] = {"uri": uri, "frames": frames}
    return sources, failed


def import_unit(windows: list[Window], sources: dict[str, dict], failed: list[dict], layout: str,
                config: PreprocessConfig, flow: FlowMethod | None) -> UnitResult:
    """One work unit's clips: every window with a source (``plan_sources``) read and
    made into a clip row; a window that fails (an unreadable video or frame) joins the
    ``failed`` ones in ``UnitResult.errors`` with its reason. ``flow``: the flow method
    of ``config`` for trimmed videos (None: built per clip), unused for rawframes."""
    rows, errors = [], list(failed)
    seconds: dict[str, float] = defaultdict(float)
    for w in windows:
        source = sources.get(w.key)
        if source is None:
            continue
        try:
            if layout == SUBACTIONS:
                rows.append(_trimmed_clip(w, source["uri"], config, flow, seconds))
            else:
                rows.append(_rawframes_clip(w, source["uri"], source["frames"], config, seconds))
        except Exception as e:  # noqa: BLE001 - one bad clip must not cost its unit
            errors.append({"key": w.key, "reason": failure_reason(e, source["uri"])})
    return unit_result(rows, errors, seconds, config.flow.with_flow)


def _trimmed_clip(w: Window, uri: str, config: PreprocessConfig, flow: FlowMethod | None,
                  seconds: dict[str, float]) -> dict[str, Any]:
    """The row of ``w`` from its trimmed video at ``uri``: the whole file, cut as
    preprocessing cuts a window; its times moved to the raw video's (the file starts
    at ``w.start_s``)."""
    t0 = time.perf_counter()
    path = local_copy(uri, config.cache_dir, int(config.cache_gb * 2**30))
    seconds["fetch"] += time.perf_counter() - t0
    cut = cut_unit(path, [replace(w, start_s=0.0, end_s=probe(path).duration_s)], config, flow)
    for stage, s in cut.seconds.items():
        seconds[stage] += s
    if cut.errors:
        raise VideoError(uri, cut.errors[0]["reason"])
    row = cut.table.to_pylist()[0]
    row["frame_times_s"] = [w.start_s + t for t in row["frame_times_s"]]
    return {**row, "start_s": w.start_s, "end_s": w.end_s}


def _rawframes_clip(w: Window, folder: str, frames: int, config: PreprocessConfig,
                    seconds: dict[str, float]) -> dict[str, Any]:
    """The row of ``w`` from its ``frames`` RGB frames (and their flow, with flow) in
    ``folder``."""
    duration = w.end_s - w.start_s
    if duration <= 0:
        raise VideoError(folder, f"its annotated window [{w.start_s:.3f}, {w.end_s:.3f}) s is empty")
    rgb = _read_frames(folder, "img", frames, seconds)
    height, width = rgb[0].shape[:2]
    size = resized_size(width, height, config.short_side or None)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"frame_times_s": [w.start_s + i * duration / frames for i in range(frames)],
                           "rgb": [encode_jpeg(_resized(f, size), config.jpeg_quality) for f in rgb]}
    seconds["encode"] += time.perf_counter() - t0
    if config.flow.with_flow:
        pairs = zip(_read_frames(folder, "flow_x", frames - 1, seconds),
                    _read_frames(folder, "flow_y", frames - 1, seconds))
        t0 = time.perf_counter()
        encoded = [encode_flow(_resized_flow(x, y, size), config) for x, y in pairs]
        row.update(flow_x=[x for x, _ in encoded], flow_y=[y for _, y in encoded])
        seconds["encode"] += time.perf_counter() - t0
    clip = clip_row(w, frames / duration, size, row)
    return {**clip, "flow_bound": config.flow_bound} if config.flow.with_flow else clip


def _read_frames(folder: str, kind: str, n: int, seconds: dict[str, float]) -> list[np.ndarray]:
    """Frames 1..``n`` of ``kind`` (img: (H, W, 3) RGB; flow_x, flow_y: (H, W) grey), all
    of one size; VideoError naming the first that does not decode or differs in size."""
    names = [f"{kind}_{i:05d}.jpg" for i in range(1, n + 1)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, min(_READ_THREADS, n))) as pool:
        data = list(pool.map(lambda name: storage.read_bytes(storage.join(folder, name)), names))
    seconds["read"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = []
    for name, blob in zip(names, data):
        try:
            frame = decode_jpeg(blob)
        except InputError:
            raise VideoError(storage.join(folder, name), f"{name}: not a decodable JPEG ({len(blob)} bytes)") from None
        if kind != "img" and frame.ndim == 3:  # a grey image saved with three equal channels
            frame = frame[..., 0]
        if kind == "img" and frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
        if frames and frame.shape != frames[0].shape:
            raise VideoError(storage.join(folder, name), f"{name}: {frame.shape[1]}x{frame.shape[0]} pixels, "
                                                         f"but {kind}_00001.jpg {frames[0].shape[1]}x"
                                                         f"{frames[0].shape[0]}")
        frames.append(frame)
    seconds["decode"] += time.perf_counter() - t0
    return frames


def _resized(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` at ``size`` (width, height) pixels: area averaging when it shrinks,
    bicubic (as preprocessing's decoder scales) when it grows."""
    if (frame.shape[1], frame.shape[0]) == size:
        return frame
    shrinks = size[0] * size[1] < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_CUBIC)


def _resized_flow(qx: np.ndarray, qy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) float32 pixels of ``size`` from denseflow's quantized components: the
    field resized with the frame and its vectors scaled by the same factors."""
    flow = np.stack([dequantize_flow(qx, DENSEFLOW_BOUND), dequantize_flow(qy, DENSEFLOW_BOUND)], axis=-1)
    height, width = flow.shape[:2]
    if (width, height) == size:
        return flow
    flow = _resized(flow, size)
    return flow * np.array([size[0] / width, size[1] / height], dtype=np.float32)


def write_rawframes(folder: str, rgb: np.ndarray, flow: np.ndarray) -> None:
    """One sub-action as mmaction2's rawframes in ``folder`` (local or s3://; the smoke
    test's source): ``img_%05d.jpg`` of the (n, H, W, 3) RGB frames ``rgb``, and
    ``flow_x_%05d.jpg``, ``flow_y_%05d.jpg`` of the (n - 1, H, W, 2) flow ``flow`` in
    pixels, quantized with bound 20 as denseflow quantizes its TV-L1."""
    for i, frame in enumerate(rgb, 1):
        storage.write_bytes(storage.join(folder, f"img_{i:05d}.jpg"), encode_jpeg(frame, DENSEFLOW_JPEG_QUALITY))
    for i, pair in enumerate(flow, 1):
        for name, q in zip(("flow_x", "flow_y"), quantize_flow(pair, DENSEFLOW_BOUND)):
            storage.write_bytes(storage.join(folder, f"{name}_{i:05d}.jpg"), encode_jpeg(q, DENSEFLOW_JPEG_QUALITY))
