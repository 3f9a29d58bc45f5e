"""The two actors of feature extraction and the snippet layout they share.

    DecodeSnippets (CPU): a work item (a video, a routine, a clip shard) -> snippet rows,
        uint8 as the backbone takes them, frames and flow read through video/stream.py
    EmbedSnippets (GPU where there are GPUs): snippet rows -> the backbone's features()

A snippet is ``snippet_frames`` consecutive sampled frames, one every ``stride_frames``;
the run's test sampler picks its segments (or dense frames) from them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from .. import storage
from ..video_job import (
    failure_reason,
)
from .backbone import Backbone
from .config import ExtractConfig


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
                yield _rows(item, status="failed", reason=failure_reason(e, item["uri"]), backbone=self.b)

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
        from ..dataset.augment import crop_resize
        from ..preprocess.local_copy import local_copy
        from ..video.decode import VideoError, WindowDecoder
        from ..video.flow import quantize_flow
        from ..video.stream import frame_stream

        c, b = self.config, self.b
        path = local_copy(item["uri"], c.cache_dir, int(c.cache_gb * 2**30))
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
            seen, k = 0, 0
            pending: list[tuple[int, float, float, np.ndarray]] = []
            for chunk in frame_stream(dec, start_s, end_s, max_fps=b.fps, chunk_frames=64, flow=self.flow):
                m = len(chunk.times_s)
                times[seen:seen + m] = chunk.times_s
                if chunk.flow is not None:
                    qx, qy = quantize_flow(chunk.flow, b.flow_bound)
                    box = self._box(*chunk.grey.shape[1:3])
                    for j in range(len(chunk.flow)):
                        frames[chunk.first_pair + j] = np.stack([crop_resize(qx[j], box, b.input_size),
                                                                 crop_resize(qy[j], box, b.input_size)])
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


_OUT_SCHEMA = pa.schema([("group", pa.string()), ("kind", pa.string()), ("index", pa.int64()),
                         ("count", pa.int64()), ("start", pa.float64()), ("end", pa.float64()),
                         ("key", pa.string()), ("status", pa.string()), ("reason", pa.string()),
                         ("features", pa.list_(pa.float32()))])


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
