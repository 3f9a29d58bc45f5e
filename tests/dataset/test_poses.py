"""mmaction2's pose pickle (gym_2d.pkl) is read as data: numpy arrays and plain
containers only, each record checked; a pickle that would run code is refused and
runs nothing."""

import os
import pickle

import numpy as np
import pytest

from finegym_ray.dataset.errors import FormatError
from finegym_ray.dataset.poses import JOINTS, PoseRecord, read_pose_pickle, write_pose_pickle

KEY = "0LtLS9wROrk_E_002407_002435_A_0003_0005"


def _record(key: str = KEY, persons: int = 2, frames: int = 5, **changes) -> dict:
    rng = np.random.default_rng(0)
    record = {"frame_dir": key, "label": 3, "img_shape": (720, 1280), "original_shape": (720, 1280),
              "total_frames": frames,
              "keypoint": (rng.random((persons, frames, JOINTS, 2)) * 700).astype(np.float16),
              "keypoint_score": rng.random((persons, frames, JOINTS)).astype(np.float16)}
    record.update(changes)
    return record


def test_mmaction2s_layout_is_read_with_its_splits(tmp_path):
    path = tmp_path / "gym_2d.pkl"
    records = [_record(), _record(key=KEY.replace("0005", "0006"), persons=1, frames=3)]
    path.write_bytes(pickle.dumps({"split": {"train": [KEY], "val": [records[1]["frame_dir"]]},
                                   "annotations": records}))
    read, splits = read_pose_pickle(str(path))
    assert splits == {"train": [KEY], "val": [records[1]["frame_dir"]]}
    assert [(r.key, r.label, r.img_shape, r.total_frames, r.keypoint.shape) for r in read] == [
        (KEY, 3, (720, 1280), 5, (2, 5, 17, 2)), (records[1]["frame_dir"], 3, (720, 1280), 3, (1, 3, 17, 2))]
    assert np.array_equal(read[0].keypoint, records[0]["keypoint"].astype(np.float32))
    assert np.array_equal(read[0].score, records[0]["keypoint_score"].astype(np.float32))


def test_the_older_list_layout_and_our_own_writer_read_back(tmp_path):
    old = tmp_path / "old.pkl"
    old.write_bytes(pickle.dumps([_record()], protocol=2))
    (record,), splits = read_pose_pickle(str(old))
    assert splits == {} and record.key == KEY
    ours = tmp_path / "ours.pkl"
    write_pose_pickle(str(ours), [record], {"val": [KEY]})
    (again,), splits = read_pose_pickle(str(ours))
    assert splits == {"val": [KEY]} and again == PoseRecord(**{**again.__dict__}) and again.label == record.label
    assert np.array_equal(again.keypoint, record.keypoint) and np.array_equal(again.score, record.score)


class _WritesAMarker:
    """What a hostile pose file holds: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("where", ["as a record", "inside a record", "as an array's dtype"])
def test_a_pickle_that_would_run_code_is_refused_in_one_line_and_runs_nothing(tmp_path, where):
    marker = tmp_path / "marker"
    hostile = _WritesAMarker(marker)
    if where == "as a record":
        content = {"split": {}, "annotations": [_record(), hostile]}
    elif where == "inside a record":
        content = [_record(label=hostile)]
    else:
        content = [_record(keypoint=np.array([hostile], dtype=object))]
    path = tmp_path / "gym_2d.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(FormatError) as e:
        read_pose_pickle(str(path))
    message = str(e.value)
    assert message.startswith(f"{path}: refused: the pickle asks for ") and "\n" not in message, message
    assert "posix.system" in message or "os.system" in message
    assert not marker.exists()


@pytest.mark.parametrize("change, said", [
    ({"keypoint": np.zeros((1, 5, 16, 2), np.float16)}, "persons x 5 frames x 17 joints x 2"),
    ({"keypoint_score": np.zeros((2, 4, 17), np.float16)}, "keypoint_score must be 2 x 5 x 17"),
    ({"keypoint": np.full((1, 5, 17, 2), np.nan, np.float32)}, "not finite"),
    ({"keypoint": [[0.0]]}, "must be a numeric numpy array"),
    ({"frame_dir": "../../etc/passwd"}, "one plain name"),
    ({"label": -1}, "label must be an integer >= 0"),
    ({"total_frames": True}, "total_frames must be an integer >= 1"),
    ({"img_shape": (720,)}, "img_shape must be (height, width)"),
])
def test_a_record_of_the_wrong_shape_is_one_line_naming_it(tmp_path, change, said):
    path = tmp_path / "gym_2d.pkl"
    path.write_bytes(pickle.dumps([_record(), _record(**change)]))
    with pytest.raises(FormatError, match=r"^" + str(path).replace(".", r"\.") + r": record 1") as e:
        read_pose_pickle(str(path))
    assert said in str(e.value), str(e.value)


def test_a_file_that_is_not_a_pickle_is_one_line(tmp_path):
    path = tmp_path / "gym_2d.pkl"
    path.write_bytes(pickle.dumps([_record()])[:200])  # cut short
    with pytest.raises(FormatError, match="not a pose pickle"):
        read_pose_pickle(str(path))
