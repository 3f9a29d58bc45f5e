"""Training input without Ray: class-imbalance options and the sampling of shard rows."""

from dataclasses import replace

import numpy as np

from finegym_ray.train.data import SplitLabels, resample_repeats
from finegym_ray.train.run import class_weights
from tests.support.hostile import WritesMarker as _WritesMarker


def test_rare_classes_are_repeated_towards_the_median():
    split = SplitLabels({"a": 0, "b": 0, "c": 0, "d": 0, "e": 1, "f": 2, "g": 2}, ("x", "y", "z", "w"))
    assert split.counts().tolist() == [4, 1, 2, 0]
    # median of the present classes' counts: 2
    assert resample_repeats(split) == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 2, "f": 1, "g": 1}


def test_loss_weights_are_inverse_frequency_with_mean_one():
    w = np.array(class_weights(np.array([4, 1, 0])))
    np.testing.assert_allclose(w, [0.4, 1.6, 0.0])
    assert w[:2].mean() == 1.0


def test_sample_clips_keeps_labelled_subactions_and_repeats_them():
    import cv2

    from finegym_ray.train.config import TrainConfig
    from finegym_ray.train.data import SampleClips

    frame = cv2.imencode(".jpg", np.zeros((36, 64, 3), np.uint8))[1].tobytes()
    batch = {"key": np.array(["a", "b", "c", "ev"], dtype=object),
             "kind": np.array(["subaction", "subaction", "subaction", "event"], dtype=object),
             "num_frames": np.array([5, 7, 3, 9]), "height": np.array([36] * 4), "width": np.array([64] * 4),
             "rgb": np.array([[frame] * n for n in (5, 7, 3, 9)], dtype=object)}
    config = TrainConfig(segments=3, crop=32, test_short=36)
    labels = {"a": 0, "c": 1, "ev": 2}  # b is unlabelled; ev is an event clip, not a sub-action
    out = SampleClips(config, labels, train=True, repeats={"c": 3})(batch)
    assert out["key"].tolist() == ["a", "c", "c", "c"] and out["label"].tolist() == [0, 1, 1, 1]
    assert out["x"].shape == (4, 3, 3, 32, 32) and out["x"].dtype == np.uint8
    test = SampleClips(replace(config, test_views=2, test_crops=3), labels, train=False)(batch)
    assert test["x"].shape == (2, 6, 3, 3, 32, 32)  # views x crops


def test_one_frame_flow_clip_enters_as_no_motion():
    from finegym_ray.train.config import TrainConfig
    from finegym_ray.train.data import SampleClips

    batch = {"key": np.array(["a"], dtype=object), "kind": np.array(["subaction"], dtype=object),
             "num_frames": np.array([1]), "height": np.array([36]), "width": np.array([64]),
             "flow_x": np.array([[]], dtype=object), "flow_y": np.array([[]], dtype=object),
             "flow_bound": np.array([20.0])}
    config = TrainConfig(modality="flow", segments=2, frames_per_segment=2, crop=32, test_short=36)
    out = SampleClips(config, {"a": 0}, train=True)(batch)
    assert out["x"].shape == (1, 2, 4, 32, 32) and (out["x"] == 128).all()


def _shard_rows(frame: bytes) -> dict:
    """Three sub-actions and the routine they belong to, as a shard cut with events=true holds them."""
    return {"key": np.array(["v_E_000010_000070_A_0001_0002", "v_E_000010_000070_A_0005_0007", "other",
                             "v_E_000010_000070"], dtype=object),
            "kind": np.array(["subaction", "subaction", "subaction", "event"], dtype=object),
            "num_frames": np.array([5, 7, 3, 90]), "height": np.array([36] * 4), "width": np.array([64] * 4),
            "rgb": np.array([[frame] * n for n in (5, 7, 3, 90)], dtype=object)}


def test_the_event_task_samples_routines_and_the_others_sub_actions(tmp_path):
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq

    from finegym_ray.train.config import TrainConfig
    from finegym_ray.train.data import SampleClips, SampleShards

    frame = cv2.imencode(".jpg", np.zeros((36, 64, 3), np.uint8))[1].tobytes()
    rows = _shard_rows(frame)
    # A label for every key: only the kind decides which rows a task reads.
    labels = {k: i % 2 for i, k in enumerate(rows["key"])}
    config = TrainConfig(segments=4, crop=32, test_short=36)
    sub = SampleClips(replace(config, task="subaction_event"), labels, train=True)(rows)
    assert sub["key"].tolist() == rows["key"][:3].tolist()
    routine = SampleClips(replace(config, task="event"), labels, train=False)(rows)
    assert routine["key"].tolist() == ["v_E_000010_000070"] and routine["x"].shape == (1, 6, 4, 3, 32, 32)
    # Read from a shard file: the rows of the other kind (and unlabelled ones) are left out before sampling.
    shard = tmp_path / "shard.parquet"
    pq.write_table(pa.table({k: list(v) for k, v in rows.items()}), shard)
    got = SampleShards(replace(config, task="event"), {"v_E_000010_000070": 3}, train=True)({"shard": [str(shard)]})
    assert got["key"].tolist() == ["v_E_000010_000070"] and got["label"].tolist() == [3]
    got = SampleShards(replace(config, task="gym99"), labels, train=True)({"shard": [str(shard)]})
    assert sorted(got["key"].tolist()) == sorted(rows["key"][:3].tolist())


