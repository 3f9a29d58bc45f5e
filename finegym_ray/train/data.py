"""Training input on Ray Data: clip shards + manifest labels -> sampled, augmented uint8 clips.

``sampled_clips`` makes one Ray Data task per shard written by preprocessing: it reads
the columns the modality needs, and ``SampleClips`` keeps the clips of one split that
the task labels, samples frames, decodes and crops them. The train workers
then scale the uint8 samples (``model_input``), so what crosses the object store is a
quarter of float32.

The event task reads the shards' whole routines (rows of kind ``event``, cut with the
preprocessing setting ``events=true``), every other task their sub-actions (kind
``subaction``): ``labels.task_kind``. A routine is sampled like any clip: its segments
spread over the whole routine, and only the sampled frames are decoded.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from .. import storage
from ..dataset.augment import clip_input, decode_reduction, random_box, test_box
from ..dataset.coverage import task_labels
from ..dataset.labels import EVENT_IDS, SUB_TASKS, label_view, task_kind
from ..dataset.manifest import categories_from_table
from ..dataset.sampling import DenseSampler, SegmentSampler
from ..errors import InputError
from ..store import clips_dir, manifest_dir, manifest_table, require_store, settings_uri
from ..video_job import NO_RECORD, why_missing
from .config import TrainConfig


@dataclass(frozen=True)
class SplitLabels:
    """Class ids of one split for one task: clip key -> class id, and the class names.
    ``absent``: the split's labelled keys left out because they have no clip, each with
    why (``video_job.why_missing``: no video, failed unit, ...); empty until
    ``with_clips`` looked."""

    labels: dict[str, int]
    class_names: tuple[str, ...]
    # For element tasks, the coarser level of each class: level -> (set or event id per class).
    levels: dict[str, tuple[int, ...]] = field(default_factory=dict)
    absent: dict[str, str] = field(default_factory=dict)
    # For element tasks, each class's element (Glabel); empty for the others.
    glabels: tuple[int, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labelled(self) -> int:
        """The split's labelled keys, with a clip or not."""
        return len(self.labels) + len(self.absent)

    def absent_why(self) -> dict[str, int]:
        """How many labelled keys have no clip, by why, most first."""
        return dict(Counter(self.absent.values()).most_common())

    def absent_note(self) -> str:
        """``1,458 without a clip (1,400 no video, 58 failed unit)``; '' when none is absent."""
        if not self.absent:
            return ""
        return f"{len(self.absent):,} without a clip (" + ", ".join(
            f"{n:,} {why}" for why, n in self.absent_why().items()) + ")"

    def counts(self) -> np.ndarray:
        """Clips per class, (num_classes,) int64."""
        c = Counter(self.labels.values())
        return np.array([c.get(i, 0) for i in range(self.num_classes)], dtype=np.int64)


def load_split_labels(data: str, task: str, split: str) -> SplitLabels:
    """Labels of ``split`` for ``task`` from ``data``/manifest (written by preprocessing):
    every key ``dataset.coverage.task_labels`` gives the task in that split, whether its
    clip was cut or not (``with_clips`` keeps those that were). Raises ValueError naming
    the splits the manifest has when ``split`` labels nothing, for event ids outside the
    event task's 10 (rather than leave those routines out unsaid), and
    (``check_clip_kind``) when the clips beside the manifest were cut without the kind
    of clip the task classifies.
    """
    check_clip_kind(data, task)
    return manifest_split_labels(data, task, split)


