"""Feature sequences with their ground truth, in the units the detector works in.

A feature sequence has T steps (snippets); step ``i`` is the snippet from ``starts[i]``
to ``ends[i]`` seconds. The detector's step ``i`` covers positions [i, i + 1) with its
centre at i + 0.5 (models/detector.py), so the snippet's centre in seconds sits at
position i + 0.5, and seconds map to positions linearly between snippet centres (and
beyond the first and last one at the mean stride): on a uniform grid, which is what
extraction writes, position ``p`` is the time ``centre[0] + (p - 0.5) * stride``; the
interpolation keeps a sequence with a ragged stride exact at every centre. A
ground-truth segment [s, e] seconds becomes [p(s), p(e)] steps and a detection goes back
the same way, so train and evaluation agree by construction.

No ray here; torch only in :func:`collate`.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from ..dataset.keys import parse_event_key
from ..errors import InputError
from .config import AGNOSTIC_LABEL, LocalizeConfig
from .features import FeatureSequence, list_sequences, read_sequence

GroundTruth = dict[str, list[tuple[str, float, float]]]


def video_of(sequence_id: str, level: str) -> str:
    """The video a sequence belongs to: itself at action level, the routine's video at
    sub-action level (a FineGym routine key ``<video>_E_XXXXXX_YYYYYY``; any other id is
    taken as its own video)."""
    if level == "subaction":
        try:
            return parse_event_key(sequence_id)[0]
        except ValueError:
            return sequence_id
    return sequence_id


def split_videos(videos: Iterable[str], val_fraction: float) -> dict[str, str]:
    """Video id -> ``train`` or ``val``: ordered by the sha256 of the id (stable across
    machines and runs), the first round(``val_fraction`` x n) to val, at least one where
    there are two videos or more (a lone video trains)."""
    ordered = sorted(set(videos), key=lambda v: (hashlib.sha256(v.encode()).hexdigest(), v))
    n_val = 0 if len(ordered) < 2 else max(1, int(round(val_fraction * len(ordered))))
    return {v: "val" if i < n_val else "train" for i, v in enumerate(ordered)}


def centres(sequence: FeatureSequence) -> np.ndarray:
    """Snippet centres in seconds, (T,)."""
    return (np.asarray(sequence.starts, np.float64) + np.asarray(sequence.ends, np.float64)) / 2


def _stride(c: np.ndarray) -> float:
    if len(c) < 2:
        return 1.0
    stride = float(c[-1] - c[0]) / (len(c) - 1)
    return stride if stride > 0 else 1.0


def seconds_to_steps(times: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Times in seconds -> positions in steps, given the snippet centres ``c`` (seconds)."""
    times = np.asarray(times, np.float64)
    if len(c) == 0:
        return np.zeros_like(times)
    stride = _stride(c)
    steps = np.interp(times, c, np.arange(len(c), dtype=np.float64)) if len(c) > 1 else np.zeros_like(times)
    steps = np.where(times < c[0], (times - c[0]) / stride, steps)
    return np.where(times > c[-1], len(c) - 1 + (times - c[-1]) / stride, steps) + 0.5


