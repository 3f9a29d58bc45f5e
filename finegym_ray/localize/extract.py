"""Feature extraction for localization on Ray Data: videos -> snippet feature sequences.

    driver: the backbone (a trained recognition run), the work items (one per video at
            action level, one per routine at sub-action level, one per clip shard for the
            element features), the items whose file is already complete skipped; the
            backbone's weights loaded once, here (a state that would run code is
            refused before any Ray work), into the object store for the actors
      └─ Ray Data: from_items(items)
           DecodeSnippets (CPU actor pool): fetch the video once per node, seek and
               decode only the window, resized at decode to the run's preprocessing
               short side; flow with the run's preprocessing method for flow runs; each
               snippet cropped and sampled as the run was tested (uint8); element items
               read their shard's clips instead
           EmbedSnippets (GPU actors where the cluster has GPUs, else CPU): the backbone's
               ``features()``, batched
      └─ driver: collects the snippets of each item, writes its file when the last one
         arrives (features.py: atomic), errors/<item>.json for a bad video, progress,
         summary.json

A snippet is ``snippet_frames`` consecutive sampled frames (at ``fps``, or the clips'
rate), one every ``stride_frames``; the run's test sampler picks its segments (or dense
frames) from them, so the backbone sees a snippet as it saw a clip in evaluation.
Element features (FineGym's released per-instance features): each sub-action clip of
the run's own preprocessed store cut into ``segments`` equal parts, one snippet each.

The driver owns every write of a file, so a killed driver leaves complete files only,
and a rerun of the same command skips them (same settings hash in their footer) and
refuses an output holding files made with other settings.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .. import storage
from ..config import check_range
from ..errors import InputError
from ..progress import rate_eta
from ..store import clips_dir, error_uri, errors_dir, settings_uri, summary_uri
from . import features as F

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".avi")
KINDS = ("action", "subaction", "elements")


@dataclass(frozen=True)
class ExtractConfig:
    """Frames, pixels, seconds; rates in frames per second."""

    # action: snippets over whole videos; subaction: over each routine (event instance),
    # times relative to the routine start.
    level: str = "action"
    # A snippet: this many consecutive sampled frames, one snippet every stride_frames.
    snippet_frames: int = 16
    stride_frames: int = 8
    # Sampling rate (0: the clips' rate: the run's preprocessing max_fps, else the video's).
    # A lower rate for whole videos, e.g. 8, covers a 10-minute video in fewer snippets.
    fps: float = 0.0
    # Short side frames are decoded at (pixels; 0: native); None: the run's preprocessing
    # short side (flow in pixels then matches what the run trained on).
    short_side: int | None = None
    # Network input (pixels); 0: the run's (crop x input_width).
    input_height: int = 0
    input_width: int = 0
    # Per-instance element features: snippets per instance, and whether to write them.
    segments: int = 12
    elements: bool = True
    # Snippets per backbone call.
    batch_size: int = 32
    # Decoding actors (0: pool_sizes decides) and CPUs each.
    workers: int = 0
    cpus_per_worker: float = 1.0
    # Backbone actors (0: one per gpus_per_model_worker GPUs, else one on CPUs) and what
    # each takes: GPUs where the cluster has them, else model_cpus CPUs (torch threads).
    model_workers: int = 0
    gpus_per_model_worker: float = 1.0
    model_cpus: float = 1.0
    # Node-local folder (absolute) for videos fetched from s3://, and its size cap. None:
    # a private folder per user (preprocess.local_copy.default_folder).
    cache_dir: str | None = None
    cache_gb: float = 50.0

    def __post_init__(self) -> None:
        problems = []
        if self.level not in F.LEVELS:
            problems.append(f"level must be one of {', '.join(F.LEVELS)}, got {self.level!r}")
        for name in ("snippet_frames", "stride_frames", "segments", "batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "model_workers", "input_height", "input_width"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.short_side is not None and (self.short_side < 0 or self.short_side % 2):
            problems.append(f"short_side must be null, 0 or a positive even number, got {self.short_side}")
        if bool(self.input_height) != bool(self.input_width) and self.input_width:
            problems.append("input_width needs input_height")
        check_range(problems, "fps", self.fps, ge=0)
        check_range(problems, "cpus_per_worker", self.cpus_per_worker, gt=0)
        check_range(problems, "model_cpus", self.model_cpus, gt=0)
        check_range(problems, "gpus_per_model_worker", self.gpus_per_model_worker, gt=0)
        if self.cache_dir is not None and not os.path.isabs(self.cache_dir):
            problems.append(f"cache_dir must be an absolute folder path or null, got {self.cache_dir!r}")
        check_range(problems, "cache_gb", self.cache_gb, ge=0)
        if problems:
            raise InputError("extract config: " + "; ".join(problems))


# ------------------------------------------------------------------------ backbone


@dataclass(frozen=True)
class Backbone:
    """What the actors need to rebuild and feed the backbone (pickles into Ray workers).

    ``train``: the run's TrainConfig as a dict; ``classes``: the classes its model was
    trained on (the size of its head); ``short_side`` (pixels, 0 native),
    ``fps`` (None: the video's), ``flow`` ({method, options} or None), ``flow_bound``
    (pixels): how frames are decoded and flow computed, the run's preprocessing settings
    unless the config overrides them; ``input_size`` (height, width) pixels."""

    run: str
    checkpoint: str
    epoch: int
    train: dict
    classes: int
    short_side: int
    fps: float | None
    flow: dict | None
    flow_bound: float
    input_size: tuple[int, int]
    store: str

    @property
    def modality(self) -> str:
        return self.train["modality"]

    @property
    def clip_model(self) -> bool:
        from ..train.config import CLIP_MODELS

        return self.train["model"] in CLIP_MODELS


def open_backbone(run: str, config: ExtractConfig) -> Backbone:
    """The backbone of ``run`` (a run folder: its newest complete checkpoint; or one
    ``epoch_NNNN`` checkpoint folder). FileNotFoundError / ValueError with one line
    saying why when it is not one. Reads no weights (no torch)."""
    from ..train import checkpoint as checkpoints
    from ..train.data import recorded_settings
    from ..train.run import checkpoint_config

    try:
        checkpoint = checkpoints.open_checkpoint(run)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"--run {e}") from None
    except checkpoints.CheckpointError as e:
        raise InputError(f"--run {e}") from None
    run = checkpoints.run_of(checkpoint.uri)
    train = checkpoint_config(checkpoint)
    class_names = checkpoint.meta.get("class_names")
    if not isinstance(class_names, list) or not class_names:
        raise InputError(f"--run {checkpoint.uri}/meta.json names no classes: not a checkpoint of a trained run")
    settings = recorded_settings(train.data)
    flow = settings.get("flow") if train.modality == "flow" else None
    if train.modality == "flow":
        method = flow.get("method") if isinstance(flow, dict) else flow
        if not method or method == "none":
            raise InputError(f"--run {run}: a flow model, but its clips' preprocessing settings "
                             f"({settings_uri(train.data)}) name no flow method to compute flow "
                             "with")
        flow = flow if isinstance(flow, dict) else {"method": flow}
        flow = {"method": flow["method"], "options": {k: v for k, v in flow.items() if k != "method"}}
        # A GPU flow method runs on the decoding actors' CPUs here.
        if "device" in flow["options"]:
            flow["options"]["device"] = "cpu"
    short = config.short_side if config.short_side is not None else settings.get("short_side", train.test_short)
    fps = config.fps or settings.get("max_fps") or None
    size = (config.input_height, config.input_width or config.input_height) if config.input_height \
        else train.input_size
    return Backbone(run=run, checkpoint=checkpoint.uri, epoch=checkpoint.epoch, train=asdict(train),
                    classes=len(class_names), short_side=int(short or 0), fps=float(fps) if fps else None, flow=flow,
                    flow_bound=float(settings.get("flow_bound", 20.0)), input_size=tuple(size), store=train.data)


def sequence_settings(backbone: Backbone, config: ExtractConfig) -> dict[str, Any]:
    """What determines a sequence file's content (hashed into its footer)."""
    return {"checkpoint": backbone.checkpoint, "level": config.level, "snippet_frames": config.snippet_frames,
            "stride_frames": config.stride_frames, "fps": backbone.fps, "short_side": backbone.short_side,
            "input_size": list(backbone.input_size), "flow": backbone.flow, "flow_bound": backbone.flow_bound}


def element_settings(backbone: Backbone, config: ExtractConfig) -> dict[str, Any]:
    """What determines an elements file's content."""
    return {"checkpoint": backbone.checkpoint, "segments": config.segments, "input_size": list(backbone.input_size)}


# ------------------------------------------------------------------- snippet layout


def snippet_starts(num_frames: int, snippet_frames: int, stride_frames: int) -> np.ndarray:
    """First frame of each snippet over ``num_frames`` sampled frames: every
    ``stride_frames`` while a whole snippet fits; a window shorter than one snippet
    (but with a frame) gets one snippet of all its frames."""
    if num_frames < 1:
        return np.zeros(0, np.int64)
    count = 1 + max(num_frames - snippet_frames, 0) // stride_frames
    return np.arange(count, dtype=np.int64) * stride_frames


def _sampler(train: dict):
    from ..dataset.sampling import DenseSampler, SegmentSampler
    from ..train.config import CLIP_MODELS

    if train["model"] in CLIP_MODELS:
        return DenseSampler(train["segments"], train["dense_stride"]), True
    return SegmentSampler(train["segments"], train["frames_per_segment"]), False


def sample_indices(train: dict, items: int) -> np.ndarray:
    """(T, L) item indices of one snippet (or segment) of ``items`` items, as the run's
    test sampler takes them (view 0 of 1: the centre)."""
    sampler, dense = _sampler(train)
    idx = sampler.test(max(items, 1), 0, 1)
    return idx.reshape(-1, 1) if dense else idx


# -------------------------------------------------------------------- the actors


def _empty_x(backbone: Backbone) -> np.ndarray:
    t = backbone.train
    channels = (3 if t["modality"] == "rgb" else 2) * t["frames_per_segment"]
    return np.zeros((0, t["segments"], channels, *backbone.input_size), np.uint8)


def _rows(item: dict, *, status: str = "ok", reason: str = "", count: int = 0, index=(), start=(), end=(),
          keys=(), x: np.ndarray | None = None, bound: float = 0.0, backbone: Backbone) -> dict[str, Any]:
    n = len(index) if status == "ok" else 1
    x = x if x is not None else np.zeros((n, *_empty_x(backbone).shape[1:]), np.uint8)
    return {"group": np.array([item["group"]] * n, dtype=object), "kind": np.array([item["kind"]] * n, dtype=object),
            "index": np.asarray(index if status == "ok" else [0], np.int64), "count": np.full(n, count, np.int64),
            "start": np.asarray(start if status == "ok" else [0.0], np.float64),
            "end": np.asarray(end if status == "ok" else [0.0], np.float64),
            "key": np.array(list(keys) if status == "ok" else [""], dtype=object),
            "status": np.array([status] * n, dtype=object), "reason": np.array([reason] * n, dtype=object),
            "x": x, "flow_bound": np.full(n, bound, np.float32)}


class DecodeSnippets:
    """``map_batches`` actor (CPU): work items -> snippet rows, as a generator.

    Needs per item: ``group`` (output name), ``kind`` (action, subaction, elements),
    ``uri`` (video or clip shard), ``start_s``/``end_s`` (seconds in the video; end
    < 0: the whole video). Yields rows: group, kind, index (snippet number), count
    (snippets of the item), start/end (seconds, relative to ``start_s`` at sub-action
    level), key (element instance key, else ""), x (uint8 (T, C, H, W) as the backbone
    takes it), flow_bound (pixels), status ("ok" or "failed") and reason. A failed item
    yields one row with status "failed"; the actor goes on with the next.
    """

    def __init__(self, backbone: Backbone, config: ExtractConfig):
        from ..video.encode import set_thread_limits

        set_thread_limits(1)  # one thread per actor: the pool is the parallelism
        self.b = backbone
        self.config = config
        self.flow = None
        if backbone.flow:
            from ..video.flow import build_flow

            self.flow = build_flow(backbone.flow["method"], **backbone.flow["options"])

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for i in range(len(batch["group"])):
            item = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in batch.items()}
            try:
                if item["kind"] == "elements":
                    yield from self._elements(item)
                else:
                    yield from self._video(item)
            except Exception as e:  # noqa: BLE001 - one bad video must not stop the job
                yield _rows(item, status="failed", reason=_failure(e, item["uri"]), backbone=self.b)

    # -- video snippets ---------------------------------------------------------------

    def _frame_input(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) -> (3, h, w) uint8: the centre test box, resized to the input."""
        from ..dataset.augment import crop_resize

        return crop_resize(rgb, self._box(*rgb.shape[:2]), self.b.input_size).transpose(2, 0, 1)

    def _box(self, h: int, w: int):
        from ..dataset.augment import test_box

        t = self.b.train
        aspect = self.b.input_size[1] / self.b.input_size[0]
        return test_box(h, w, t["crop"] / t["test_short"], aspect=aspect)

    def _video(self, item: dict) -> Iterator[dict[str, Any]]:
        import cv2

        from ..dataset.augment import crop_resize
        from ..preprocess.local_copy import local_copy
        from ..video.decode import VideoError, WindowDecoder
        from ..video.flow import quantize_flow

        c, b = self.config, self.b
        path = local_copy(item["uri"], c.cache_dir, int(c.cache_gb * 2**30))
        flow = self.flow is not None
        with WindowDecoder(path, short_side=b.short_side or None) as dec:
            start_s = float(item["start_s"])
            end_s = float(item["end_s"]) if item["end_s"] >= 0 else dec.info.duration_s
            picked = dec.select(start_s, end_s, max_fps=b.fps)
            n = len(picked)
            if n == 0:
                raise VideoError(path, f"no frame in [{start_s:.3f}, {end_s:.3f}) s")
            starts = snippet_starts(n, c.snippet_frames, c.stride_frames)
            rate = min(dec.info.fps, b.fps) if b.fps else dec.info.fps
            offset = start_s if item["kind"] == "subaction" else 0.0
            frames: dict[int, np.ndarray] = {}  # frame number -> (C, h, w) input (flow: of pair j, j+1)
            times = np.zeros(n, np.float64)
            prev_grey, seen, k = None, 0, 0
            pending: list[tuple[int, float, float, np.ndarray]] = []
            for chunk in dec.iter_decode(start_s, end_s, max_fps=b.fps, chunk_frames=64):
                m = len(chunk)
                times[seen:seen + m] = chunk.times_s
                if flow:
                    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in chunk.rgb])
                    fields = self.flow(grey, prev_grey)  # (pairs, H, W, 2) px: pair j is frames j, j+1
                    first = seen - 1 if prev_grey is not None else 0
                    qx, qy = quantize_flow(fields, b.flow_bound)
                    box = self._box(*grey.shape[1:3])
                    for j in range(len(fields)):
                        frames[first + j] = np.stack([crop_resize(qx[j], box, b.input_size),
                                                      crop_resize(qy[j], box, b.input_size)])
                    prev_grey = grey[-1]
                else:
                    for j in range(m):
                        frames[seen + j] = self._frame_input(chunk.rgb[j])
                seen += m
                while k < len(starts) and (min(starts[k] + c.snippet_frames, n) <= seen):
                    pending.append(self._snippet(frames, times, int(starts[k]), n, rate, offset))
                    k += 1
                    if len(pending) >= c.batch_size:
                        yield self._emit(item, pending, len(starts))
                        pending = []
                low = int(starts[k]) if k < len(starts) else seen
                for j in [j for j in frames if j < low]:
                    del frames[j]
            if k < len(starts):
                raise VideoError(path, f"decoded {seen} of {n} frames")
            if pending:
                yield self._emit(item, pending, len(starts))

    def _snippet(self, frames: dict, times: np.ndarray, s: int, n: int, rate: float,
                 offset: float) -> tuple[int, float, float, np.ndarray]:
        length = min(self.config.snippet_frames, n - s)
        items = length - 1 if self.flow is not None else length
        if items < 1:  # one frame has no flow field: no motion (128 dequantizes to ~0 px)
            x = np.full(_empty_x(self.b).shape[1:], 128, np.uint8)
        else:
            idx = sample_indices(self.b.train, items)  # (T, L)
            x = np.stack([np.concatenate([frames[s + int(i)] for i in row]) for row in idx])
        start = times[s] - offset
        end = times[s + length - 1] + 1.0 / rate - offset
        return s // self.config.stride_frames, float(start), float(end), x

    def _emit(self, item: dict, pending: list, count: int) -> dict[str, Any]:
        index, start, end, xs = zip(*pending)
        return _rows(item, count=count, index=index, start=start, end=end, keys=[""] * len(index),
                     x=np.stack(xs), bound=self.b.flow_bound, backbone=self.b)

    # -- element instances ------------------------------------------------------------

    def _elements(self, item: dict) -> Iterator[dict[str, Any]]:
        import pyarrow.compute as pc

        from ..dataset.augment import clip_input, decode_reduction, test_box
        from ..train.data import clip_columns

        b, c, t = self.b, self.config, self.b.train
        table = storage.read_parquet(item["uri"], columns=clip_columns(b.modality))
        table = table.filter(pc.equal(table.column("kind"), "subaction"))
        flow = b.modality == "flow"
        aspect = b.input_size[1] / b.input_size[0]
        count = table.num_rows * c.segments
        pending: list[tuple[int, str, np.ndarray, float]] = []
        for i, row in enumerate(table.to_pylist()):
            n = int(row["num_frames"])
            items = n - 1 if flow else n
            short = min(int(row["height"]), int(row["width"]))
            frames = (row["flow_x"], row["flow_y"]) if flow else row["rgb"]
            for s in range(c.segments):
                lo = int(math.floor(s * items / c.segments))
                hi = max(int(math.floor((s + 1) * items / c.segments)), lo + 1)
                if items < 1:
                    x = np.full(_empty_x(b).shape[1:], 128, np.uint8)
                else:
                    idx = np.minimum(lo + sample_indices(t, min(hi, items) - lo), items - 1)
                    x = clip_input(frames, idx, flow=flow, size=b.input_size, flip=False,
                                   reduction=decode_reduction(short, t["test_short"]),
                                   box_fn=lambda h, w: test_box(h, w, t["crop"] / t["test_short"], aspect=aspect))
                pending.append((i * c.segments + s, row["key"], x, float(row["flow_bound"]) if flow else 0.0))
                if len(pending) >= c.batch_size:
                    yield self._emit_elements(item, pending, count)
                    pending = []
        if pending:
            yield self._emit_elements(item, pending, count)
        if count == 0:
            yield _rows(item, status="empty", reason="no sub-action clip in this shard", backbone=self.b)

    def _emit_elements(self, item: dict, pending: list, count: int) -> dict[str, Any]:
        index, keys, xs, bounds = zip(*pending)
        rows = _rows(item, count=count, index=index, start=[0.0] * len(index), end=[0.0] * len(index), keys=keys,
                     x=np.stack(xs), backbone=self.b)
        rows["flow_bound"] = np.asarray(bounds, np.float32)
        return rows


def _failure(e: Exception, uri: str) -> str:
    from ..video.decode import VideoError

    if isinstance(e, VideoError):
        return e.reason
    if isinstance(e, FileNotFoundError):
        return f"not found: {uri}"
    return f"unexpected {type(e).__name__}: {e}"


_OUT_SCHEMA = pa.schema([("group", pa.string()), ("kind", pa.string()), ("index", pa.int64()),
                         ("count", pa.int64()), ("start", pa.float64()), ("end", pa.float64()),
                         ("key", pa.string()), ("status", pa.string()), ("reason", pa.string()),
                         ("features", pa.list_(pa.float32()))])


def backbone_weights(backbone: Backbone) -> dict:
    """The model state dict of ``backbone``'s checkpoint, verified against its manifest
    and loaded on CPU (``Checkpoint.load_state``): on the driver, before any Ray work, so
    that a state that would run code is refused in one line (UnsafeCheckpointError) and
    no actor reads or unpickles the file."""
    from ..train import checkpoint as checkpoints

    checkpoint = checkpoints.open_at(backbone.checkpoint)
    if checkpoint is None:
        raise FileNotFoundError(f"{backbone.checkpoint}: checkpoint gone")
    return checkpoint.load_state()["model"]


class EmbedSnippets:
    """``map_batches`` actor (GPU where the cluster has GPUs, else CPU): snippet rows ->
    the backbone's ``features()`` (C,) float32 per row (failed rows: empty), with
    the input normalised as in training (``train.steps.model_input``).

    ``weights``: the backbone's state dict as the driver loaded it (``backbone_weights``),
    or its ObjectRef (one copy in the object store for every actor)."""

    def __init__(self, backbone: Backbone, weights, threads: int):
        import ray
        import torch

        from ..config import from_dict
        from ..train.config import TrainConfig
        from ..train.loop import model_for

        torch.set_num_threads(max(int(threads), 1))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.b = backbone
        model = model_for(from_dict(TrainConfig, backbone.train), backbone.classes, pretrained=False)
        model.load_state_dict(ray.get(weights) if isinstance(weights, ray.ObjectRef) else weights)
        self.model = model.eval().to(self.device)

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        import torch

        from ..train.steps import model_input

        ok = np.array([s == "ok" for s in batch["status"]])
        feats: list[list[float]] = [[] for _ in ok]
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(batch["x"][ok])).to(self.device)
            bound = torch.from_numpy(np.asarray(batch["flow_bound"][ok], np.float32))
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                out = self.model.features(model_input(x, bound, modality=self.b.modality,
                                                      clip_model=self.b.clip_model)).float().cpu().numpy()
            for j, row in zip(np.flatnonzero(ok), out):
                feats[j] = row.tolist()
        cols = {k: list(batch[k]) for k in ("group", "kind", "key", "status", "reason")}
        return pa.table({**cols, "index": batch["index"], "count": batch["count"], "start": batch["start"],
                         "end": batch["end"], "features": pa.array(feats, pa.list_(pa.float32()))}
                        ).select(_OUT_SCHEMA.names).cast(_OUT_SCHEMA)


# -------------------------------------------------------------------- pools


@dataclass(frozen=True)
class Pools:
    """decoders: DecodeSnippets actors, ``cpus_per_worker`` CPUs each; embedders:
    EmbedSnippets actors, each ``gpus`` GPUs (0: on CPUs, ``cpus`` each)."""

    decoders: int
    embedders: int
    gpus: float
    cpus: float


def pool_sizes(config: ExtractConfig, resources: dict[str, float], items: int) -> Pools:
    """Both actor pools for ``items`` work items on a cluster with ``resources``
    (``ray.cluster_resources()``). With GPUs: one backbone actor per
    ``gpus_per_model_worker`` GPUs and a decoder per CPU; without: one backbone actor of
    ``model_cpus`` CPUs and the other CPUs decoding (a 2-core machine: one of each)."""
    cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    if gpus > 0:
        embedders = config.model_workers or max(int(gpus // config.gpus_per_model_worker), 1)
        decoders = config.workers or max(int(cpus // config.cpus_per_worker), 1)
        return Pools(max(min(decoders, items), 1), embedders, config.gpus_per_model_worker, 0.0)
    embedders = config.model_workers or 1
    decoders = config.workers or max(int((cpus - embedders * config.model_cpus) // config.cpus_per_worker), 1)
    return Pools(max(min(decoders, items), 1), embedders, 0.0, config.model_cpus)


# -------------------------------------------------------------------- planning


def find_video_files(videos: str) -> dict[str, str]:
    """video id (file name without extension) -> URI for every video below ``videos``
    (.mp4 preferred where one exists in several containers). ValueError for none."""
    found: dict[str, str] = {}
    for uri in storage.list_uris(videos):
        stem, ext = os.path.splitext(uri.rsplit("/", 1)[-1])
        if ext.lower() in VIDEO_EXTENSIONS and (stem not in found or ext.lower() == ".mp4"):
            found[stem] = uri
    if not found:
        raise InputError(f"--videos {videos}: no video files ({', '.join(VIDEO_EXTENSIONS)}) there")
    return found


def plan_items(config: ExtractConfig, backbone: Backbone, annotations: str,
               video_uris: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(work items, items without a video file) of the level, then the element shards."""
    from ..dataset.manifest import build_manifest_from

    events = build_manifest_from(annotations).events.to_pylist()
    items, missing = [], []
    if config.level == "action":
        for vid in sorted({e["video_id"] for e in events}):
            item = {"group": vid, "kind": "action", "video_id": vid, "uri": video_uris.get(vid, ""),
                    "start_s": 0.0, "end_s": -1.0}
            (items if vid in video_uris else missing).append(item)
    else:
        for e in sorted(events, key=lambda e: e["event_key"]):
            item = {"group": e["event_key"], "kind": "subaction", "video_id": e["video_id"],
                    "uri": video_uris.get(e["video_id"], ""),
                    "start_s": float(e["start_s"]), "end_s": float(e["end_s"])}
            (items if e["video_id"] in video_uris else missing).append(item)
    if config.elements:
        for uri in storage.list_uris(clips_dir(backbone.store), suffix=".parquet"):
            name = uri.rsplit("/", 1)[-1].removesuffix(".parquet")
            items.append({"group": name, "kind": "elements", "video_id": "", "uri": uri, "start_s": 0.0,
                          "end_s": -1.0})
    return items, missing


