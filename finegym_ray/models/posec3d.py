"""A PoseC3D-style recognizer (Duan et al., CVPR 2022): 2-D poses drawn as stacked heatmap
volumes and classified by a 3-D CNN made for them.

The volumes (numpy, for the data workers): :func:`keypoint_volume` draws each COCO-17
joint as a Gaussian of ``sigma`` heatmap pixels, weighted by its detection score, the
brighter person winning where two overlap; :func:`limb_volume` draws each bone of
``stgcn.BONES`` as a Gaussian of the distance to the segment between its joints, weighted
by the weaker joint's score. Both first crop to the box that holds every joint of the
sample (:func:`pose_box`, PoseC3D's compact crop), so that the gymnast, not the arena,
fills the ``size`` x ``size`` heatmap.

The network: SlowOnly's pose variant made small: a stem that keeps the heatmaps'
resolution (heatmaps are small already), then three stages of residual blocks whose
convolutions see one frame in the first stage and three in the others (motion matters
once the joints have been found), halving the resolution at the start of stages two and
three; pooling, dropout and a linear head.

Input (N, K, T, H, W) float: K = 17 keypoint channels or ``len(BONES)`` limb channels,
T frames, H = W heatmap pixels. Output (N, num_classes) logits; ``features(x)``:
(N, ``out_features``) before dropout and the head.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .stgcn import BONES, JOINTS


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


class _Block(nn.Module):
    """Two 3-D convolutions (``t`` frames, then 1) with a residual path."""

    def __init__(self, c_in: int, c_out: int, t: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_out, (t, 3, 3), (1, stride, stride), (t // 2, 1, 1), bias=False)
        self.bn1 = nn.BatchNorm3d(c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, (1, 3, 3), 1, (0, 1, 1), bias=False)
        self.bn2 = nn.BatchNorm3d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Sequential(nn.Conv3d(c_in, c_out, 1, (1, stride, stride), bias=False),
                                       nn.BatchNorm3d(c_out)) if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class PoseC3D(nn.Module):
    """Stem, three stages of ``blocks`` residual blocks of ``base_width`` x (1, 2, 4)
    channels, pooling and a linear head."""

    def __init__(self, *, num_classes: int, in_channels: int = JOINTS, base_width: int = 32,
                 blocks: tuple[int, int, int] = (3, 4, 3), dropout: float = 0.5):
        super().__init__()
        if in_channels < 1:
            raise InputError(f"in_channels must be at least 1, got {in_channels}")
        if len(blocks) != 3 or min(blocks) < 1:
            raise InputError(f"blocks must be three counts of at least 1, got {blocks}")
        self.in_channels = in_channels
        self.stem = nn.Sequential(nn.Conv3d(in_channels, base_width, (1, 7, 7), 1, (0, 3, 3), bias=False),
                                  nn.BatchNorm3d(base_width), nn.ReLU(inplace=True))
        layers, c_in = [], base_width
        for stage, (count, factor) in enumerate(zip(blocks, (1, 2, 4))):
            c_out = base_width * factor
            for i in range(count):
                layers.append(_Block(c_in, c_out, 1 if stage == 0 else 3, 2 if stage and i == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*layers)
        self.out_features = c_in
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K, T, H, W) heatmap volumes -> (N, out_features)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise InputError(f"PoseC3D takes heatmap volumes (N, {self.in_channels}, frames, height, width), "
                             f"got {tuple(x.shape)}")
        return self.stages(self.stem(x)).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


def posec3d(*, num_classes: int, in_channels: int = JOINTS, base_width: int = 32,
            blocks: tuple[int, int, int] = (3, 4, 3), dropout: float = 0.5) -> PoseC3D:
    return PoseC3D(num_classes=num_classes, in_channels=in_channels, base_width=base_width, blocks=tuple(blocks),
                   dropout=dropout)


# Name -> builder of the heatmap-volume models: (N, K, T, H, W) volumes in, K = 17
# (keypoint_volume) or len(BONES) (limb_volume).
HEATMAP_MODELS = {"posec3d": posec3d}
LIMBS = len(BONES)