def manifest_split_labels(data: str, task: str, split: str) -> SplitLabels:
    """``load_split_labels`` without the clips' settings: the labels the manifest gives,
    for input other than clips (poses)."""
    manifest = manifest_dir(data)
    categories = storage.read_parquet(manifest_table(manifest, "categories"))
    subsets, sets = categories_from_table(categories)
    view = label_view(task, subsets, sets)
    events = storage.read_parquet(manifest_table(manifest, "events"), columns=["event_key", "event_label"])
    if view.kind == "event":
        unknown = sorted(set(events.column("event_label").to_pylist()) - set(EVENT_IDS))
        if unknown:
            raise InputError(f"{manifest_table(manifest, 'events')}: event ids {', '.join(map(str, unknown))} are "
                             f"none of the event task's {len(EVENT_IDS)} (1-4 the women's VT, FX, BB, UB; 5-10 the "
                             f"men's)")
    path = manifest_table(manifest, "subactions")
    try:
        by_split = task_labels(task, subactions=storage.read_parquet(path), events=events, categories=categories)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    labels = by_split.get(split, {})
    if not labels:
        have = ", ".join(sorted(by_split)) or "none"
        if view.kind == "event":
            raise InputError(f"{manifest}: no routine is in split {split!r} of task {task!r} (its routines are "
                             f"split train/val per event; splits here: {have})")
        base = SUB_TASKS[task].base if task in SUB_TASKS else task
        where = f"{base}'s split files" if view.by_glabel is not None else "the manifest"
        raise InputError(f"{manifest}: no sub-action of split {split!r} has a label for task {task!r} "
                         f"(splits in {where}: {have})")
    levels, order = {}, []
    if view.by_glabel is not None:
        by_glabel = {c.glabel: c for cats in subsets.values() for c in cats.classes}
        order = sorted(view.by_glabel, key=view.by_glabel.get)
        levels = {"set": tuple(by_glabel[g].set_id for g in order), "event": tuple(by_glabel[g].event for g in order)}
    return SplitLabels(labels, view.class_names, levels, glabels=tuple(order))


def recorded_settings(data: str) -> dict:
    """The preprocessing settings recorded in ``data`` (preprocess.json), {} without the
    file. Their ``flow`` is a mapping ``{method, ...}``; InputError naming the file for
    any other (recorded by another version)."""
    import json

    uri = settings_uri(data)
    try:
        settings = json.loads(storage.read_text(uri)).get("settings") or {}
    except FileNotFoundError:
        return {}
    if "flow" in settings and not isinstance(settings["flow"], dict):
        raise InputError(f"{uri}: flow is {settings['flow']!r}, not a mapping of its method and options (recorded "
                         f"by another version): preprocess again into another --out")
    return settings


def check_clip_modality(data: str, modality: str) -> None:
    """Raise ValueError when a flow model is to read clips that the settings recorded in
    ``data`` say were cut without flow (``flow`` method "none": no flow columns)."""
    if modality != "flow":
        return
    if recorded_settings(data).get("flow", {}).get("method") == "none":
        raise InputError(f"{data}: a flow model (modality=flow) needs optical flow, but these clips were cut with "
                         f"flow=none (no flow columns): train with --set modality=rgb, or preprocess with a flow "
                         f"method (--set flow=dis) into another --out")


def check_data_settings(data: str, task: str, modality: str) -> None:
    """The checks of the preprocessing settings recorded in ``data`` against a task and
    modality (``check_clip_kind``, ``check_clip_modality``): reads preprocess.json only,
    so that the CLI runs them before Ray starts; first, that ``data`` is a store at all."""
    require_store(data)
    check_clip_kind(data, task)
    check_clip_modality(data, modality)


def check_clip_kind(data: str, task: str) -> None:
    """Raise ValueError when the preprocessing settings recorded in ``data``
    (preprocess.json) say that the clips were cut without the kind ``task`` classifies:
    the event task needs ``events=true``, the others ``subactions=true``. Without the
    file nothing is checked here (``shards_with`` then finds no clip of the kind)."""
    settings = recorded_settings(data)
    kind = task_kind(task)
    setting = "events" if kind == "event" else "subactions"
    if settings.get(setting) is False:
        what = "whole routines" if kind == "event" else "sub-actions"
        raise InputError(f"{data}: task {task!r} classifies {what}, but these clips were cut with {setting}=false: "
                         f"preprocess with --set {setting}=true (into another --out: an output keeps its settings)")


def resample_repeats(split: SplitLabels) -> dict[str, int]:
    """Class-balanced resampling: each clip repeated round(median count / its class count)
    times (at least once), so rare classes are seen about as often as typical ones."""
    counts = split.counts()
    median = float(np.median(counts[counts > 0]))
    return {k: max(1, int(round(median / counts[y]))) for k, y in split.labels.items()}


def clip_columns(modality: str) -> list[str]:
    """Shard columns a modality reads."""
    frames = ["rgb"] if modality == "rgb" else ["flow_x", "flow_y", "flow_bound"]
    return ["key", "kind", "num_frames", "height", "width", *frames]