def test_the_event_task_is_refused_on_clips_cut_without_routines(tmp_path):
    import json

    import pytest

    from finegym_ray.train.data import check_clip_kind

    def settings(**kw):
        (tmp_path / "preprocess.json").write_text(json.dumps({"hash": "x", "settings": kw}))

    from finegym_ray.store import SETTINGS

    assert SETTINGS == "preprocess.json"  # the file settings() writes, named in the store module only
    check_clip_kind(str(tmp_path), "event")  # no preprocess.json: nothing to go by here
    settings(events=False, subactions=True)
    with pytest.raises(ValueError, match=r"task 'event' classifies whole routines.*events=false: "
                                         r"preprocess with --set events=true") as e:
        check_clip_kind(str(tmp_path), "event")
    assert "\n" not in str(e.value)
    check_clip_kind(str(tmp_path), "subaction_event")
    settings(events=True, subactions=False)
    check_clip_kind(str(tmp_path), "event")
    with pytest.raises(ValueError, match="preprocess with --set subactions=true"):
        check_clip_kind(str(tmp_path), "gym99")


def test_a_shard_whose_keys_are_pickles_is_refused_and_runs_nothing(tmp_path):
    # Ray's pickled-object type is registered in this process (as in every driver that
    # has imported ray.data): converting such a column would unpickle its values.
    import pyarrow as pa
    import pytest
    from ray.data.extensions import ArrowPythonObjectArray

    from finegym_ray import storage
    from finegym_ray.train.data import shards_with

    marker = tmp_path / "marker"
    data = str(tmp_path / "data")
    storage.write_parquet(pa.table({"key": ArrowPythonObjectArray.from_objects([_WritesMarker(str(marker))]),
                                    "kind": ["subaction"]}), storage.join(data, "clips", "u1.parquet"))
    with pytest.raises(ValueError, match="column 'key' is of Arrow extension type 'ray.data.arrow_pickled_object'"):
        shards_with(data, {"k": 0})
    assert not marker.exists()


def test_labelled_keys_without_a_clip_are_left_out_each_with_why(tmp_path):
    import pyarrow as pa
    import pytest

    from finegym_ray import storage
    from finegym_ray.store import shard_uri
    from finegym_ray.train.data import with_clips
    from finegym_ray.video_job import no_video_reason, write_error_record

    data = str(tmp_path / "store")
    storage.write_parquet(pa.table({"key": ["k1", "ev"], "kind": ["subaction", "event"]}), shard_uri(data, "u1"))
    # What preprocessing records: a window of u1 that failed, and u2's video, never downloaded.
    write_error_record(data, "u1", scope="windows", reason="1 of 2 window(s) failed", unit_id="u1", video_id="v1",
                       windows=[{"key": "k2", "reason": "holds no frame"}])
    write_error_record(data, "u2", scope="video", reason=no_video_reason("v2", "/videos"), unit_id="u2",
                       video_id="v2", keys=["k3"])
    split = SplitLabels({"k1": 0, "k2": 1, "k3": 1, "k4": 0, "ev": 1}, ("x", "y"))
    kept = with_clips(data, split, "subaction")
    assert kept.labels == {"k1": 0} and kept.labelled == 5
    # "ev" is a routine's clip: no sub-action clip has that key.
    assert kept.absent == {"k2": "failed window", "k3": "no video", "k4": "no error record", "ev": "no error record"}
    assert kept.absent_note() == "4 without a clip (2 no error record, 1 failed window, 1 no video)"
    assert with_clips(data, SplitLabels({"k1": 0}, ("x",)), "subaction").absent == {}
    with pytest.raises(FileNotFoundError, match=r"no shard holds a clip of this split: none of its 2 labelled keys "
                                                r"has one \(1 no video, 1 no error record\)"):
        with_clips(data, SplitLabels({"k3": 0, "k4": 0}, ("x",)), "subaction")
