"""Localization data: seconds <-> steps, the video split, crops, batches, settings (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from finegym_ray.config import ConfigError, load_config
from finegym_ray.localize.config import LocalizeConfig
from finegym_ray.localize.data import (
    Example,
    collate,
    crop,
    load_dataset,
    seconds_to_steps,
    split_videos,
    steps_to_seconds,
    video_of,
)
from finegym_ray.localize.features import list_sequences, read_sequence
from finegym_ray.localize.formats import read_ground_truth
from finegym_ray.localize.toy import write_toy_features


def test_seconds_and_steps_agree_with_the_detectors_step_centres():
    c = 1.0 + 0.5 * np.arange(10)  # snippet centres every 0.5 s from 1.0 s
    # Snippet i's centre is the detector's position i + 0.5; beyond the ends at the stride.
    assert np.allclose(seconds_to_steps(np.array([1.0, 1.25, 5.5, 0.0, 7.0]), c), [0.5, 1.0, 9.5, -1.5, 12.5])
    t = np.array([-3.0, 0.2, 1.0, 3.3, 5.5, 9.9])
    assert np.allclose(steps_to_seconds(seconds_to_steps(t, c), c), t)
    ragged = np.array([0.0, 1.0, 3.0])  # exact at every centre even with a ragged stride
    assert np.allclose(seconds_to_steps(ragged, ragged), [0.5, 1.5, 2.5])


def test_the_split_keeps_each_videos_routines_together_and_is_stable():
    ids = [f"vid{v}_E_{r:06d}_{r + 30:06d}" for v in range(12) for r in range(3)]
    videos = {video_of(i, "subaction") for i in ids}
    assert len(videos) == 12 and video_of("not_a_key", "subaction") == "not_a_key"
    split = split_videos(videos, 0.25)
    assert sum(s == "val" for s in split.values()) == 3
    assert split == split_videos(sorted(videos, reverse=True), 0.25)  # order-free
    assert split_videos(["only"], 0.25) == {"only": "train"}


def test_crop_clips_segments_and_collate_pads_with_a_mask():
    ex = Example("v", np.arange(40, dtype=np.float32).reshape(20, 2), np.array([[1, 6], [12, 19]], np.float32),
                 np.array([0, 1]), np.arange(20.0))
    rng = np.random.default_rng(0)
    for _ in range(20):
        c = crop(ex, 8, rng)
        assert len(c.features) == 8 and (c.segments >= 0).all() and (c.segments <= 8).all()
        assert ((c.segments[:, 1] - c.segments[:, 0]) >= 1).all()
        a = int(c.features[0, 0]) // 2  # the window's first step
        kept = [(max(s - a, 0), min(e - a, 8)) for s, e in ex.segments if min(e - a, 8) - max(s - a, 0) >= 1]
        assert np.allclose(c.segments, np.array(kept).reshape(-1, 2))
    short = Example("w", np.ones((5, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.int64),
                    np.arange(5.0))
    feats, mask, targets = collate([ex, short], multiple=8)
    assert feats.shape == (2, 2, 24) and mask.sum(1).tolist() == [20, 5]
    assert float(feats[1, :, 5:].abs().sum()) == 0 and targets[1][0].shape == (0, 2)


def test_toy_features_load_with_their_ground_truth(tmp_path):
    gt_path = write_toy_features(str(tmp_path), videos=6, level="subaction", steps=40, dim=4)
    config = LocalizeConfig(features=str(tmp_path), annotations=gt_path, level="subaction")
    data = load_dataset(config, read_ground_truth(gt_path, level="subaction"), say=lambda _m: None)
    assert len(data.train) + len(data.val) == 6 and data.feature_dim == 4
    # Two routines per video: split together.
    for uris in (data.train, data.val):
        videos = {video_of(data.ids[u], "subaction") for u in uris}
        assert len(uris) == 2 * len(videos)
    seq = read_sequence(list_sequences(str(tmp_path), "subaction")[0])
    first = data.ground_truth[seq.video_id][0]
    assert np.isclose(seconds_to_steps(np.array([first[1]]), (seq.starts + seq.ends) / 2)[0] % 1, 0.5)


def test_a_video_without_features_is_reported_and_leaves_the_split_of_the_others_as_it_was(tmp_path):
    import os

    from finegym_ray.video_job import no_video_reason, write_error_record

    gt_path = write_toy_features(str(tmp_path), videos=10, steps=40, dim=4)
    config = LocalizeConfig(features=str(tmp_path), annotations=gt_path)
    gt = read_ground_truth(gt_path)
    whole = load_dataset(config, gt, say=lambda _m: None)

    def splits(data) -> dict[str, str]:
        return {data.ids[u]: name for name in ("train", "val") for u in getattr(data, name)}

    # A val video never downloaded: extraction recorded it and wrote no features.
    gone = whole.ids[whole.val[0]]
    os.remove(whole.val[0])
    write_error_record(str(tmp_path), f"action_{gone}", scope="video", reason=no_video_reason(gone, "/videos"),
                       group=gone, kind="action", uri="")
    said = []
    part = load_dataset(config, gt, say=said.append)
    # The others keep their split: no training video moves into val to fill its place.
    assert splits(part) == {v: s for v, s in splits(whole).items() if v != gone}
    assert part.missing == {"val": {gone: "no video"}}
    assert any("1 of the ground truth's 10 sequences have no features (val 1: 1 no video)" in m for m in said), said


@pytest.mark.parametrize("override, says", [
    ("level=frames", "level must be one of action, subaction"), ("task=sets", "task must be one of"),
    ("lr=.nan", "lr must be a finite number"), ("val_fraction=1", "val_fraction"), ("epochs=0", "epochs must be >= 1"),
    ("max_steps=3", "max_steps"), ("name=a/b", "name must be one plain folder name"), ("epoch=3", "unknown key")])
def test_bad_settings_are_refused_naming_the_setting(override, says):
    with pytest.raises(ConfigError, match=says):
        load_config(LocalizeConfig, overrides=[override])