def clip_index(data: str) -> pa.Table:
    """The ``key``, ``kind`` and ``__filename`` (the shard's path in its filesystem) of
    every clip under ``data``/clips; only those columns are read. FileNotFoundError
    without clips."""
    import pyarrow.dataset as pads

    fs, path = storage.pyarrow_filesystem(clips_dir(data))
    try:
        index = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=["key", "kind", "__filename"])
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(clips_dir(data)) from e
    storage.refuse_extension_columns(index.schema, clips_dir(data))  # before to_pylist converts
    return index


def _no_clip(data: str, kind: str) -> str:
    what = "routine (clips of kind event: preprocess with --set events=true)" if kind == "event" else "clip"
    return f"{clips_dir(data)}: no shard holds a {what} of this split"


def with_clips(data: str, split: SplitLabels, kind: str = "subaction") -> SplitLabels:
    """``split`` with only its keys that have a clip of ``kind`` under ``data``/clips;
    the others go to ``absent``, each with why (the store's error records,
    ``video_job.why_missing``). FileNotFoundError, saying why, when none has one."""
    index = clip_index(data)
    cut = {k for k, clip_kind in zip(index.column("key").to_pylist(), index.column("kind").to_pylist())
           if clip_kind == kind}
    present = {k: y for k, y in split.labels.items() if k in cut}
    if len(present) == len(split.labels):
        return split
    why = why_missing(data)
    absent = {k: why.get(k, NO_RECORD) for k in split.labels if k not in cut}
    result = replace(split, labels=present, absent=absent)
    if not present:
        causes = ", ".join(f"{n:,} {cause}" for cause, n in result.absent_why().items())
        raise FileNotFoundError(f"{_no_clip(data, kind)}: none of its {result.labelled:,} labelled keys has one "
                                f"({causes})")
    return result


def present_split_labels(data: str, task: str, split: str) -> SplitLabels:
    """``load_split_labels`` of the clips that exist (``with_clips``): what training and
    evaluation use, and what the split's labelled keys without a clip are and why."""
    return with_clips(data, load_split_labels(data, task, split), task_kind(task))


def shards_with(data: str, labels: dict[str, int], kind: str = "subaction") -> list[str]:
    """URIs of the clip shards under ``data``/clips holding at least one clip of ``kind``
    (``subaction`` or ``event``) in ``labels`` (only the key and kind columns are read).
    Raises FileNotFoundError when there is none."""
    index = clip_index(data)
    found = sorted({f for k, clip_kind, f in zip(*(index.column(c).to_pylist() for c in ("key", "kind", "__filename")))
                    if clip_kind == kind and k in labels})
    if not found:
        raise FileNotFoundError(_no_clip(data, kind))
    prefix = "s3://" if storage.parse_uri(data).is_s3 else ""
    return [prefix + f for f in found]


