"""A single-stage, anchor-free temporal action detector over feature sequences.

The design follows the ideas of ActionFormer (Zhang et al., 2022) and TemporalMaxer
(Tang et al., 2023); the code is written here. Every time step of a multi-scale 1-D
feature pyramid is a candidate point that classifies itself (sigmoid focal loss) and, when
it lies in an action, regresses its distances to the action's start and end (a DIoU-style
1-D loss). Inference decodes the points to segments and prunes them with a Gaussian
soft-NMS written in PyTorch (no compiled extension to rebuild for every PyTorch release).

Coordinates: positions are in input steps ("step" = one snippet of the feature sequence).
Step ``t`` covers ``[t, t + 1)``, so a sequence of ``T`` valid steps spans ``[0, T)`` and
step ``t``'s centre is at ``t + 0.5``. Target segments, point centres, regressed distances
and detections all use these units; the caller converts seconds <-> steps.

Choices, for CPUs as much as GPUs:
- Pyramid levels come from max-pooling (TemporalMaxer: kernel 3, stride 2, no parameters;
  it matched local self-attention on THUMOS14 at a fraction of the cost) or, with
  ``downsample="conv"``, from strided convolutions. No attention.
- LayerNorm over channels at each step rather than BatchNorm: batch statistics would make a
  sequence's outputs depend on what it is batched with, and padded steps would pollute them.
- Every layer zeroes padded steps (and max-pooling sees them as -inf), so the outputs at
  valid steps are the same for a sequence alone and padded in a batch.
- The loss is normalised by the number of positive points with a floor of 1 (stateless,
  so nothing differs between data-parallel workers and an all-negative batch stays finite).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

Target = tuple[torch.Tensor, torch.Tensor]
Detections = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class DetectorOutput:
    """What the detector's forward pass returns; input of ``loss`` and ``detect``.

    One entry per pyramid level ``l`` (stride ``strides[l]`` input steps, ``T_l`` points):
    - ``logits[l]``: (B, T_l, K) class logits (sigmoid, one per class; K = 1: actionness).
    - ``distances[l]``: (B, T_l, 2) distances from the point's centre back to the start and
      forward to the end, in input steps, >= 0.
    - ``masks[l]``: (B, T_l) bool, True where the point lies on a valid (unpadded) step.
    - ``centres[l]``: (T_l,) the points' centres in input steps, ``(i + 0.5) * stride``.
    ``lengths``: (B,) long, valid input steps per sequence (detections are clipped to it).
    """

    logits: list[torch.Tensor]
    distances: list[torch.Tensor]
    masks: list[torch.Tensor]
    centres: list[torch.Tensor]
    strides: list[int]
    lengths: torch.Tensor


class ConvBlock(nn.Module):
    """conv1d -> LayerNorm over channels -> ReLU, padded steps zeroed on the way in and out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, C, T), mask: (B, T) of the output resolution when strided
        y = self.conv(x)  # (B, D, T')
        y = self.norm(y.transpose(1, 2)).transpose(1, 2)  # (B, T', D) normalised per step -> (B, D, T')
        return F.relu(y).masked_fill(~mask[:, None], 0.0)


class Head(nn.Module):
    """Conv blocks and a final conv, shared by every pyramid level."""

    def __init__(self, channels: int, hidden: int, out_channels: int, layers: int, kernel_size: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            ConvBlock(channels if i == 0 else hidden, hidden, kernel_size) for i in range(layers))
        self.out = nn.Conv1d(hidden if layers else channels, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)  # (B, H, T_l)
        return self.out(x)  # (B, out, T_l); padded steps are the caller's to ignore


def default_regression_ranges(num_levels: int) -> list[tuple[float, float]]:
    """ActionFormer's ranges for strides 1, 2, 4, ...: (0, 4), (4, 8), (8, 16), ..., (.., inf).

    A segment goes to the level whose range holds its larger distance from the point, in
    input steps (lower bound inclusive, upper exclusive); the last level takes all longer ones.
    """
    ranges = [(0.0 if lv == 0 else float(2 ** (lv + 1)), float(2 ** (lv + 2))) for lv in range(num_levels)]
    ranges[-1] = (ranges[-1][0], math.inf)
    return ranges


