"""PoseC3D's input (Duan et al., CVPR 2022): 2-D poses drawn as stacked heatmap volumes.
Numpy only, for the data workers.

:func:`keypoint_volume` draws each COCO-17 joint as a Gaussian of ``sigma`` heatmap
pixels, weighted by its detection score, the brighter person winning where two overlap;
:func:`limb_volume` draws each bone of ``poses.BONES`` as a Gaussian of the distance to
the segment between its joints, weighted by the weaker joint's score. Both first crop to
the box that holds every joint of the sample (:func:`pose_box`, PoseC3D's compact crop),
so that the gymnast, not the arena, fills the ``size`` x ``size`` heatmap.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .poses import BONES, JOINTS


def pose_box(keypoints: np.ndarray, scores: np.ndarray, *, pad: float = 0.25) -> tuple[float, float, float]:
    """(x0, y0, side) in frame pixels: the square around every joint with a score above
    0 in ``keypoints`` (M, T, 17, 2) pixels, ``scores`` (M, T, 17), padded by ``pad`` of
    its side on each edge. A sample without any joint gets a unit box at the origin."""
    seen = scores > 0
    if not seen.any():
        return 0.0, 0.0, 1.0
    xy = keypoints[seen]  # (J, 2)
    lo, hi = xy.min(0), xy.max(0)
    side = float(max(hi - lo)) * (1 + 2 * pad) or 1.0
    centre = (lo + hi) / 2
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def _to_heatmap(keypoints: np.ndarray, scores: np.ndarray, size: int) -> np.ndarray:
    """``keypoints`` in heatmap pixels (M, T, 17, 2) float32."""
    x0, y0, side = pose_box(keypoints, scores)
    return ((keypoints - np.array([x0, y0])) * (size / side)).astype(np.float32)


def keypoint_volume(keypoints: np.ndarray, scores: np.ndarray, *, size: int = 48, sigma: float = 0.6) -> np.ndarray:
    """(17, T, size, size) float32 in [0, 1]: each joint of ``keypoints`` (M, T, 17, 2)
    frame pixels as a Gaussian of ``sigma`` heatmap pixels times its ``scores`` (M, T, 17)."""
    _check(keypoints, scores)
    xy = _to_heatmap(keypoints, scores, size)
    grid = np.arange(size, dtype=np.float32)
    dx = grid[None, None, None, None, :] - xy[..., 0, None, None]  # (M, T, 17, 1, W)
    dy = grid[None, None, None, :, None] - xy[..., 1, None, None]  # (M, T, 17, H, 1)
    # A 2-D Gaussian is the product of two 1-D ones: exp over rows and columns, not pixels.
    two_var = np.float32(2 * sigma * sigma)
    heat = np.exp(-dy * dy / two_var) * (np.exp(-dx * dx / two_var) * scores[..., None, None])  # (M, T, 17, H, W)
    return heat.max(0).transpose(1, 0, 2, 3).astype(np.float32)  # (17, T, H, W)


def limb_volume(keypoints: np.ndarray, scores: np.ndarray, *, size: int = 48, sigma: float = 0.6) -> np.ndarray:
    """(len(BONES), T, size, size) float32 in [0, 1]: each bone as a Gaussian of the
    distance to the segment between its joints, times the weaker joint's score."""
    _check(keypoints, scores)
    xy = _to_heatmap(keypoints, scores, size)
    a, b = (np.array([bone[k] for bone in BONES]) for k in (0, 1))
    pa, seg = xy[:, :, a], xy[:, :, b] - xy[:, :, a]  # (M, T, L, 2): each bone's start and direction
    weight = np.minimum(scores[:, :, a], scores[:, :, b])  # (M, T, L)
    grid = np.arange(size, dtype=np.float32)
    rel_x = grid - pa[..., 0, None, None]  # (M, T, L, 1, W)
    rel_y = grid[:, None] - pa[..., 1, None, None]  # (M, T, L, H, 1)
    sx, sy = seg[..., 0, None, None], seg[..., 1, None, None]
    # Where along the bone (0 at its start, 1 at its end) each pixel's nearest point lies.
    along = np.clip((rel_x * sx + rel_y * sy) / np.maximum(sx * sx + sy * sy, 1e-6), 0, 1)  # (M, T, L, H, W)
    dx, dy = rel_x - along * sx, rel_y - along * sy
    heat = np.exp(-(dx * dx + dy * dy) / np.float32(2 * sigma * sigma)) * weight[..., None, None]
    return heat.max(0).transpose(1, 0, 2, 3).astype(np.float32)  # (L, T, H, W)


def _check(keypoints: np.ndarray, scores: np.ndarray) -> None:
    if keypoints.ndim != 4 or keypoints.shape[2:] != (JOINTS, 2) or scores.shape != keypoints.shape[:3]:
        raise InputError(f"poses must be keypoints (persons, frames, {JOINTS}, 2) with scores (persons, frames, "
                         f"{JOINTS}), got {keypoints.shape} and {scores.shape}")
