"""The paper's recognition models over a ResNet or BN-Inception, and the dict that builds
them by name.

Inputs (float tensors, normalised: RGB in [0, 1] less IMAGENET_MEAN, over IMAGENET_STD;
flow in pixels / FLOW_SCALE_PX):
- segment models (TSN, TRN, TRN-m, TSM): (B, T, C, H, W), T = ``num_segments``;
  C = 3 for RGB, 2 * flow_pairs for flow (x/y fields of consecutive pairs stacked).
- clip models (I3D, NL-I3D): (B, C, T, H, W), T consecutive frames.
TSN and TRN take a 2-D ``backbone``: "resnet" (``depth``, ``base_width``, ``blocks``) or
"bninception" (the paper's for them, one size: ``models/bninception.py``). ActionVLAD is a
segment model over VGG-16 (``base_width``; ``models/actionvlad.py``).
Output: (B, num_classes) class scores (logits). ``features(x)``: (B, F) pooled backbone
features (F = ``backbone.out_features``), averaged over the segments of segment models,
before any dropout, relation module or head: what feature extraction stores.

Two-stream is not a model: it averages the scores of a trained RGB and a trained flow
run at evaluation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn

from ..errors import InputError
from .actionvlad import VGG16, ActionVLAD
from .bninception import BNInception
from .resnet import ResNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Flow enters the network in pixels / FLOW_SCALE_PX, whatever bound the shards were cut with.
FLOW_SCALE_PX = 20.0
# The 2-D backbones TSN and TRN take.
BACKBONES = ("resnet", "bninception")


class LinearClassifier(nn.Module):
    """A backbone and one linear head.

    segments=True (TSN, TSM): a 2-D backbone per segment, class scores averaged over the
    segments. segments=False (I3D, NL-I3D): a 3-D backbone over the whole clip.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float, *, segments: bool):
        super().__init__()
        self.backbone = backbone
        self.segments = segments
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.out_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.segments:
            return self.backbone(x)  # (B, F)
        b, t = x.shape[:2]
        return self.backbone(x.flatten(0, 1)).view(b, t, -1).mean(1)  # (B*T, F) -> (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.segments:
            return self.head(self.dropout(self.backbone(x)))  # (B, K)
        b, t = x.shape[:2]
        feats = self.backbone(x.flatten(0, 1))  # (B*T, F); TSM's shift reads the T axis from this layout
        scores = self.head(self.dropout(feats))  # (B*T, K)
        return scores.view(b, t, -1).mean(1)  # (B, K)


