"""A PoseC3D-style recognizer (Duan et al., CVPR 2022): 2-D poses drawn as stacked heatmap
volumes and classified by a 3-D CNN made for them.

The volumes are drawn on the data workers (``dataset/heatmaps.py``, numpy only).

The network: SlowOnly's pose variant made small: a stem that keeps the heatmaps'
resolution (heatmaps are small already), then three stages of residual blocks whose
convolutions see one frame in the first stage and three in the others (motion matters
once the joints have been found), halving the resolution at the start of stages two and
three; pooling, dropout and a linear head.

Input (N, K, T, H, W) float: K = 17 keypoint channels or ``LIMBS`` limb channels,
T frames, H = W heatmap pixels. Output (N, num_classes) logits; ``features(x)``:
(N, ``out_features``) before dropout and the head.
"""

from __future__ import annotations

import torch
from torch import nn

from ..dataset.poses import BONES, JOINTS
from ..errors import InputError


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
# (heatmaps.keypoint_volume) or LIMBS (heatmaps.limb_volume).
HEATMAP_MODELS = {"posec3d": posec3d}
LIMBS = len(BONES)
