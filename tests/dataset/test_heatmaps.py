"""PoseC3D's heatmap volumes: drawn where the joints and bones are, within the compact
box of the pose, as the per-pixel formulas say."""

from __future__ import annotations

import numpy as np
import pytest

from finegym_ray.dataset.heatmaps import keypoint_volume, limb_volume, pose_box
from finegym_ray.dataset.poses import BONES, JOINTS

LIMBS = len(BONES)


def _pose(persons: int = 1, frames: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Joints on a 100 px square from (100, 200) to (200, 300), every score 0.9."""
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(persons, frames, JOINTS, 2)) + np.array([100, 200])
    xy[0, 0, 0], xy[0, 0, 1] = (100, 200), (200, 300)  # the box's corners, reached
    return xy.astype(np.float32), np.full((persons, frames, JOINTS), 0.9, np.float32)


def test_the_box_is_the_padded_square_around_every_seen_joint():
    xy, scores = _pose()
    x0, y0, side = pose_box(xy, scores, pad=0.25)
    assert (x0, y0, side) == pytest.approx((75, 175, 150))
    scores[0, 1, 3] = 0  # a joint not seen does not stretch the box
    xy[0, 1, 3] = (-5000, -5000)
    assert pose_box(xy, scores, pad=0.25) == pytest.approx((75, 175, 150))
    assert pose_box(xy, np.zeros_like(scores)) == (0.0, 0.0, 1.0)


def test_each_joint_peaks_where_it_is_with_its_score():
    xy, scores = _pose()
    scores[0, 1, 5] = 0.4
    vol = keypoint_volume(xy, scores, size=48, sigma=0.6)
    assert vol.shape == (JOINTS, 3, 48, 48) and vol.dtype == np.float32 and vol.min() >= 0
    x0, y0, side = pose_box(xy, scores)
    for t, k in ((0, 0), (1, 5), (2, 16)):
        x, y = (xy[0, t, k] - (x0, y0)) * 48 / side
        peak = np.unravel_index(vol[k, t].argmax(), (48, 48))
        assert abs(peak[0] - y) <= 0.5 and abs(peak[1] - x) <= 0.5, (k, t, peak, (y, x))
        assert vol[k, t].max() <= scores[0, t, k] + 1e-6
        assert vol[k, t].max() > 0.5 * scores[0, t, k]
    scores[0, 2, 3] = 0  # not detected: not drawn
    assert keypoint_volume(xy, scores)[3, 2].max() == 0


def test_two_people_overlap_as_the_brighter_of_the_two():
    xy, scores = _pose(persons=2)
    scores[1] = 0.3
    both = keypoint_volume(xy, scores)
    # Drawn in the box of both people: the first one alone, in that same box, is all there
    # (the brighter wins), and the second adds where the first is not.
    first = keypoint_volume(xy, np.stack([scores[0], np.full_like(scores[1], 1e-9)]))
    assert both.shape == first.shape
    assert np.all(both >= first - 1e-6) and (both > first + 0.1).any()
    assert both.max() <= 0.9 + 1e-6


def test_each_bone_is_drawn_along_its_segment_with_the_weaker_score():
    xy, scores = _pose(frames=1)
    a, b = BONES[0]
    scores[0, 0, a], scores[0, 0, b] = 0.8, 0.5
    vol = limb_volume(xy, scores, size=48, sigma=0.6)
    assert vol.shape == (LIMBS, 1, 48, 48)
    x0, y0, side = pose_box(xy, scores)
    pa, pb = ((xy[0, 0, j] - (x0, y0)) * 48 / side for j in (a, b))
    for f in (0.25, 0.5, 0.75):  # on the segment: near the weaker score
        x, y = pa + f * (pb - pa)
        assert vol[0, 0, int(round(y)), int(round(x))] > 0.5 * 0.5
    assert vol[0, 0].max() <= 0.5 + 1e-6
    far = np.array([0, 47]) if np.hypot(*(pa - (0, 47))) > 10 else np.array([47, 0])
    assert vol[0, 0, far[1], far[0]] < 1e-3


def test_poses_of_another_shape_are_refused():
    xy, scores = _pose()
    with pytest.raises(ValueError, match="poses must be keypoints"):
        keypoint_volume(xy[..., :1], scores)
    with pytest.raises(ValueError, match="poses must be keypoints"):
        limb_volume(xy, scores[:, :2])


def test_the_volumes_are_the_per_pixel_formulas():
    from finegym_ray.dataset.heatmaps import _to_heatmap

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 500, (2, 2, JOINTS, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, (2, 2, JOINTS)).astype(np.float32)
    size, sigma = 16, 0.8
    at = _to_heatmap(xy, scores, size).astype(np.float64)
    pixels = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).astype(np.float64)  # (H, W, (x, y))
    joints, limbs = np.zeros((JOINTS, 2, size, size)), np.zeros((LIMBS, 2, size, size))
    for m in range(2):
        for t in range(2):
            for k in range(JOINTS):
                g = np.exp(-((pixels - at[m, t, k]) ** 2).sum(-1) / (2 * sigma ** 2)) * scores[m, t, k]
                joints[k, t] = np.maximum(joints[k, t], g)
            for j, (a, b) in enumerate(BONES):
                d = at[m, t, b] - at[m, t, a]
                u = np.clip((pixels - at[m, t, a]) @ d / max(d @ d, 1e-6), 0, 1)
                nearest = at[m, t, a] + u[..., None] * d
                g = np.exp(-((pixels - nearest) ** 2).sum(-1) / (2 * sigma ** 2)) * min(scores[m, t, a],
                                                                                       scores[m, t, b])
                limbs[j, t] = np.maximum(limbs[j, t], g)
    np.testing.assert_allclose(keypoint_volume(xy, scores, size=size, sigma=sigma), joints, atol=1e-5)
    np.testing.assert_allclose(limb_volume(xy, scores, size=size, sigma=sigma), limbs, atol=1e-5)
