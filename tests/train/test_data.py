"""Training input without Ray: class-imbalance options and the sampling of shard rows."""

from dataclasses import replace

import numpy as np

from finegym_ray.train.data import SplitLabels, resample_repeats
from finegym_ray.train.run import class_weights


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
