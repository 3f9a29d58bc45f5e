"""A pose run's labels: every sub-action task selects the keys, class ids and levels
that clips get from the manifest, for the keys with poses; the rest counted; one
sample per model as it takes it."""

import numpy as np
import pytest

from finegym_ray.dataset.coverage import task_labels
from finegym_ray.dataset.manifest import build_manifest_from, write_manifest
from finegym_ray.dataset.pose_store import read_poses, write_poses
from finegym_ray.dataset.poses import BONES, JOINTS
from finegym_ray.errors import InputError
from finegym_ray.pose.config import PoseConfig
from finegym_ray.pose.data import NO_POSES, in_channels, pose_sample, pose_split_labels
from finegym_ray.storage import read_parquet
from finegym_ray.store import manifest_dir, manifest_table
from finegym_ray.train.data import manifest_split_labels

TASKS = ("gym99", "gym288", "vt", "fx", "fx_s1", "ub_s1", "set", "subaction_event")


def _manifest_labels(store: str, task: str) -> dict[str, dict[str, int]]:
    manifest = manifest_dir(store)
    return task_labels(task, subactions=read_parquet(manifest_table(manifest, "subactions")),
                       events=read_parquet(manifest_table(manifest, "events")),
                       categories=read_parquet(manifest_table(manifest, "categories")))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_selects_poses_with_the_labels_clips_get(pose_store, task):
    by_split = _manifest_labels(pose_store, task)
    for split in ("train", "val"):
        labels = by_split.get(split)
        if not labels:  # this tiny SynGym has no vault, and no UB-S1 element in val
            with pytest.raises(InputError, match=f"no sub-action of split '{split}' has a label for task"):
                pose_split_labels(pose_store, task, split)
            continue
        got = pose_split_labels(pose_store, task, split)
        assert got.labels == labels and got.absent == {}
        assert got == manifest_split_labels(pose_store, task, split)  # class names, levels, Glabels: the clips'
        assert max(labels.values()) < got.num_classes


def test_keys_without_poses_are_counted_and_the_event_task_refused(tiny_gym, pose_store, tmp_path):
    labels = _manifest_labels(pose_store, "gym288")["train"]
    video = sorted(labels)[0].split("_E_")[0]
    partial = str(tmp_path / "partial")
    write_manifest(build_manifest_from(str(tiny_gym / "annotations")), manifest_dir(partial))
    write_poses(partial, [r for r in read_poses(pose_store) if not r.key.startswith(video)], source="test")
    got = pose_split_labels(partial, "gym288", "train")
    assert got.absent == {k: NO_POSES for k in labels if k.startswith(video)} and got.absent
    assert got.labels == {k: y for k, y in labels.items() if not k.startswith(video)}
    with pytest.raises(InputError, match="poses are per sub-action"):
        pose_split_labels(pose_store, "event", "train")
    with pytest.raises(InputError, match="no manifest beside the poses"):
        pose_split_labels(str(tmp_path / "bare"), "gym99", "train")
    only_manifest = str(tmp_path / "no_poses")
    write_manifest(build_manifest_from(str(tiny_gym / "annotations")), manifest_dir(only_manifest))
    with pytest.raises(InputError, match="has poses .import them with 'finegym-ray import-poses'"):
        pose_split_labels(only_manifest, "gym288", "train")


@pytest.mark.parametrize("model, modality, shape", [
    ("stgcn", "keypoints", (2, 8, JOINTS, 3)), ("posec3d", "keypoints", (JOINTS, 8, 16, 16)),
    ("posec3d", "limbs", (len(BONES), 8, 16, 16))])
def test_a_sample_is_what_the_model_takes(pose_store, model, modality, shape):
    config = PoseConfig(model=model, modality=modality, frames=8, persons=2, heatmap_size=16)
    record = read_poses(pose_store)[0]
    x = pose_sample(record, config)
    assert x.shape == shape and x.dtype == np.float32 and in_channels(config) == shape[-1 if model == "stgcn" else 0]
    np.testing.assert_array_equal(x, pose_sample(record, config))  # the test sample: the same every time
    drawn = [pose_sample(record, config, rng=np.random.default_rng(s), mirror=s % 2 == 1) for s in range(4)]
    assert any(not np.array_equal(drawn[0], d) for d in drawn[1:])
