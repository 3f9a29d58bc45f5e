"""The pose store: 2-D poses per sub-action beside a store's clips, read per task and
split with the labels clips get.

``STORE/poses/<video_id>.parquet`` (``store.pose_shard_uri``), one row per sub-action
key of that video: ``key``, ``video_id``, ``event_id`` (as the clip shards carry them),
``label`` (the label of the file the poses came from: mmaction2's Gym99 class, SynGym's
Glabel; tasks do not use it), ``height``, ``width`` (pixels of the frames the keypoints
are in), ``persons``, ``frames``, ``keypoint`` (list<float32>: persons x frames x 17 x
2, x and y in pixels, row-major) and ``keypoint_score`` (list<float32>: persons x frames
x 17, 0 to 1). The schema metadata records that layout and the format version.

:func:`task_poses` labels the poses of a task's split exactly as training labels clips
(``coverage.task_labels`` over the store's manifest, by key), so Gym99, Gym288, VT, FX,
FX-S1, UB-S1, set and the event of each sub-action select poses as they select clips.
No Ray, no torch.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .. import storage
from ..errors import InputError
from ..store import pose_shard_uri, poses_dir
from .errors import FormatError
from .keys import parse_instance_key
from .poses import COCO17, JOINTS, PoseRecord, read_pose_pickle

POSE_FORMAT = 1
_META = b"finegym_ray.poses"
_SCHEMA = pa.schema([("key", pa.string()), ("video_id", pa.string()), ("event_id", pa.string()),
                     ("label", pa.int32()), ("height", pa.int32()), ("width", pa.int32()),
                     ("persons", pa.int32()), ("frames", pa.int32()),
                     ("keypoint", pa.list_(pa.float32())), ("keypoint_score", pa.list_(pa.float32()))])


@dataclass(frozen=True)
class PosesWritten:
    """What :func:`write_poses` wrote: sub-actions, their frames, and one shard per video."""

    records: int
    frames: int
    shards: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.records:,} sub-actions ({self.frames:,} frames) of {len(self.shards):,} videos"


def write_poses(store: str, records: Sequence[PoseRecord], *, source: str) -> PosesWritten:
    """Write ``records`` under ``store``/poses, one shard per video, each written whole
    and atomically: a video's shard holds this call's records of it and nothing older.
    ``source``: where they came from, recorded in each shard. InputError for a record
    whose key is not a FineGym sub-action key or repeats one, before anything is written."""
    by_video: dict[str, list[tuple[PoseRecord, str]]] = defaultdict(list)
    seen: set[str] = set()
    for r in records:
        try:
            parsed = parse_instance_key(r.key)
        except InputError as e:
            raise InputError(f"{source}: record {r.key!r}: {e}") from None
        if r.key in seen:
            raise InputError(f"{source}: two records of key {r.key!r}")
        seen.add(r.key)
        by_video[parsed.video_id].append((r, parsed.event_id))
    metadata = {_META: json.dumps({"format": POSE_FORMAT, "joints": list(COCO17), "source": source,
                                   "keypoint": f"persons x frames x {JOINTS} x 2 (x, y pixels), row-major",
                                   "keypoint_score": f"persons x frames x {JOINTS}"}).encode()}
    shards = []
    for video_id, rows in sorted(by_video.items()):
        rows.sort(key=lambda row: row[0].key)
        table = pa.table({
            "key": [r.key for r, _ in rows], "video_id": [video_id] * len(rows), "event_id": [e for _, e in rows],
            "label": [r.label for r, _ in rows], "height": [r.img_shape[0] for r, _ in rows],
            "width": [r.img_shape[1] for r, _ in rows], "persons": [r.keypoint.shape[0] for r, _ in rows],
            "frames": [r.total_frames for r, _ in rows],
            "keypoint": [r.keypoint.astype(np.float32).ravel() for r, _ in rows],
            "keypoint_score": [r.score.astype(np.float32).ravel() for r, _ in rows],
        }, schema=_SCHEMA.with_metadata(metadata))
        uri = pose_shard_uri(store, video_id)
        storage.write_parquet(table, uri)
        shards.append(uri)
    return PosesWritten(len(records), sum(r.total_frames for r in records), tuple(shards))


def import_pose_pickle(pickle_uri: str, store: str) -> PosesWritten:
    """The poses of an mmaction2 pose pickle (FineGym's ``gym_2d.pkl`` or SynGym's),
    read as data only (``poses.read_pose_pickle``), written under ``store``/poses."""
    records, _ = read_pose_pickle(pickle_uri)
    return write_poses(store, records, source=pickle_uri)


def read_poses(store: str, keys: Collection[str] | None = None) -> list[PoseRecord]:
    """The poses under ``store``/poses, in key order: of ``keys`` only (those that have
    poses) or every one. FormatError naming a shard of another format or with arrays
    that do not hold their recorded shape."""
    if keys is None:
        shards = storage.list_uris(poses_dir(store), suffix=".parquet")
    else:
        videos = {parse_instance_key(k).video_id for k in keys}
        shards = [uri for uri in (pose_shard_uri(store, v) for v in sorted(videos)) if storage.exists(uri)]
    wanted = None if keys is None else set(keys)
    records = [r for uri in shards for r in _read_shard(uri) if wanted is None or r.key in wanted]
    return sorted(records, key=lambda r: r.key)


def _read_shard(uri: str) -> list[PoseRecord]:
    table = storage.read_parquet(uri)
    try:
        meta = json.loads((table.schema.metadata or {}).get(_META, b"null"))
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != POSE_FORMAT:
        raise FormatError(uri, None, f"not a pose shard of format {POSE_FORMAT} (import the poses again with "
                                     f"'finegym-ray import-poses')")
    missing = [f.name for f in _SCHEMA if f.name not in table.column_names]
    if missing:
        raise FormatError(uri, None, f"a pose shard without {', '.join(missing)}")
    columns = {name: table.column(name).to_pylist() for name in ("key", "label", "height", "width", "persons",
                                                                   "frames")}
    arrays = {}
    for name in ("keypoint", "keypoint_score"):
        lists = table.column(name).combine_chunks()
        arrays[name] = (lists.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False),
                        lists.offsets.to_numpy())
    out = []
    for i, key in enumerate(columns["key"]):
        persons, frames = columns["persons"][i], columns["frames"][i]
        keypoint, score = (values[offsets[i]:offsets[i + 1]] for values, offsets in arrays.values())
        if keypoint.size != persons * frames * JOINTS * 2 or score.size != persons * frames * JOINTS:
            raise FormatError(uri, None, f"row {key!r}: keypoint holds {keypoint.size} values and keypoint_score "
                                         f"{score.size}, not those of {persons} persons x {frames} frames")
        out.append(PoseRecord(key=key, label=columns["label"][i],
                              img_shape=(columns["height"][i], columns["width"][i]), total_frames=frames,
                              keypoint=keypoint.reshape(persons, frames, JOINTS, 2),
                              score=score.reshape(persons, frames, JOINTS)))
    return out


def pose_keys(store: str) -> set[str]:
    """The sub-action keys that have poses under ``store``/poses (only the shards' key
    column is read); empty when there are none."""
    return {k for uri in storage.list_uris(poses_dir(store), suffix=".parquet")
            for k in storage.read_parquet(uri, columns=["key"]).column("key").to_pylist()}