class RelationNet(nn.Module):
    """TRN: relations among ordered frame tuples of the segment features.

    ``scales`` lists tuple sizes: (T,) is single-scale TRN; (T, T-1, ..., 2) is TRN-multiscale.
    For each scale, up to ``max_tuples`` ordered tuples (evenly chosen, deterministic) pass
    through a shared-per-scale MLP g; their outputs are summed, then h maps to scores;
    the scales' scores are added.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, num_segments: int, scales: tuple[int, ...],
                 dropout: float, bottleneck: int = 256, max_tuples: int = 3):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        feat = backbone.out_features
        self.tuples = []
        self.g = nn.ModuleList()
        self.h = nn.ModuleList()
        for k in scales:
            combos = list(itertools.combinations(range(num_segments), k))
            step = max(len(combos) // max_tuples, 1)
            self.tuples.append(combos[::step][:max_tuples])
            self.g.append(nn.Sequential(nn.ReLU(), nn.Linear(k * feat, bottleneck), nn.ReLU()))
            self.h.append(nn.Linear(bottleneck, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        return self.backbone(x.flatten(0, 1)).view(b, t, -1).mean(1)  # (B*T, F) -> (B, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        feats = self.dropout(self.backbone(x.flatten(0, 1)).view(b, t, -1))  # (B, T, F)
        out = 0
        for tuples, g, h in zip(self.tuples, self.g, self.h):
            rel = sum(g(feats[:, list(idx)].flatten(1)) for idx in tuples)  # (B, bottleneck)
            out = out + h(rel)
        return out  # (B, K)


def _backbone(depth: int, base_width: int, blocks: tuple[int, ...] | None, in_channels: int, **kw) -> ResNet:
    backbone = ResNet(depth=depth, in_channels=in_channels, base_width=base_width, blocks=blocks, **kw)
    # The recognizers have heads of their own; an unused ImageNet fc would stall DDP,
    # which waits for a gradient of every parameter.
    del backbone.fc
    return backbone


def _backbone_2d(backbone: str, depth: int, base_width: int, blocks: tuple[int, ...] | None,
                 in_channels: int) -> nn.Module:
    """TSN's and TRN's per-frame network: a ResNet or BN-Inception (which has no ImageNet
    head to drop)."""
    if backbone == "bninception":
        return BNInception(in_channels=in_channels)
    if backbone != "resnet":
        raise InputError(f"backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")
    return _backbone(depth, base_width, blocks, in_channels)


def tsn(*, num_classes: int, num_segments: int = 3, in_channels: int = 3, depth: int = 50, base_width: int = 64,
        blocks: tuple[int, ...] | None = None, dropout: float = 0.5, backbone: str = "resnet") -> nn.Module:
    net = _backbone_2d(backbone, depth, base_width, blocks, in_channels)
    return LinearClassifier(net, num_classes, dropout, segments=True)


def tsm(*, num_classes: int, num_segments: int = 8, in_channels: int = 3, depth: int = 50, base_width: int = 64,
        blocks: tuple[int, ...] | None = None, dropout: float = 0.5, shift_fraction: float = 0.125) -> nn.Module:
    backbone = _backbone(depth, base_width, blocks, in_channels, shift_segments=num_segments,
                         shift_fraction=shift_fraction)
    return LinearClassifier(backbone, num_classes, dropout, segments=True)


def trn(*, num_classes: int, num_segments: int = 8, in_channels: int = 3, depth: int = 50, base_width: int = 64,
        blocks: tuple[int, ...] | None = None, dropout: float = 0.5, backbone: str = "resnet") -> nn.Module:
    net = _backbone_2d(backbone, depth, base_width, blocks, in_channels)
    return RelationNet(net, num_classes, num_segments, (num_segments,), dropout)


def trn_multiscale(*, num_classes: int, num_segments: int = 8, in_channels: int = 3, depth: int = 50,
                   base_width: int = 64, blocks: tuple[int, ...] | None = None, dropout: float = 0.5,
                   backbone: str = "resnet") -> nn.Module:
    scales = tuple(range(num_segments, 1, -1))
    net = _backbone_2d(backbone, depth, base_width, blocks, in_channels)
    return RelationNet(net, num_classes, num_segments, scales, dropout)


def i3d(*, num_classes: int, in_channels: int = 3, depth: int = 50, base_width: int = 64,
        blocks: tuple[int, ...] | None = None, dropout: float = 0.5, num_segments: int = 0) -> nn.Module:
    return LinearClassifier(_backbone(depth, base_width, blocks, in_channels, dims=3), num_classes, dropout,
                            segments=False)


def nl_i3d(*, num_classes: int, in_channels: int = 3, depth: int = 50, base_width: int = 64,
           blocks: tuple[int, ...] | None = None, dropout: float = 0.5, num_segments: int = 0) -> nn.Module:
    backbone = _backbone(depth, base_width, blocks, in_channels, dims=3, nonlocal_stages=(2, 3))
    return LinearClassifier(backbone, num_classes, dropout, segments=False)


def actionvlad(*, num_classes: int, num_segments: int = 10, in_channels: int = 3, base_width: int = 64,
               dropout: float = 0.5, clusters: int = 64, freeze_before: str = "") -> nn.Module:
    """ActionVLAD over ``num_segments`` frames (any number at test): VGG-16, ``clusters``
    VLAD centres; ``freeze_before`` (e.g. "conv5_1", the paper's): the convolutions
    before that one do not train."""
    backbone = VGG16(in_channels=in_channels, base_width=base_width)
    if freeze_before:
        backbone.freeze_before(freeze_before)
    return ActionVLAD(backbone, num_classes, clusters, dropout)


# Name -> builder. Segment models take (B, T, C, H, W), clip models (B, C, T, H, W).
MODELS: dict[str, Callable[..., nn.Module]] = {
    "tsn": tsn,
    "trn": trn,
    "trn_multiscale": trn_multiscale,
    "tsm": tsm,
    "i3d": i3d,
    "nl_i3d": nl_i3d,
    "actionvlad": actionvlad,
}
CLIP_MODELS = {"i3d", "nl_i3d"}
# The models that take ``backbone``.
BACKBONE_MODELS = {"tsn", "trn", "trn_multiscale"}
