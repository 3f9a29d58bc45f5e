"""What a pose model is fed: frames sampled one per equal span, the best-scored people,
skeletons in [-1, 1] of the pose's box, mirrored with left and right swapped, and
heatmap volumes of the sampled frames."""

from __future__ import annotations

import numpy as np

from finegym_ray.dataset.poses import BONES, COCO17, JOINTS, PoseRecord
from finegym_ray.pose.input import MIRROR, heatmap_input, select_persons, skeleton_input


def _record(persons: int = 2, frames: int = 30, width: int = 640) -> PoseRecord:
    rng = np.random.default_rng(0)
    kp = rng.uniform(100, 300, size=(persons, frames, JOINTS, 2)).astype(np.float32)
    kp[..., 0] += np.arange(frames)[None, :, None] * 5  # moving right, frame by frame
    score = np.full((persons, frames, JOINTS), 0.9, np.float32)
    score[1:] = 0.2  # the second person: a coach, seen less well
    return PoseRecord(key="abcdefghijk_E_000010_000020_A_0001_0002", label=3, img_shape=(360, width),
                      total_frames=frames, keypoint=kp, score=score)


def test_the_frames_are_one_from_each_equal_span_the_middle_at_test():
    from finegym_ray.pose.input import _sampled

    r = _record(persons=1, frames=30)
    kp, _ = _sampled(r, frames=6, persons=1, rng=None, view=0, views=1, mirror=False)
    np.testing.assert_array_equal(kp[0], r.keypoint[0, [2, 7, 12, 17, 22, 27]])  # the middle of each 5 frames
    first, last = (_sampled(r, frames=6, persons=1, rng=None, view=v, views=5, mirror=False)[0] for v in (0, 4))
    np.testing.assert_array_equal(first[0], r.keypoint[0, [0, 5, 10, 15, 20, 25]])  # views spread over each span
    np.testing.assert_array_equal(last[0], r.keypoint[0, [4, 9, 14, 19, 24, 29]])
    drawn = [_sampled(r, frames=6, persons=1, rng=np.random.default_rng(seed), view=0, views=1, mirror=False)[0][0]
             for seed in range(10)]
    index = [[int(np.flatnonzero((r.keypoint[0] == d[i]).all(axis=(1, 2)))[0]) for i in range(6)] for d in drawn]
    assert all(5 * i <= j < 5 * (i + 1) for picked in index for i, j in enumerate(picked))
    assert len({tuple(p) for p in index}) > 1  # training sees more than one frame of a span


def test_the_best_scored_people_first_and_zeros_for_those_missing():
    r = _record(persons=2)
    kp, sc = select_persons(r.keypoint[::-1], r.score[::-1], 3)  # the coach listed first
    assert kp.shape == (3, 30, JOINTS, 2) and sc.shape == (3, 30, JOINTS)
    assert np.allclose(sc[0], 0.9) and np.allclose(sc[1], 0.2) and not sc[2].any() and not kp[2].any()
    kp, sc = select_persons(r.keypoint, r.score, 1)
    assert np.array_equal(kp[0], r.keypoint[0])


def test_skeletons_lie_in_the_unit_box_with_their_scores():
    r = _record()
    r.score[0, :, 4] = 0  # an ear never seen
    x = skeleton_input(r, frames=8, persons=2)
    assert x.shape == (2, 8, JOINTS, 3) and x.dtype == np.float32
    assert np.all(np.abs(x[..., :2]) <= 1) and np.abs(x[..., :2]).max() > 0.5
    assert not x[0, :, 4].any()  # not seen: zeros, score too
    np.testing.assert_allclose(x[1, ..., 2], 0.2)
    # The gymnast moves right over the frames the sample spans.
    assert x[0, -1, :, 0].mean() > x[0, 0, :, 0].mean()


def test_a_mirrored_sample_swaps_left_and_right():
    from finegym_ray.pose.input import _sampled

    assert COCO17[MIRROR[COCO17.index("left_knee")]] == "right_knee" and MIRROR[0] == 0
    assert sorted(MIRROR) == list(range(JOINTS)) and all(MIRROR[MIRROR[j]] == j for j in range(JOINTS))
    r = _record(persons=1, frames=1, width=640)
    left, right = COCO17.index("left_wrist"), COCO17.index("right_wrist")
    r.keypoint[0, 0, left], r.keypoint[0, 0, right] = (100, 50), (500, 60)
    kept, mirrored = (_sampled(r, frames=1, persons=1, rng=None, view=0, views=1, mirror=m)[0] for m in (False, True))
    assert tuple(kept[0, 0, left]) == (100, 50)
    # Mirrored: the right wrist seen from the other side is the left one, x from the right edge.
    assert tuple(mirrored[0, 0, left]) == (640 - 500, 60) and tuple(mirrored[0, 0, right]) == (640 - 100, 50)


def test_heatmap_volumes_of_the_sampled_frames():
    r = _record()
    keypoints = heatmap_input(r, frames=6, persons=2, size=24)
    limbs = heatmap_input(r, frames=6, persons=2, limbs=True, size=24)
    assert keypoints.shape == (JOINTS, 6, 24, 24) and limbs.shape == (len(BONES), 6, 24, 24)
    assert 0.5 < keypoints.max() <= 0.9 + 1e-6 and limbs.max() <= 0.9 + 1e-6