class TemporalDetector(nn.Module):
    """Feature pyramid, shared classification and regression heads, training targets and decoding.

    Input: ``feats`` (B, C, T) float, ``mask`` (B, T) bool with True on valid steps; the valid
    steps of each sequence must come first (right padding). Any T >= 1 works: the sequence
    is padded internally to a multiple of the pyramid's total stride and those steps masked.
    """

    def __init__(self, *, in_channels: int, num_classes: int, embed_dim: int, head_dim: int, num_levels: int,
                 embed_layers: int, head_layers: int, kernel_size: int, downsample: str,
                 regression_ranges: Sequence[tuple[float, float]] | None, center_radius: float,
                 focal_alpha: float, focal_gamma: float, reg_weight: float, prior_prob: float, dropout: float):
        super().__init__()
        if num_classes < 1 or in_channels < 1 or num_levels < 1 or embed_layers < 1:
            raise InputError(f"detector: num_classes ({num_classes}), in_channels ({in_channels}), num_levels "
                             f"({num_levels}) and embed_layers ({embed_layers}) must be >= 1")
        if downsample not in ("max", "conv"):
            raise InputError(f"detector: downsample must be 'max' or 'conv', not {downsample!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise InputError(f"detector: kernel_size must be odd, not {kernel_size}")
        ranges = list(regression_ranges) if regression_ranges is not None else default_regression_ranges(num_levels)
        if len(ranges) != num_levels:
            raise InputError(f"detector: {len(ranges)} regression ranges for {num_levels} levels")
        self.num_classes = num_classes
        self.kernel_size = kernel_size
        self.strides = [2 ** lv for lv in range(num_levels)]
        self.regression_ranges = [(float(lo), float(hi)) for lo, hi in ranges]
        self.center_radius = center_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.reg_weight = reg_weight

        self.embed = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else embed_dim, embed_dim, kernel_size) for i in range(embed_layers))
        self.dropout = nn.Dropout(dropout)
        self.downsample = downsample
        if downsample == "conv":
            self.down = nn.ModuleList(ConvBlock(embed_dim, embed_dim, 3, stride=2) for _ in range(num_levels - 1))
        self.cls_head = Head(embed_dim, head_dim, num_classes, head_layers, kernel_size)
        self.reg_head = Head(embed_dim, head_dim, 2, head_layers, kernel_size)
        # Levels share the regression head; a learnt scale per level lets each rescale it.
        self.scales = nn.Parameter(torch.ones(num_levels))
        # Start every point at a low foreground probability so that the many negatives do not
        # swamp the first steps of training (RetinaNet's prior).
        nn.init.constant_(self.cls_head.out.bias, -math.log((1 - prior_prob) / prior_prob))

    @property
    def total_stride(self) -> int:
        return self.strides[-1]

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> DetectorOutput:
        if feats.dim() != 3 or mask.shape != (feats.shape[0], feats.shape[2]):
            raise InputError(f"detector: expected feats (B, C, T) and mask (B, T), got {tuple(feats.shape)} and "
                             f"{tuple(mask.shape)}")
        mask = mask.bool()
        lengths = mask.sum(1)  # (B,)
        steps = torch.arange(mask.shape[1], device=mask.device)
        if not torch.equal(mask, steps[None] < lengths[:, None]):
            raise InputError("detector: each mask row must be True on its first steps and False after (right padding)")
        b, _, t = feats.shape
        padded = max(-(-t // self.total_stride), 1) * self.total_stride
        feats = F.pad(feats, (0, padded - t))  # (B, C, T_pad)
        mask = F.pad(mask, (0, padded - t))  # (B, T_pad)
        # masked_fill rather than a product: padding may hold anything, NaN included.
        x = feats.masked_fill(~mask[:, None], 0.0)
        for block in self.embed:
            x = block(x, mask)  # (B, D, T_pad)
        x = self.dropout(x)

        levels, masks = [x], [mask]
        for lv in range(1, len(self.strides)):
            prev, prev_mask = levels[-1], masks[-1]
            m = prev_mask[:, ::2]  # (B, T_l): a point is valid if the first step it covers is
            if self.downsample == "max":
                # -inf on padded steps: a valid point's window never takes a padded value.
                y = F.max_pool1d(prev.masked_fill(~prev_mask[:, None], -math.inf), 3, stride=2, padding=1)
                y = y.masked_fill(~m[:, None], 0.0)  # (B, D, T_l); all-padded windows were -inf
            else:
                y = self.down[lv - 1](prev, m)  # (B, D, T_l)
            levels.append(y)
            masks.append(m)

        # The heads are shared: run them once over all levels laid end to end, with
        # kernel_size // 2 masked steps between levels so that no convolution window reaches
        # across a level boundary (each level sees the zeros it would see alone). One pass
        # instead of one per level: small CPU batches are bound by per-op overhead.
        gap = self.kernel_size // 2
        sizes = [y.shape[2] for y in levels]
        joined = torch.cat([F.pad(y, (0, gap)) for y in levels], 2)  # (B, D, sum(T_l + gap))
        joined_mask = torch.cat([F.pad(m, (0, gap)) for m in masks], 1)  # (B, sum(T_l + gap))
        cls = self.cls_head(joined, joined_mask).transpose(1, 2)  # (B, K, T_all) -> (B, T_all, K)
        reg = self.reg_head(joined, joined_mask).transpose(1, 2)  # (B, 2, T_all) -> (B, T_all, 2)
        logits, distances, centres = [], [], []
        start = 0
        for lv, size in enumerate(sizes):
            stride = self.strides[lv]
            logits.append(cls[:, start:start + size])  # (B, T_l, K)
            # softplus keeps distances >= 0 without ReLU's dead zone; distances scale with the
            # stride so that every level regresses numbers of the same size; float32 because
            # half precision would place the end of a 1000-step segment only to within 4 steps.
            dist = F.softplus(self.scales[lv] * reg[:, start:start + size].float()) * stride  # (B, T_l, 2)
            distances.append(dist)
            # float32 even for half inputs: half cannot hold centres beyond 2048 steps exactly.
            centres.append((torch.arange(size, device=feats.device, dtype=torch.float32) + 0.5) * stride)
            start += size + gap
        return DetectorOutput(logits=logits, distances=distances, masks=masks, centres=centres,
                              strides=list(self.strides), lengths=lengths)

    # -- training ------------------------------------------------------------------------

    def _points(self, output: DetectorOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All levels' points concatenated: centres (P,), strides (P,), regression ranges (P, 2)."""
        centres = torch.cat(output.centres)  # (P,)
        strides = torch.cat([torch.full_like(c, s) for c, s in zip(output.centres, output.strides)])
        ranges = torch.cat([c.new_tensor(r).expand(len(c), 2) for c, r in zip(output.centres, self.regression_ranges)])
        return centres, strides, ranges

    def assign(self, output: DetectorOutput, targets: Sequence[Target]) -> tuple[torch.Tensor, torch.Tensor]:
        """Training targets of every point: class targets (B, P, K) in {0, 1} and distances (B, P, 2).

        A point is positive for a segment when it lies inside the segment, within
        ``center_radius * stride`` of its centre, and the segment's larger distance from the
        point falls in the point's level range. When several segments claim a point, the
        shortest wins. Segments with end <= start claim no point. With num_classes = 1 the
        labels are ignored (class-agnostic).
        """
        centres, strides, ranges = self._points(output)
        b = output.logits[0].shape[0]
        if len(targets) != b:
            raise InputError(f"detector: {len(targets)} targets for a batch of {b}")
        device, dtype = centres.device, centres.dtype
        cls_t = torch.zeros(b, len(centres), self.num_classes, device=device, dtype=dtype)
        reg_t = torch.zeros(b, len(centres), 2, device=device, dtype=dtype)
        for i, (segments, labels) in enumerate(targets):
            segments = torch.as_tensor(segments, dtype=dtype, device=device).reshape(-1, 2)  # (N, 2)
            labels = torch.as_tensor(labels, dtype=torch.long, device=device).reshape(-1)  # (N,)
            if len(labels) != len(segments):
                raise InputError(f"detector: sample {i} has {len(segments)} segments and {len(labels)} labels")
            if self.num_classes == 1:
                labels = torch.zeros_like(labels)
            elif len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise InputError(f"detector: sample {i} has labels outside [0, {self.num_classes})")
            if not len(segments):
                continue
            start, end = segments[:, 0:1], segments[:, 1:2]  # (N, 1)
            left = centres[None] - start  # (N, P)
            right = end - centres[None]  # (N, P)
            mid = (start + end) / 2
            radius = self.center_radius * strides[None]  # (1, P)
            # Inside the segment and near its centre (this implies left > 0 and right > 0).
            near = ((centres[None] > torch.maximum(start, mid - radius))
                    & (centres[None] < torch.minimum(end, mid + radius)))  # (N, P)
            reach = torch.maximum(left, right)  # (N, P)
            in_range = (reach >= ranges[None, :, 0]) & (reach < ranges[None, :, 1])  # (N, P)
            length = (end - start).expand_as(left).masked_fill(~(near & in_range), math.inf)  # (N, P)
            best_len, best = length.min(0)  # (P,): the shortest claiming segment
            pos = torch.isfinite(best_len)  # (P,)
            cls_t[i, pos, labels[best[pos]]] = 1.0
            dist = torch.stack([left.gather(0, best[None])[0], right.gather(0, best[None])[0]], 1)  # (P, 2)
            reg_t[i, pos] = dist[pos]
        return cls_t, reg_t

    def loss(self, output: DetectorOutput, targets: Sequence[Target]) -> dict[str, torch.Tensor]:
        """Losses of a batch: {"loss": cls + reg_weight * reg (backprop this), "cls", "reg"}.

        targets: one (segments (N, 2) float in input steps [start, end), labels (N,) long in
        [0, K)) per sequence; N may be 0. Both terms are sums over points divided by
        max(number of positive points in the batch, 1); padded points never count.
        """
        cls_t, reg_t = self.assign(output, targets)  # (B, P, K), (B, P, 2)
        # float32 whatever autocast produced: focal terms of easy negatives underflow in half.
        logits = torch.cat(output.logits, 1).float()  # (B, P, K)
        dist = torch.cat(output.distances, 1).float()  # (B, P, 2)
        valid = torch.cat(output.masks, 1)  # (B, P)
        pos = (cls_t.sum(2) > 0) & valid  # (B, P)
        norm = pos.sum().clamp(min=1).to(logits.dtype)
        cls = sigmoid_focal_loss(logits[valid], cls_t[valid], alpha=self.focal_alpha, gamma=self.focal_gamma)
        reg = diou_loss_1d(dist[pos], reg_t[pos])
        cls, reg = cls.sum() / norm, reg.sum() / norm
        return {"loss": cls + self.reg_weight * reg, "cls": cls, "reg": reg}

    # -- inference -----------------------------------------------------------------------

    @torch.no_grad()
    def detect(self, output: DetectorOutput, *, max_detections: int = 100, score_threshold: float = 0.001,
               pre_nms_topk: int = 2000, sigma: float = 0.5, min_score: float = 0.001,
               min_length: float = 0.0) -> list[Detections]:
        """Decode points to segments, keep the ``pre_nms_topk`` best (point, class) pairs above
        ``score_threshold``, clip them to the sequence, drop those not longer than
        ``min_length`` steps, then Gaussian soft-NMS per class (see ``soft_nms``).

        Returns one (segments (M, 2) float in input steps, scores (M,) in (0, 1], labels (M,)
        long) per sequence, sorted by descending score, M <= max_detections.
        """
        probs = torch.cat(output.logits, 1).float().sigmoid()  # (B, P, K)
        dist = torch.cat(output.distances, 1).float()  # (B, P, 2)
        valid = torch.cat(output.masks, 1)  # (B, P)
        centres = torch.cat(output.centres)  # (P,)
        k = probs.shape[2]
        results = []
        for i in range(probs.shape[0]):
            scores = probs[i].masked_fill(~valid[i, :, None], 0.0).flatten()  # (P*K,)
            keep = (scores > score_threshold).nonzero().squeeze(1)
            if len(keep) > pre_nms_topk:
                keep = keep[scores[keep].topk(pre_nms_topk).indices]
            point, label = keep // k, keep % k
            length = output.lengths[i].to(centres.dtype)
            seg = torch.stack([centres[point] - dist[i, point, 0], centres[point] + dist[i, point, 1]], 1)  # (M, 2)
            seg = torch.minimum(seg.clamp(min=0.0), length)
            long_enough = seg[:, 1] - seg[:, 0] > min_length
            results.append(soft_nms(seg[long_enough], scores[keep][long_enough], label[long_enough],
                                    sigma=sigma, min_score=min_score, max_detections=max_detections))
        return results


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, gamma: float) -> torch.Tensor:
    """Focal loss per element (Lin et al., 2017): cross-entropy scaled by (1 - p_t) ** gamma,
    positives weighted by alpha and negatives by 1 - alpha (alpha < 0: no weighting)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def diou_loss_1d(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1-D distance-IoU loss per point: 1 - IoU + (centre distance / enclosing length) ** 2.

    pred, target: (N, 2) distances from the same point to the start and to the end (>= 0,
    any unit); returns (N,). The centre term keeps a gradient when the segments do not overlap.
    """
    inter = torch.minimum(pred[:, 0], target[:, 0]) + torch.minimum(pred[:, 1], target[:, 1])
    union = pred.sum(1) + target.sum(1) - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.maximum(pred[:, 0], target[:, 0]) + torch.maximum(pred[:, 1], target[:, 1])
    # Centres relative to the point are (end - start) / 2 = (right - left) / 2.
    offset = ((pred[:, 1] - pred[:, 0]) - (target[:, 1] - target[:, 0])) / 2
    return 1 - iou + (offset / enclosing.clamp(min=eps)) ** 2


def segment_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Temporal IoU of every pair: a (M, 2), b (N, 2) as [start, end) -> (M, N); 0 where the union is empty."""
    inter = (torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def soft_nms(segments: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, *, sigma: float,
             min_score: float, max_detections: int) -> Detections:
    """Gaussian soft-NMS (Bodla et al., 2017) per class, in plain PyTorch.

    Repeatedly keeps the highest-scoring remaining segment and multiplies the score of every
    remaining segment of the same label by ``exp(-iou ** 2 / sigma)``; segments whose score
    falls below ``min_score`` are dropped. Stops after ``max_detections`` kept segments.
    segments: (M, 2) [start, end) in any unit; scores (M,); labels (M,) long.
    Returns (segments (M', 2), decayed scores (M',), labels (M',)) in the order kept, which is
    descending score.
    """
    if sigma <= 0:
        raise InputError(f"soft_nms: sigma must be > 0, not {sigma}")
    scores = scores.clone()
    alive = scores >= min_score  # (M,)
    kept: list[int] = []
    kept_scores: list[torch.Tensor] = []
    while len(kept) < max_detections and bool(alive.any()):
        best = int(scores.masked_fill(~alive, -math.inf).argmax())
        kept.append(best)
        kept_scores.append(scores[best].clone())
        alive[best] = False
        same = alive & (labels == labels[best])  # (M,)
        if bool(same.any()):
            iou = segment_iou(segments[best:best + 1], segments[same])[0]  # (M_same,)
            scores[same] = scores[same] * torch.exp(-iou ** 2 / sigma)
            alive &= scores >= min_score
    idx = torch.tensor(kept, dtype=torch.long, device=segments.device)
    out_scores = torch.stack(kept_scores) if kept_scores else scores.new_zeros(0)
    return segments[idx].reshape(-1, 2), out_scores, labels[idx]


def pyramid(*, in_channels: int, num_classes: int, embed_dim: int = 256, head_dim: int = 256, num_levels: int = 6,
            embed_layers: int = 2, head_layers: int = 2, kernel_size: int = 3, downsample: str = "max",
            regression_ranges: Sequence[tuple[float, float]] | None = None, center_radius: float = 1.5,
            focal_alpha: float = 0.25, focal_gamma: float = 2.0, reg_weight: float = 1.0, prior_prob: float = 0.01,
            dropout: float = 0.0) -> TemporalDetector:
    """The max-pool (or strided-conv) pyramid detector; strides 1, 2, ..., 2 ** (num_levels - 1) steps.

    regression_ranges: one (low, high) per level in input steps; None: ActionFormer's
    (0, 4), (4, 8), ... with the last level unbounded. num_classes = 1: class-agnostic.
    """
    return TemporalDetector(in_channels=in_channels, num_classes=num_classes, embed_dim=embed_dim,
                            head_dim=head_dim, num_levels=num_levels, embed_layers=embed_layers,
                            head_layers=head_layers, kernel_size=kernel_size, downsample=downsample,
                            regression_ranges=regression_ranges, center_radius=center_radius,
                            focal_alpha=focal_alpha, focal_gamma=focal_gamma, reg_weight=reg_weight,
                            prior_prob=prior_prob, dropout=dropout)


# Name -> builder. Each takes (B, C, T) features and a (B, T) mask, see TemporalDetector.
DETECTORS: dict[str, Callable[..., TemporalDetector]] = {
    "pyramid": pyramid,
}
