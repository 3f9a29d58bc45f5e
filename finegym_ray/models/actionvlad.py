"""ActionVLAD (Girdhar et al. 2017): a 2-D network's local features of every frame pooled
over space and time by NetVLAD into one vector, then a linear classifier.

- ``VGG16``: VGG-16's 13 convolutions (the paper's backbone), named as torchvision's
  ``vgg16().features`` (``features.0`` is conv1_1, ``features.28`` conv5_3) so that its
  ImageNet weights load by name; it ends at conv5_3's ReLU (its last max pool dropped),
  a 224x224 frame giving 14x14 descriptors of 512 channels. ``base_width`` shrinks it
  for CPU tests (widths base_width x 1, 2, 4, 8, 8).
- ``NetVLAD``: ``clusters`` learnable centres c_k; each descriptor x (L2-normalised) is
  assigned softly, a_k(x) = softmax_k(w_k . x + b_k), and the pooled vector is
  V_k = sum over frames and positions of a_k(x) (x - c_k), each V_k L2-normalised
  (intra-normalisation), then the whole (clusters x channels) vector. A sum: the order
  of the frames does not change it.
- ``kmeans``: the centres' initialisation from descriptors of training frames, in torch.

Input (B, T, C, H, W) as the segment models take it; output (B, num_classes) logits.
``features(x)``: the backbone's descriptors averaged over frames and positions, (B, D)
with D = ``backbone.out_features``, before the VLAD layer (as TRN's are before its
relation module). No I/O, no config objects: keyword arguments only.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

# VGG-16's convolutions per stage; a 2x2 max pool between stages.
STAGES = (2, 2, 3, 3, 3)
LAYERS = tuple(f"conv{s}_{i}" for s, n in enumerate(STAGES, start=1) for i in range(1, n + 1))
# The sharpness of the soft assignment that starts from the centres: with unit-length
# descriptors (squared distances 0-4) a descriptor goes almost wholly to its nearest
# centre, as k-means assigns it, and the gradient still reaches the others.
ALPHA = 100.0


class VGG16(nn.Module):
    """Local features: (N, C, H, W) -> (N, D, H/16, W/16), D = ``out_features`` (512 at
    full width), after conv5_3 and its ReLU."""

    FIRST_CONV: ClassVar[str] = "features.0.weight"
    NAMING: ClassVar[str] = "torchvision"  # the names of this module, as train/weights.py reports them

    def __init__(self, *, in_channels: int = 3, base_width: int = 64):
        super().__init__()
        layers: list[nn.Module] = []
        self.index: dict[str, int] = {}  # conv name -> its index in ``features``
        cin = in_channels
        for stage, count in enumerate(STAGES, start=1):
            if stage > 1:
                layers.append(nn.MaxPool2d(2, 2))
            width = base_width * min(2 ** (stage - 1), 8)
            for i in range(1, count + 1):
                self.index[f"conv{stage}_{i}"] = len(layers)
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True)]
                cin = width
        self.features = nn.Sequential(*layers)
        self.out_features = cin

    def freeze_before(self, layer: str) -> None:
        """Stop training every convolution before ``layer`` (a name of LAYERS, e.g.
        "conv5_1")."""
        if layer not in self.index:
            raise InputError(f"freeze_before must be one of {', '.join(LAYERS)}, got {layer!r}")
        for p in self.features[:self.index[layer]].parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class NetVLAD(nn.Module):
    """(B, N, D) unit-length descriptors -> (B, clusters * D) unit-length VLAD vectors."""

    def __init__(self, dim: int, clusters: int):
        super().__init__()
        self.centres = nn.Parameter(F.normalize(torch.randn(clusters, dim), dim=1))
        self.assign = nn.Linear(dim, clusters)
        self.set_centres(self.centres.detach())
        self.out_features = clusters * dim

    @torch.no_grad()
    def set_centres(self, centres: torch.Tensor) -> None:
        """Centres (clusters, D), and the soft assignment that gives each descriptor to
        them by distance: ALPHA * -|x - c_k|^2 less the term common to every k."""
        self.centres.copy_(centres)
        self.assign.weight.copy_(2 * ALPHA * centres)
        self.assign.bias.copy_(-ALPHA * centres.pow(2).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.softmax(self.assign(x), dim=-1)  # (B, N, K)
        v = a.transpose(1, 2) @ x - a.sum(1).unsqueeze(-1) * self.centres  # (B, K, D)
        v = F.normalize(v, dim=2)  # intra-normalisation: each cluster's residual
        return F.normalize(v.flatten(1), dim=1)


class ActionVLAD(nn.Module):
    """A VGG16 over every frame, NetVLAD over all their descriptors, dropout, a linear head."""

    def __init__(self, backbone: VGG16, num_classes: int, clusters: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.vlad = NetVLAD(backbone.out_features, clusters)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.vlad.out_features, num_classes)

    def descriptors(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B, T * h * w, D): each frame's local features, unit length."""
        b, t = x.shape[:2]
        maps = self.backbone(x.flatten(0, 1))  # (B*T, D, h, w)
        d = maps.shape[1]
        return F.normalize(maps.view(b, t, d, -1).transpose(2, 3).reshape(b, -1, d), dim=-1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        return self.backbone(x.flatten(0, 1)).view(b, t, self.backbone.out_features, -1).mean((1, 3))  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.vlad(self.descriptors(x))))  # (B, K)


def kmeans(x: torch.Tensor, k: int, *, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """``k`` centres (k, D) of the rows of ``x`` (N, D) by Lloyd's k-means, seeded as
    k-means++ over 32 * ``k`` rows drawn at random (each next start a row drawn in
    proportion to its squared distance from the starts so far, so that the starts
    spread over the clusters; a sample, since each start reads every row it chooses
    from), then ``iters`` rounds of assigning each row to its nearest centre and moving
    each centre to its rows' mean; a centre that loses all its rows stays where it was.
    Random draws from ``seed``."""
    if not len(x):
        raise InputError("k-means needs at least one descriptor")
    x = x.float()
    g = torch.Generator().manual_seed(seed)
    sample = x[torch.randperm(len(x), generator=g)[:32 * k].to(x.device)]
    norms = sample.pow(2).sum(1)  # |x - c|^2 = |x|^2 - 2 x.c + |c|^2: products, fast on CPUs too
    picks = [int(torch.randint(len(sample), (1,), generator=g))]
    nearest = torch.full_like(norms, float("inf"))  # (n,) squared distance to the closest start
    for _ in range(k - 1):
        nearest = torch.minimum(nearest, (norms - 2 * sample @ sample[picks[-1]] + norms[picks[-1]]).clamp(min=0))
        # Rows all on the starts (fewer distinct rows than k): any row, repeated.
        weights = nearest.cpu() if nearest.sum() > 0 else torch.ones(len(sample))
        picks.append(int(torch.multinomial(weights, 1, generator=g)))
    centres = sample[picks].clone()
    for _ in range(iters):
        nearest_centre = (centres.pow(2).sum(1) - 2 * x @ centres.T).argmin(1)  # (N,)
        sums = torch.zeros_like(centres).index_add_(0, nearest_centre, x)
        counts = torch.bincount(nearest_centre, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
    return centres