def steps_to_seconds(steps: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Positions in steps -> times in seconds (the inverse of :func:`seconds_to_steps`)."""
    steps = np.asarray(steps, np.float64) - 0.5
    if len(c) == 0:
        return np.zeros_like(steps)
    stride = _stride(c)
    times = np.interp(steps, np.arange(len(c), dtype=np.float64), c) if len(c) > 1 else np.full_like(steps, c[0])
    times = np.where(steps < 0, c[0] + steps * stride, times)
    return np.where(steps > len(c) - 1, c[-1] + (steps - (len(c) - 1)) * stride, times)


@dataclass
class Example:
    """One sequence ready for the detector: features (T, C) float32; segments (N, 2)
    in steps [start, end); labels (N,) class ids; centres (T,) seconds."""

    video_id: str
    features: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    centres: np.ndarray


def class_names_of(ground_truth: GroundTruth, task: str) -> list[str]:
    """The classes a run predicts: the labels in the ground truth, sorted (one class,
    ``action``, for the class-agnostic task)."""
    if task == "class_agnostic":
        return [AGNOSTIC_LABEL]
    return sorted({label for segments in ground_truth.values() for label, _, _ in segments})


def task_ground_truth(ground_truth: GroundTruth, task: str) -> GroundTruth:
    """The ground truth as the task scores it (every label ``action`` when class-agnostic)."""
    if task != "class_agnostic":
        return ground_truth
    return {v: [(AGNOSTIC_LABEL, s, e) for _, s, e in segs] for v, segs in ground_truth.items()}


def example(sequence: FeatureSequence, segments: list[tuple[str, float, float]],
            class_index: dict[str, int], *, task: str) -> Example:
    """A sequence and its ground-truth segments (label, start s, end s) -> an Example.
    Labels outside ``class_index`` raise ValueError (class-agnostic: all are class 0)."""
    c = centres(sequence)
    if segments:
        times = np.array([[s, e] for _, s, e in segments], np.float64)
        steps = seconds_to_steps(times.reshape(-1), c).reshape(-1, 2)
        if task == "class_agnostic":
            labels = np.zeros(len(segments), np.int64)
        else:
            unknown = sorted({lab for lab, _, _ in segments} - set(class_index))
            if unknown:
                raise InputError(f"{sequence.video_id}: labels {', '.join(unknown)} are not among the run's classes")
            labels = np.array([class_index[lab] for lab, _, _ in segments], np.int64)
    else:
        steps, labels = np.zeros((0, 2), np.float64), np.zeros(0, np.int64)
    return Example(sequence.video_id, sequence.features.astype(np.float32, copy=False),
                   steps.astype(np.float32), labels, c)


@dataclass(frozen=True)
class Dataset:
    """The level's sequences split into train and val: URIs and the ground truth per id;
    ``missing``: per split, the ground truth's sequences without a feature file, each
    with why (``video_job.why_missing``: no video, failed unit, no error record)."""

    train: list[str]
    val: list[str]
    ids: dict[str, str]  # URI -> sequence id
    ground_truth: GroundTruth
    class_names: list[str]
    skipped: list[str]  # sequence ids without ground truth
    feature_dim: int
    settings_hash: str | None
    missing: dict[str, dict[str, str]] = field(default_factory=dict)

    def missing_why(self, split: str) -> dict[str, int]:
        """How many of ``split``'s ground-truth sequences have no features, by why, most first."""
        return dict(Counter(self.missing.get(split, {}).values()).most_common())


def _causes(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {why}" for why, n in counts.items())


def load_dataset(config: LocalizeConfig, ground_truth: GroundTruth, *,
                 say: Callable[[str], None] = print) -> Dataset:
    """List the feature sequences of ``config.level``, keep those the ground truth has
    (an id it lists with no segment is a negative: it trains), split them by video.
    The split is drawn over every video the ground truth lists, so that a video without
    features (never downloaded, failed extraction) leaves the others' split as it was;
    the ground truth's sequences without features are reported (``Dataset.missing``,
    and a line said). Reads each file's footer only. Raises ValueError when nothing can
    train."""
    import os

    from .. import storage
    from ..video_job import NO_RECORD, why_missing
    from .features import read_meta

    # Absolute: Ray Train's workers read these URIs, maybe in another working directory.
    folder = config.features if storage.parse_uri(config.features).is_s3 else os.path.abspath(config.features)
    uris = list_sequences(folder, config.level)
    if not uris:
        raise InputError(f"{config.features}: no {config.level} feature sequences "
                         f"(run finegym-ray extract-features --level {config.level} first)")
    ids, hashes, dims, skipped = {}, set(), set(), []
    for uri in uris:
        sequence_id, meta = read_meta(uri)
        if sequence_id not in ground_truth:
            skipped.append(sequence_id)
            continue
        ids[uri] = sequence_id
        hashes.add(meta.get("settings_hash"))
        dims.add(meta.get("feature_dim"))
    if not ids:
        raise InputError(f"{config.features}: none of the {len(uris)} {config.level} sequences is in the ground "
                         f"truth of {config.annotations} (e.g. {skipped[0]!r}): another level or dataset?")
    if len(dims) > 1 or len(hashes) > 1:
        raise InputError(f"{config.features}/{config.level}: sequences of different extractions "
                         f"(feature dims {sorted(map(str, dims))}, settings hashes {sorted(map(str, hashes))})")
    without = sorted(set(ground_truth) - set(ids.values()))
    splits = split_videos((video_of(i, config.level) for i in [*ids.values(), *without]), config.val_fraction)
    train = [u for u in ids if splits[video_of(ids[u], config.level)] == "train"]
    val = [u for u in ids if splits[video_of(ids[u], config.level)] == "val"]
    why = why_missing(folder) if without else {}
    missing: dict[str, dict[str, str]] = {}
    for i in without:
        missing.setdefault(splits[video_of(i, config.level)], {})[i] = why.get(i, NO_RECORD)
    gt = task_ground_truth({i: ground_truth[i] for i in ids.values()}, config.task)
    names = class_names_of(gt, config.task)
    if not names:
        raise InputError(f"{config.annotations}: no ground-truth segment in the {len(ids)} sequences")
    if skipped:
        say(f"{len(skipped)} of {len(uris)} sequences have no ground truth and are left out (e.g. {skipped[0]})")
    data = Dataset(train, val, ids, gt, names, skipped, int(dims.pop()), hashes.pop(), dict(sorted(missing.items())))
    if without:
        notes = [f"{split} {len(m)}: {_causes(data.missing_why(split))}" for split, m in data.missing.items()]
        say(f"{len(without)} of the ground truth's {len(ground_truth)} sequences have no features "
            f"({'; '.join(notes)}): the detector uses the sequences that exist")
    return data


def load_examples(uris: list[str], ground_truth: GroundTruth, class_names: list[str], task: str) -> list[Example]:
    """Read the sequences at ``uris`` and attach their ground truth."""
    index = {n: i for i, n in enumerate(class_names)}
    out = []
    for uri in uris:
        sequence = read_sequence(uri)
        out.append(example(sequence, ground_truth.get(sequence.video_id, []), index, task=task))
    return out


def crop(ex: Example, max_steps: int, rng: np.random.Generator) -> Example:
    """A random window of ``max_steps`` steps of a longer sequence; segments clipped to
    the window, those left shorter than a step (or outside it) dropped."""
    t = len(ex.features)
    if not max_steps or t <= max_steps:
        return ex
    a = int(rng.integers(0, t - max_steps + 1))
    segs = np.clip(ex.segments - a, 0, max_steps)
    keep = (segs[:, 1] - segs[:, 0]) >= 1
    return Example(ex.video_id, ex.features[a:a + max_steps], segs[keep], ex.labels[keep], ex.centres[a:a + max_steps])


def collate(examples: list[Example], multiple: int = 1):
    """A batch: ``feats`` (B, C, T) float, ``mask`` (B, T) bool (True: a real step), T the
    longest sequence rounded up to ``multiple``, and ``targets`` [(segments (N, 2)
    float, labels (N,) long)] per sequence, as the detector's loss takes them."""
    import torch

    length = max(max(len(e.features) for e in examples), 1)
    length = -(-length // multiple) * multiple
    c = examples[0].features.shape[1]
    feats = torch.zeros(len(examples), c, length)
    mask = torch.zeros(len(examples), length, dtype=torch.bool)
    targets = []
    for i, e in enumerate(examples):
        t = len(e.features)
        feats[i, :, :t] = torch.from_numpy(np.ascontiguousarray(e.features.T))
        mask[i, :t] = True
        targets.append((torch.from_numpy(e.segments.astype(np.float32)), torch.from_numpy(e.labels)))
    return feats, mask, targets
