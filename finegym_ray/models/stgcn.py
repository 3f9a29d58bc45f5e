"""ST-GCN (Yan et al., AAAI 2018) over 2-D COCO-17 skeletons: the FineGym paper's
skeleton row, a graph convolution over the joints of each frame alternating with a
temporal convolution over each joint's frames.

Input: (N, M, T, V, C) float: N samples, M persons, T frames, V = 17 joints in COCO-17
order (``dataset/poses.py``), C = 2 (x, y) or 3 (x, y, score); coordinates scaled by the
caller (e.g. to [-1, 1] of the frame): a batch norm over each joint's channels
(``data_bn``) takes out what scale remains. Output: (N, num_classes) class scores
(logits); ``features(x)``: (N, ``out_features``), pooled over frames and joints and
averaged over the persons, before dropout and the head.

The graph: the skeleton's bones, each joint's neighbours split by ST-GCN's spatial
partition into three kernels (the joint itself and the neighbours as far from the centre
as it, those nearer the centre, those farther), each row-normalised, and a learnt
weight per edge and kernel.
"""

from __future__ import annotations

import torch
from torch import nn

from ..dataset.poses import BONES, JOINTS
from ..errors import InputError

CENTRE = 0  # the nose: every joint's distance to it orders the partition


def spatial_partition(bones: tuple[tuple[int, int], ...] = BONES, joints: int = JOINTS,
                      centre: int = CENTRE) -> torch.Tensor:
    """(3, V, V) adjacency of ST-GCN's spatial partition: [k, i, j] > 0 where joint i
    gathers from joint j in kernel k (0: itself and neighbours as many bones from
    ``centre`` as i, 1: nearer, 2: farther), each row of the three together summing to 1."""
    neighbours: list[set[int]] = [set() for _ in range(joints)]
    for a, b in bones:
        neighbours[a].add(b)
        neighbours[b].add(a)
    hops = [-1] * joints  # bones from the centre, breadth first
    hops[centre], frontier = 0, [centre]
    while frontier:
        reached = []
        for i in frontier:
            for j in sorted(neighbours[i]):
                if hops[j] < 0:
                    hops[j] = hops[i] + 1
                    reached.append(j)
        frontier = reached
    if min(hops) < 0:
        raise InputError(f"the skeleton graph is not connected: joints {[j for j, h in enumerate(hops) if h < 0]}")
    a = torch.zeros(3, joints, joints)
    for i in range(joints):
        a[0, i, i] = 1.0
        for j in neighbours[i]:
            a[0 if hops[j] == hops[i] else 1 if hops[j] < hops[i] else 2, i, j] = 1.0
    return a / a.sum(dim=(0, 2), keepdim=True)


class _Block(nn.Module):
    """A spatial graph convolution (one 1x1 convolution per kernel, gathered over the
    graph), then a temporal convolution over each joint; residual."""

    def __init__(self, graph: torch.Tensor, in_channels: int, out_channels: int, stride: int, kernel: int,
                 residual: bool = True):
        super().__init__()
        self.register_buffer("graph", graph.clone(), persistent=False)
        self.edge_weight = nn.Parameter(torch.ones_like(graph))
        self.gcn = nn.Conv2d(in_channels, out_channels * graph.shape[0], 1)
        self.tcn = nn.Sequential(nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
                                 nn.Conv2d(out_channels, out_channels, (kernel, 1), (stride, 1), (kernel // 2, 0)),
                                 nn.BatchNorm2d(out_channels))
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, (stride, 1)),
                                          nn.BatchNorm2d(out_channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, V)
        k = self.graph.shape[0]
        y = self.gcn(x)
        y = y.view(y.shape[0], k, y.shape[1] // k, *y.shape[2:])
        y = torch.einsum("bkctj,kij->bcti", y, self.graph * self.edge_weight)
        y = self.tcn(y)
        return self.relu(y if self.residual is None else y + self.residual(x))


class STGCN(nn.Module):
    """ST-GCN: ten blocks of ``base_width`` x (1, 1, 1, 1, 2, 2, 2, 4, 4, 4) channels,
    frames strided by 2 at the fifth and eighth, then pooling and one linear head."""

    def __init__(self, *, num_classes: int, in_channels: int = 3, base_width: int = 64, temporal_kernel: int = 9,
                 dropout: float = 0.5):
        super().__init__()
        if in_channels not in (2, 3):
            raise InputError(f"in_channels must be 2 (x, y) or 3 (x, y, score), got {in_channels}")
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise InputError(f"temporal_kernel must be an odd number of frames, got {temporal_kernel}")
        graph = spatial_partition()
        widths = [base_width] * 4 + [2 * base_width] * 3 + [4 * base_width] * 3
        self.data_bn = nn.BatchNorm1d(JOINTS * in_channels)
        blocks, c_in = [], in_channels
        for i, width in enumerate(widths):
            blocks.append(_Block(graph, c_in, width, 2 if i in (4, 7) else 1, temporal_kernel, residual=i > 0))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        self.out_features = c_in
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)
        self.in_channels = in_channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, M, T, V, C) skeletons -> (N, out_features)."""
        if x.ndim != 5 or x.shape[3] != JOINTS or x.shape[4] != self.in_channels:
            raise InputError(f"ST-GCN takes (N, persons, frames, {JOINTS}, {self.in_channels}), got {tuple(x.shape)}")
        n, m, t, v, c = x.shape
        y = self.data_bn(x.reshape(n * m, t, v * c).transpose(1, 2))  # (NM, VC, T)
        y = y.view(n * m, v, c, t).permute(0, 2, 3, 1)  # (NM, C, T, V)
        y = self.blocks(y).mean(dim=(2, 3))
        return y.view(n, m, -1).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


def stgcn(*, num_classes: int, in_channels: int = 3, base_width: int = 64, temporal_kernel: int = 9,
          dropout: float = 0.5) -> STGCN:
    return STGCN(num_classes=num_classes, in_channels=in_channels, base_width=base_width,
                 temporal_kernel=temporal_kernel, dropout=dropout)


# Name -> builder of the skeleton models: (N, M, T, 17, C) skeletons in (pose/train.py
# trains them; the recognition models of MODELS take frames).
POSE_MODELS = {"stgcn": stgcn}
