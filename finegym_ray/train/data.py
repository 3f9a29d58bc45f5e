"""Training input on Ray Data: clip shards + manifest labels -> sampled, augmented uint8 clips.

``read_clips`` reads the shards written by preprocessing (only the columns the modality
needs); ``SampleClips`` (a ``map_batches`` callable on CPU tasks) keeps the clips of one
split that the task labels, samples frames, decodes and crops them. The train workers
then scale the uint8 samples (``model_input``), so what crosses the object store is a
quarter of float32.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from .. import storage
from ..dataset.augment import clip_input, decode_reduction, random_box, test_box
from ..dataset.labels import label_view
from ..dataset.manifest import categories_from_table
from ..dataset.sampling import DenseSampler, SegmentSampler
from .config import TrainConfig


@dataclass(frozen=True)
class SplitLabels:
    """Class ids of one split for one task: clip key -> class id, and the class names."""

    labels: dict[str, int]
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> np.ndarray:
        """Clips per class, (num_classes,) int64."""
        c = Counter(self.labels.values())
        return np.array([c.get(i, 0) for i in range(self.num_classes)], dtype=np.int64)


def load_split_labels(data: str, task: str, split: str) -> SplitLabels:
    """Labels of ``split`` for ``task`` from ``data``/manifest (written by preprocessing).

    Raises ValueError naming the splits the manifest has when ``split`` labels nothing.
    """
    manifest = storage.join(data, "manifest")
    subactions = storage.read_parquet(storage.join(manifest, "subactions.parquet"),
                                      columns=["key", "split", "event_label", "set_id", "glabel"])
    subsets, sets = categories_from_table(storage.read_parquet(storage.join(manifest, "categories.parquet")))
    view = label_view(task, subsets, sets)
    labels = {}
    for row in subactions.to_pylist():
        if row["split"] != split:
            continue
        y = view.label(event=row["event_label"], set_id=row["set_id"], glabel=row["glabel"])
        if y is not None:
            labels[row["key"]] = y
    if not labels:
        have = sorted({s for s in subactions.column("split").to_pylist() if s})
        raise ValueError(f"{manifest}: no sub-action of split {split!r} has a {task} label "
                         f"(splits in the manifest: {', '.join(have) or 'none'})")
    return SplitLabels(labels, view.class_names)


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


def read_clips(data: str, modality: str, *, shuffle: bool = False):
    """The clip shards under ``data``/clips as a Ray Dataset (local folder or s3://);
    ``shuffle``: a new file order each epoch."""
    import ray.data

    fs, path = storage.pyarrow_filesystem(storage.join(data, "clips"))
    ds = ray.data.read_parquet(path, filesystem=fs, file_extensions=["parquet"], shuffle="files" if shuffle else None)
    return ds.select_columns(clip_columns(modality))  # pushed down into the read


class SampleClips:
    """``map_batches`` callable: labelled clips -> model samples.

    Needs the columns of ``clip_columns``. Adds ``x`` (uint8; training: (T, C, H, W),
    testing: (V, T, C, H, W) with V = test_views x test_crops), ``label`` (int64),
    ``flow_bound`` (float32 pixels, 0 for RGB) and keeps ``key``. Rows not in
    ``labels`` are dropped; ``repeats`` emits a row several times (resampling).
    """

    def __init__(self, config: TrainConfig, labels: dict[str, int], *, train: bool,
                 repeats: dict[str, int] | None = None):
        self.config = config
        self.labels = labels
        self.train = train
        self.repeats = repeats or {}
        self.flow = config.modality == "flow"
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
        xs, ys, keys, bounds = [], [], [], []
        for i, key in enumerate(batch["key"]):
            if batch["kind"][i] != "subaction" or key not in self.labels:
                continue
            n = int(batch["num_frames"][i])
            frames = (batch["flow_x"][i], batch["flow_y"][i]) if self.flow else batch["rgb"][i]
            items = n - 1 if self.flow else n
            if items < 1:
                continue
            short = min(int(batch["height"][i]), int(batch["width"][i]))
            for _ in range(self.repeats.get(key, 1)):
                xs.append(self._sample(frames, items, short))
                ys.append(self.labels[key])
                keys.append(key)
                bounds.append(float(batch["flow_bound"][i]) if self.flow else 0.0)
        c = self.config
        shape = (0, c.segments, c.in_channels, *c.input_size)
        if not self.train:
            shape = (0, c.test_views * c.test_crops, *shape[1:])
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


def sampled_clips(config: TrainConfig, split: SplitLabels, *, train: bool, one_view: bool = False):
    """The Ray Dataset of samples of one split. ``one_view``: test sampling with a single
    centre view (validation during training).

    Sampling runs in the read tasks themselves (Ray Data fuses the two), so JPEG bytes
    never cross the object store; training shuffles file order per epoch and, on the
    workers, within a local buffer.
    """
    if one_view:
        config = replace(config, test_views=1, test_crops=1)
    repeats = resample_repeats(split) if train and config.class_balance == "resample" else None
    from ray.data.expressions import col

    # Filtering first keeps blocks without a labelled clip away from SampleClips (an
    # empty tensor column would fall back to pickled objects).
    labelled = (col("kind") == "subaction") & col("key").is_in(sorted(split.labels))
    return read_clips(config.data, config.modality, shuffle=train).filter(expr=labelled).map_batches(
        SampleClips(config, split.labels, train=train, repeats=repeats), batch_size=8, batch_format="numpy")
