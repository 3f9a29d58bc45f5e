"""A pose run's input: the labels of a task's split for the sub-actions that have poses
in the store, and one sample of a sub-action as the run's model takes it.

Labels come from the store's manifest exactly as the clips' do
(``train/data.py`` ``manifest_split_labels``), so every sub-action task selects the
same keys, with the same class ids and levels, whether a run reads clips or poses; a
labelled key without poses is left out and counted (``absent``, as a clip's is).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import storage
from ..dataset.labels import task_kind
from ..dataset.pose_store import pose_keys
from ..dataset.poses import PoseRecord
from ..errors import InputError
from ..store import manifest_dir, manifest_table, poses_dir
from ..train.data import SplitLabels, manifest_split_labels
from .config import PoseConfig
from .input import heatmap_input, skeleton_input

# Why a labelled key is left out of a pose run (SplitLabels.absent).
NO_POSES = "no poses"


def pose_split_labels(store: str, task: str, split: str) -> SplitLabels:
    """The labels of ``split`` of ``task`` (from ``store``/manifest) of the sub-actions
    with poses under ``store``/poses; the others in ``absent``. InputError for the
    routine-level event task, a store without a manifest, a split that labels nothing
    and one whose keys all lack poses."""
    if task_kind(task) == "event":
        raise InputError(f"task {task!r} classifies whole routines, and poses are per sub-action: use "
                         f"subaction_event for the event of each sub-action")
    manifest = manifest_dir(store)
    if not storage.exists(manifest_table(manifest, "categories")):
        raise InputError(f"{store}: no manifest beside the poses ({manifest}): preprocess into it, or write "
                         f"one with 'finegym-ray manifest --out {manifest}'")
    labelled = manifest_split_labels(store, task, split)
    have = pose_keys(store)
    present = {k: y for k, y in labelled.labels.items() if k in have}
    if not present:
        raise InputError(f"{poses_dir(store)}: none of the {len(labelled.labels):,} labelled keys of split "
                         f"{split!r} of task {task!r} has poses (import them with 'finegym-ray import-poses')")
    return replace(labelled, labels=present, absent={k: NO_POSES for k in labelled.labels if k not in have})


def pose_sample(record: PoseRecord, config: PoseConfig, *, rng: np.random.Generator | None = None, view: int = 0,
                views: int = 1, mirror: bool = False) -> np.ndarray:
    """One float32 sample of ``record`` for ``config``'s model: a skeleton (persons,
    frames, 17, 3) or a heatmap volume (K, frames, size, size); frames drawn with ``rng``
    (training), else test view ``view`` of ``views`` (``input.frame_index``)."""
    sampling = dict(frames=config.frames, persons=config.persons, rng=rng, view=view, views=views, mirror=mirror)
    if config.heatmaps:
        return heatmap_input(record, limbs=config.modality == "limbs", size=config.heatmap_size, sigma=config.sigma,
                             **sampling)
    return skeleton_input(record, **sampling)


def in_channels(config: PoseConfig) -> int:
    """The model's input channels: x, y and score per joint (skeletons), a heatmap per
    joint or per bone (volumes)."""
    from ..dataset.poses import BONES, JOINTS

    if not config.heatmaps:
        return 3
    return len(BONES) if config.modality == "limbs" else JOINTS