def output_uri(out: str, item: dict) -> str:
    if item["kind"] == "elements":
        return F.element_uri(out, item["group"])
    return F.sequence_uri(out, item["kind"], item["group"])


def item_error_uri(out: str, item: dict) -> str:
    return error_uri(out, f"{item['kind']}_{item['group']}")


def split_done(out: str, items: list[dict], hashes: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(items to do, items complete with this run's settings). ValueError naming the
    settings when a file there was made with others (a mixed output would hold two
    kinds of features)."""
    present = set()
    for kind in KINDS:
        folder = storage.join(out, kind)
        present.update(storage.list_uris(folder, suffix=F.SUFFIX))
    candidates = [it for it in items if output_uri(out, it) in present]

    def meta(it: dict):
        try:
            return it, F.read_meta(output_uri(out, it))[1]
        except (F.FeatureFormatError, FileNotFoundError):
            return it, None  # not a complete file of ours: made again

    with ThreadPoolExecutor(16) as pool:
        metas = list(pool.map(meta, candidates))
    done, other = set(), []
    for it, m in metas:
        if m is None:
            continue
        want = hashes["elements" if it["kind"] == "elements" else "sequence"]
        if m.get("settings_hash") == want:
            done.add(id(it))
        else:
            other.append((it, m))
    if other:
        it, m = other[0]
        theirs = {k: m.get(k) for k in ("run", "checkpoint", "level", "snippet_frames", "stride_frames", "fps",
                                         "segments") if k in m}
        raise InputError(f"{out} holds {len(other)} feature file(s) made with other settings, e.g. "
                         f"{output_uri(out, it)} ({', '.join(f'{k}={v}' for k, v in theirs.items())}): "
                         f"extract into another --out, or use the same run and settings to resume")
    return [it for it in items if id(it) not in done], [it for it in items if id(it) in done]


# -------------------------------------------------------------------- the job


def run_extract(config: ExtractConfig, run: str, videos: str, annotations: str, out: str, *,
                connect: Callable[[], None] | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Extract the features of ``config.level`` (and the element features) into ``out``;
    returns the summary (also OUT/summary.json). ``connect`` starts or joins Ray, called
    after every check that needs none (a bad run, videos, annotations or an output made
    with other settings is refused before Ray starts); None: Ray is connected already."""
    t0 = time.time()
    backbone = open_backbone(run, config)
    video_uris = find_video_files(videos)
    items, missing = plan_items(config, backbone, annotations, video_uris)
    hashes = {"sequence": F.settings_hash(sequence_settings(backbone, config)),
              "elements": F.settings_hash(element_settings(backbone, config))}
    todo, done = split_done(out, items, hashes)
    weights = backbone_weights(backbone) if todo else None  # before anything is written, and before Ray
    for it in missing:
        _record(out, it, f"no video file {it['video_id']}.* under {videos}")
    kinds = {k: sum(it["kind"] == k for it in items) for k in KINDS}
    say(f"backbone {backbone.checkpoint} ({backbone.train['model']} {backbone.modality}); "
        f"{kinds[config.level]} {config.level} item(s), {kinds['elements']} element shard(s): "
        f"{len(done)} already done, {len(missing)} without a video file, {len(todo)} to extract")
    if todo and connect is not None:
        connect()
    stats = _extract_on_ray(config, backbone, weights, todo, out, hashes, say) if todo else {
        "written": 0, "failed": 0, "snippets": 0, "wall_s": 0.0, "steady_snippets_per_s": None, "pools": None}
    summary = {"level": config.level, "run": backbone.run, "checkpoint": backbone.checkpoint,
               "settings_hash": hashes, "settings": sequence_settings(backbone, config),
               "items": {"planned": len(items), "skipped": len(done), "written": stats["written"],
                         "failed": stats["failed"] + len(missing)},
               "snippets": stats["snippets"], "extract_wall_s": round(stats["wall_s"], 3),
               "snippets_per_s": round(stats["snippets"] / stats["wall_s"], 2) if stats["wall_s"] else None,
               "steady_snippets_per_s": round(stats["steady_snippets_per_s"], 2)
               if stats["steady_snippets_per_s"] else None,
               "pools": stats["pools"], "wall_s": round(time.time() - t0, 3)}
    storage.write_text(summary_uri(out), json.dumps(summary, indent=1))
    return summary


def _record(out: str, item: dict, reason: str) -> None:
    storage.write_text(item_error_uri(out, item), json.dumps({**{k: item[k] for k in ("group", "kind", "uri")},
                                                         "reason": reason}, indent=1))


def _worker_env() -> dict[str, Any] | None:
    env = storage.worker_env()
    return {"env_vars": env} if env else None


def _extract_on_ray(config: ExtractConfig, backbone: Backbone, weights: dict, items: list[dict], out: str,
                    hashes: dict[str, str], say: Callable[[str], None]) -> dict[str, Any]:
    import ray
    import ray.data

    from ..capacity import Need, StallWatchdog, check_capacity

    pools = pool_sizes(config, ray.cluster_resources(), len(items))
    # One actor of each pool must fit, or the pipeline waits forever.
    check_capacity([Need("decoding actor", 1, {"CPU": float(config.cpus_per_worker)}),
                    Need("backbone actor", 1, {"GPU": pools.gpus} if pools.gpus else {"CPU": pools.cpus})],
                   what="extract-features")
    watchdog = StallWatchdog("extract-features", say=say)
    say(f"{pools.decoders} decoding actor(s), {pools.embedders} backbone actor(s) "
        + (f"with {pools.gpus:g} GPU each" if pools.gpus else f"on {pools.cpus:g} CPU(s) each"))
    env = _worker_env()
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(DecodeSnippets, fn_constructor_kwargs={"backbone": backbone, "config": config},
                        batch_size=1, batch_format="numpy", num_cpus=config.cpus_per_worker, runtime_env=env,
                        compute=ray.data.ActorPoolStrategy(size=pools.decoders, max_tasks_in_flight_per_actor=1))
    resources = {"num_gpus": pools.gpus} if pools.gpus else {"num_cpus": pools.cpus}
    ds = ds.map_batches(EmbedSnippets, fn_constructor_kwargs={"backbone": backbone, "weights": ray.put(weights),
                                                              "threads": int(pools.cpus) or 1},
                        batch_size=config.batch_size, batch_format="numpy", runtime_env=env,
                        compute=ray.data.ActorPoolStrategy(size=pools.embedders), **resources)
    collected: dict[str, dict] = {}
    by_group = {(it["kind"], it["group"]): it for it in items}
    written = failed = snippets = 0
    t0 = last = time.time()
    first: tuple[float, int] | None = None  # (time, snippets) when the first batch arrived
    with watchdog:
        for table in ds.iter_batches(batch_size=None, prefetch_batches=0, batch_format="pyarrow"):
            watchdog.progress()
            written, failed, snippets = _collect(table, collected, by_group, out, backbone, config, hashes, say,
                                                 counts=(written, failed, snippets))
            now = time.time()
            first = first or (now, snippets)
            if now - last >= 5.0 or written + failed == len(items):
                last = now
                say(f"{rate_eta(written + failed, len(items), now - t0, 'items')} ({failed} failed), "
                    f"{snippets} snippets, {snippets / max(now - t0, 1e-9):.1f} snippets/s")
    unfinished = [k for k, s in collected.items() if not s["closed"]] + [k for k in by_group if k not in collected]
    for key in unfinished:
        failed += 1
        _record(out, by_group[key], "the pipeline ended before all its snippets arrived")
    end = time.time()
    # After the first batch: the rate once both pools run, without the actors' start.
    steady = (snippets - first[1]) / (end - first[0]) if first and end > first[0] else None
    return {"written": written, "failed": failed, "snippets": snippets, "wall_s": end - t0,
            "steady_snippets_per_s": steady, "pools": asdict(pools)}


def _collect(table, collected: dict, by_group: dict, out: str, backbone: Backbone, config: ExtractConfig,
             hashes: dict[str, str], say: Callable[[str], None], *,
             counts: tuple[int, int, int]) -> tuple[int, int, int]:
    """Take one batch of snippet rows: a group's file is written when its last snippet
    arrives, a failed group recorded in errors/. Returns (written, failed, snippets)
    counted on from ``counts``."""
    written, failed, snippets = counts
    for row in table.to_pylist():
        key = (row["kind"], row["group"])
        state = collected.setdefault(key, {"rows": {}, "closed": False})
        if state["closed"]:
            continue
        if row["status"] == "empty":  # a clip shard without sub-actions: nothing to write
            state["closed"] = True
            continue
        if row["status"] != "ok":
            state["closed"] = True
            failed += 1
            _record(out, by_group[key], row["reason"])
            say(f"failed: {row['kind']} {row['group']}: {row['reason']}")
            continue
        state["rows"][row["index"]] = row
        snippets += 1
        if len(state["rows"]) == row["count"]:
            state["closed"] = True
            _write(out, by_group[key], state["rows"], backbone, config, hashes)
            state["rows"] = {}
            written += 1
    return written, failed, snippets


def _write(out: str, item: dict, rows: dict[int, dict], backbone: Backbone, config: ExtractConfig,
           hashes: dict[str, str]) -> None:
    ordered = [rows[i] for i in sorted(rows)]
    feats = np.array([r["features"] for r in ordered], np.float32)
    meta = {"run": backbone.run, "checkpoint": backbone.checkpoint, "epoch": backbone.epoch,
            "model": backbone.train["model"], "modality": backbone.modality}
    if item["kind"] == "elements":
        keys = [r["key"] for r in ordered[::config.segments]]
        F.write_elements(output_uri(out, item), keys=keys,
                         features=feats.reshape(len(keys), config.segments, -1),
                         meta={**meta, **element_settings(backbone, config), "settings_hash": hashes["elements"]})
    else:
        F.write_sequence(output_uri(out, item), video_id=item["group"],
                         starts=np.array([r["start"] for r in ordered]), ends=np.array([r["end"] for r in ordered]),
                         features=feats,
                         meta={**meta, **sequence_settings(backbone, config), "settings_hash": hashes["sequence"],
                               "video_uri": item["uri"], "window_start_s": item["start_s"]})
    with suppress(FileNotFoundError):
        storage.delete(item_error_uri(out, item))  # an earlier run's failure of this item is history now


def check_inputs(config: ExtractConfig, run: str, videos: str, annotations: str) -> Backbone:
    """The refusals that need no Ray: a run without a checkpoint, videos that are not
    there, annotations that do not read. Returns the backbone."""
    from ..dataset.manifest import build_manifest_from

    backbone = open_backbone(run, config)
    find_video_files(videos)
    build_manifest_from(annotations)
    return backbone


def format_summary(summary: dict[str, Any], out: str) -> str:
    """A few lines for the terminal: counts, rate, where the outputs are."""
    i = summary["items"]
    rate = f", {summary['snippets_per_s']:.1f} snippets/s" if summary.get("snippets_per_s") else ""
    lines = [f"items: {i['written']} written, {i['skipped']} skipped (already done), {i['failed']} failed "
             f"of {i['planned']}; {summary['snippets']} snippets in {summary['extract_wall_s']:.1f} s{rate}",
             f"features: {storage.join(out, summary['level'])}/"]
    if storage.list_uris(storage.join(out, F.ELEMENTS)):
        lines.append(f"elements: {storage.join(out, F.ELEMENTS)}/")
    if storage.list_uris(errors_dir(out)):
        lines.append(f"errors:   {errors_dir(out)}/")
    lines.append(f"summary:  {summary_uri(out)}")
    return "\n".join(lines)


__all__ = ["Backbone", "DecodeSnippets", "EmbedSnippets", "ExtractConfig", "Pools", "backbone_weights",
           "check_inputs", "find_video_files", "format_summary", "open_backbone", "plan_items", "pool_sizes",
           "run_extract", "sample_indices", "snippet_starts"]

