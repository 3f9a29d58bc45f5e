"""The pose store: a pose pickle (SynGym's or mmaction2's) into STORE/poses, read back
exactly; refusals of what is not poses."""

import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finegym_ray.cli import main
from finegym_ray.dataset.errors import FormatError
from finegym_ray.dataset.pose_store import pose_keys, read_poses, write_poses
from finegym_ray.dataset.poses import PoseRecord, read_pose_pickle
from finegym_ray.errors import InputError
from finegym_ray.store import pose_shard_uri, poses_dir
from finegym_ray.synth.generate import POSES


@pytest.fixture
def store(pose_store) -> str:
    return pose_store


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


def test_the_keys_with_poses_are_read_from_the_key_column(store, tmp_path):
    assert pose_keys(store) == {r.key for r in read_poses(store)}
    assert pose_keys(str(tmp_path)) == set()


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
