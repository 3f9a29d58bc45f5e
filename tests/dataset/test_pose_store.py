"""The pose store: a pose pickle (SynGym's or mmaction2's) into STORE/poses, read back
exactly, and read per task and split with the labels clips get from the manifest."""

import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finegym_ray.cli import main
from finegym_ray.dataset.coverage import task_labels
from finegym_ray.dataset.errors import FormatError
from finegym_ray.dataset.manifest import build_manifest_from, write_manifest
from finegym_ray.dataset.pose_store import import_pose_pickle, read_poses, task_poses, write_poses
from finegym_ray.dataset.poses import PoseRecord, read_pose_pickle
from finegym_ray.errors import InputError
from finegym_ray.storage import read_parquet
from finegym_ray.store import manifest_dir, manifest_table, pose_shard_uri, poses_dir
from finegym_ray.synth.generate import POSES

TASKS = ("gym99", "gym288", "vt", "fx", "fx_s1", "ub_s1", "set", "subaction_event")


@pytest.fixture(scope="module")
def store(tiny_gym, tmp_path_factory) -> str:
    """SynGym's poses imported into a store that holds its manifest."""
    out = str(tmp_path_factory.mktemp("posestore"))
    write_manifest(build_manifest_from(str(tiny_gym / "annotations")), manifest_dir(out))
    import_pose_pickle(str(tiny_gym / "annotations" / POSES), out)
    return out


def test_the_store_holds_the_pickles_poses_exactly(tiny_gym, store):
    records, _ = read_pose_pickle(str(tiny_gym / "annotations" / POSES))
    stored = read_poses(store)
    assert [r.key for r in stored] == sorted(r.key for r in records)
    by_key = {r.key: r for r in records}
    for r in stored:
        want = by_key[r.key]
        assert (r.label, r.img_shape, r.total_frames) == (want.label, want.img_shape, want.total_frames)
        assert np.array_equal(r.keypoint, want.keypoint) and np.array_equal(r.score, want.score)
    shard = pose_shard_uri(store, stored[0].key.split("_E_")[0])
    table = pq.read_table(shard)
    assert table.schema.field("keypoint").type == pa.list_(pa.float32())
    assert {"key", "video_id", "event_id", "persons", "frames", "keypoint_score"} <= set(table.column_names)


def _manifest_labels(store: str, task: str) -> dict[str, dict[str, int]]:
    manifest = manifest_dir(store)
    return task_labels(task, subactions=read_parquet(manifest_table(manifest, "subactions")),
                       events=read_parquet(manifest_table(manifest, "events")),
                       categories=read_parquet(manifest_table(manifest, "categories")))


@pytest.mark.parametrize("task", TASKS)
def test_every_task_selects_poses_with_the_labels_clips_get(store, task):
    by_split = _manifest_labels(store, task)
    for split in ("train", "val"):
        labels = by_split.get(split)
        if not labels:  # this tiny SynGym has no vault, and no UB-S1 element in val
            with pytest.raises(InputError, match=f"no sub-action of split '{split}' has a label for task"):
                task_poses(store, task, split)
            continue
        got = task_poses(store, task, split)
        assert {r.key: r.label for r in got.records} == labels and got.absent == ()
        assert max(labels.values()) < len(got.class_names)


def test_keys_without_poses_are_named_and_the_event_task_refused(tiny_gym, store, tmp_path):
    labels = _manifest_labels(store, "gym288")["train"]
    video = sorted(labels)[0].split("_E_")[0]
    partial = str(tmp_path / "partial")
    write_manifest(build_manifest_from(str(tiny_gym / "annotations")), manifest_dir(partial))
    write_poses(partial, [r for r in read_poses(store) if not r.key.startswith(video)], source="test")
    got = task_poses(partial, "gym288", "train")
    assert got.absent == tuple(sorted(k for k in labels if k.startswith(video))) and got.absent
    assert len(got.records) == len(labels) - len(got.absent)
    with pytest.raises(InputError, match="poses are per sub-action"):
        task_poses(store, "event", "train")
    with pytest.raises(InputError, match="no manifest beside the poses"):
        task_poses(str(tmp_path / "bare"), "gym99", "train")


@pytest.mark.parametrize("keys, said", [(["abc_E_000001_000002_A_0000_0001", "not_a_key"],
                                          "'not_a_key': not a FineGym instance key"),
                                         (["abc_E_000001_000002_A_0000_0001"] * 2, "two records of key")])
def test_a_key_that_is_no_sub_action_key_or_repeats_is_refused_before_anything_is_written(tmp_path, keys, said):
    records = [PoseRecord(k, 0, (10, 10), 1, np.zeros((1, 1, 17, 2), np.float32), np.ones((1, 1, 17), np.float32))
               for k in keys]
    with pytest.raises(InputError, match=said):
        write_poses(str(tmp_path), records, source="x.pkl")
    assert not os.path.exists(poses_dir(str(tmp_path)))


def test_a_shard_of_another_format_is_one_line(tmp_path):
    uri = pose_shard_uri(str(tmp_path), "abc")
    os.makedirs(os.path.dirname(uri))
    pq.write_table(pa.table({"key": ["abc_E_000001_000002_A_0000_0001"]}), uri)
    with pytest.raises(FormatError, match="not a pose shard of format 1"):
        read_poses(str(tmp_path))


class _WritesAMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_the_command_imports_a_pickle_and_refuses_one_that_would_run_code(tiny_gym, tmp_path, capsys):
    out = str(tmp_path / "store")
    assert main(["import-poses", "--pickle", str(tiny_gym / "annotations" / POSES), "--out", out]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("poses: ") and f"of 3 videos -> {poses_dir(out)}" in printed
    hostile = tmp_path / "gym_2d.pkl"
    hostile.write_bytes(pickle.dumps([_WritesAMarker(tmp_path / "marker")]))
    code = main(["import-poses", "--pickle", str(hostile), "--out", out])
    assert code == 2 and not (tmp_path / "marker").exists()
    error = capsys.readouterr().err.strip()
    assert error.startswith("finegym-ray: error: ") and "refused" in error and "\n" not in error