class SampleClips:
    """``map_batches`` callable: labelled clips -> model samples.

    Needs the columns of ``clip_columns``. Adds ``x`` (uint8; training: (T, C, H, W),
    testing: (V, T, C, H, W) with V = test_views x test_crops), ``label`` (int64),
    ``flow_bound`` (float32 pixels, 0 for RGB) and keeps ``key``. Rows not in
    ``labels``, and rows of another kind than the task's (``task_kind``: routines for
    the event task, sub-actions for the others), are dropped; ``repeats`` emits a row
    several times (resampling).
    """

    def __init__(self, config: TrainConfig, labels: dict[str, int], *, train: bool,
                 repeats: dict[str, int] | None = None):
        self.config = config
        self.labels = labels
        self.train = train
        self.repeats = repeats or {}
        self.flow = config.modality == "flow"
        self.kind = task_kind(config.task)
        if config.clip_model:
            self.sampler = DenseSampler(config.segments, config.dense_stride)
        else:
            self.sampler = SegmentSampler(config.segments, config.frames_per_segment)

    def __call__(self, batch: dict) -> dict:
        import cv2

        cv2.setNumThreads(1)  # one data task per CPU: OpenCV's pool would oversubscribe it
        # Fresh entropy per batch: the instance is pickled into every task, so a Generator
        # made in __init__ would repeat the same draws in each of them.
        self.rng = np.random.default_rng()
        c = self.config
        shape = (0, c.segments, c.in_channels, *c.input_size)
        if not self.train:
            shape = (0, c.test_views * c.test_crops, *shape[1:])
        xs, ys, keys, bounds = [], [], [], []
        for i, key in enumerate(batch["key"]):
            if batch["kind"][i] != self.kind or key not in self.labels:
                continue
            n = int(batch["num_frames"][i])
            frames = (batch["flow_x"][i], batch["flow_y"][i]) if self.flow else batch["rgb"][i]
            items = n - 1 if self.flow else n
            short = min(int(batch["height"][i]), int(batch["width"][i]))
            for _ in range(self.repeats.get(key, 1)):
                # A one-frame clip has no flow field: it enters as no motion (128 dequantizes
                # to ~0 px), so that every labelled clip yields a sample (evaluation
                # scores every one).
                xs.append(self._sample(frames, items, short) if items >= 1 else np.full(shape[1:], 128, np.uint8))
                ys.append(self.labels[key])
                keys.append(key)
                bounds.append(float(batch["flow_bound"][i]) if self.flow else 0.0)
        return {"key": np.array(keys, dtype=object),
                "x": np.stack(xs) if xs else np.zeros(shape, np.uint8),
                "label": np.array(ys, dtype=np.int64),
                "flow_bound": np.array(bounds, dtype=np.float32)}

    def _layout(self, idx: np.ndarray) -> np.ndarray:
        # Dense clips come as (1, length): one frame per time step, like segments of length 1.
        return idx.reshape(-1, 1) if self.config.clip_model else idx

    def _sample(self, frames, items: int, short: int) -> np.ndarray:
        c = self.config
        aspect = c.input_size[1] / c.input_size[0]
        # Decode as small as the crop allows: the stored short side over the test scale.
        reduction = decode_reduction(short, int(np.ceil(short * c.crop / c.test_short)) if self.train
                                     else c.test_short)
        if self.train:
            idx = self._layout(self.sampler.train(items, self.rng))
            flip = c.flip and bool(self.rng.integers(2))
            return clip_input(frames, idx, flow=self.flow, size=c.input_size, flip=flip, reduction=reduction,
                              box_fn=lambda h, w: random_box(h, w, self.rng, aspect=aspect))
        views = []
        for v in range(c.test_views):
            idx = self._layout(self.sampler.test(items, v, c.test_views))
            for k in range(c.test_crops):
                views.append(clip_input(frames, idx, flow=self.flow, size=c.input_size, flip=False,
                                        reduction=reduction, box_fn=lambda h, w, k=k: test_box(
                                            h, w, c.crop / c.test_short, k, c.test_crops, aspect=aspect)))
        return np.stack(views)


class SampleShards(SampleClips):
    """``map_batches`` callable over rows ``{"shard": URI}``: reads each shard's columns
    and returns its samples (see SampleClips)."""

    def __call__(self, batch: dict) -> dict:
        import pyarrow.compute as pc

        tables = [storage.read_parquet(uri, columns=clip_columns(self.config.modality)) for uri in batch["shard"]]
        table = pa.concat_tables(tables)
        # Only the rows sampled here become Python objects: a shard cut with events=true
        # holds each routine (a minute or more of JPEG frames) beside its sub-actions.
        table = table.filter(pc.and_(pc.equal(table.column("kind"), self.kind),
                                     pc.is_in(table.column("key"), value_set=pa.array(list(self.labels), pa.string()))))
        return super().__call__({c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names})


def sampled_clips(config: TrainConfig, split: SplitLabels, *, train: bool, one_view: bool = False):
    """The Ray Dataset of samples of one split. ``one_view``: test sampling with a single
    centre view (validation during training).

    One Ray Data task per shard reads it (only the modality's columns) and samples its
    labelled clips, so JPEG bytes never cross the object store and the first batch is
    ready after one shard. Training draws a new shard order each epoch and shuffles
    within a buffer on the workers. (``ray.data.read_parquet`` spent seconds per epoch
    listing and sampling files before its first block, longer than a demo epoch.)
    """
    import ray.data

    if one_view:
        config = replace(config, test_views=1, test_crops=1)
    repeats = resample_repeats(split) if train and config.class_balance == "resample" else None
    shards = shards_with(config.data, split.labels, task_kind(config.task))
    ds = ray.data.from_items([{"shard": uri} for uri in shards], override_num_blocks=len(shards))
    if train:
        ds = ds.randomize_block_order()
    return ds.map_batches(SampleShards(config, split.labels, train=train, repeats=repeats), batch_size=1,
                          batch_format="numpy")
