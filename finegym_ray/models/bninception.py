"""BN-Inception (Ioffe & Szegedy 2015: Inception with batch normalisation), the 2-D
backbone TSN and TRN were trained with, as their ImageNet weights lay it out.

Layers and names follow the Caffe network that TSN converted and distributes (and
mmaction's and mmaction2's ``bninception_caffe``, Cadene's ``bninception``): a stem (``conv1_7x7_s2``,
``conv2_3x3_reduce``, ``conv2_3x3``, each followed by a 3x3 max pool of stride 2) and ten
Inception blocks ``inception_3a`` ... ``inception_5b`` of four branches (1x1; 3x3 after
a 1x1 reduction; two 3x3 after a 1x1 reduction; a pool, projected by a 1x1 conv), whose
outputs are concatenated in that order. 3c and 4e halve the map: their 3x3 branches
take stride 2, their pool branch is a max pool of stride 2 without projection. Every
conv has a bias (Caffe's) and is followed by BN and ReLU. A 224x224 input ends as 7x7
maps of 1024 channels, averaged to the 1024-d feature.

Names here: each conv and its BN one module (``conv1_7x7_s2.conv``, ``.bn``), each
Inception block one module with its layers by their Caffe suffix
(``inception_3a.double_3x3_reduce.conv``); the distributed file's ``inception_3a_1x1``
and ``inception_3a_1x1_bn`` are this network's ``inception_3a.1x1.conv`` and
``inception_3a.1x1.bn`` (``train/weights.py`` translates them), so a file in either
naming says which input it was trained on.

Those weights were trained on Caffe's input (BGR pixels 0-255 less the mean 104, 117,
128; flow as TSN's 0-255 images less 128); ``from_caffe_input`` converts their first
conv to the input of this package. No I/O, no config objects: keyword arguments only.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

# Caffe's input: pixels 0-255 in B, G, R order, less these means.
CAFFE_MEAN_BGR = (104.0, 117.0, 128.0)
# TSN's flow input: each field clipped to +-CAFFE_FLOW_BOUND pixels, mapped to 0-255
# images, less CAFFE_FLOW_MEAN.
CAFFE_FLOW_BOUND = 20.0
CAFFE_FLOW_MEAN = 128.0

STEM = ("conv1_7x7_s2", "conv2_3x3_reduce", "conv2_3x3")
# name: (1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool, pool projection,
# stride); 0: no such branch (a stride-2 block passes its pooled input on as it is).
BLOCKS = {
    "3a": (64, 64, 64, 64, 96, "avg", 32, 1),
    "3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "3c": (0, 128, 160, 64, 96, "max", 0, 2),
    "4a": (224, 64, 96, 96, 128, "avg", 128, 1),
    "4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "4c": (160, 128, 160, 128, 160, "avg", 128, 1),
    "4d": (96, 128, 192, 160, 192, "avg", 128, 1),
    "4e": (0, 128, 192, 192, 256, "max", 0, 2),
    "5a": (352, 192, 320, 160, 224, "avg", 128, 1),
    "5b": (352, 192, 320, 192, 224, "max", 128, 1),
}


class ConvBN(nn.Module):
    """A conv (with bias) followed by BN and ReLU; padding half the kernel."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _halving_max_pool(x: torch.Tensor) -> torch.Tensor:
    """Caffe's 3x3 max pool of stride 2 (no padding, sizes rounded up), with one more
    window at the end of an odd side: Caffe's rounding matches its stride-2 convs'
    (rounded down, padded by 1) on even sides only, as 224x224 input has them; a -inf
    row and column appended change no window of an even side and give an odd side its
    last one, so that any input size concatenates."""
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2, ceil_mode=True)


def _caffe_max_pool(x: torch.Tensor) -> torch.Tensor:
    """The stem's 3x3 max pool of stride 2, sizes rounded up as Caffe's."""
    return F.max_pool2d(x, 3, 2, ceil_mode=True)


class Inception(nn.ModuleDict):
    """One Inception block: its layers by their Caffe suffix, the branches' outputs
    concatenated in Caffe's order (1x1, 3x3, double 3x3, pool)."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, cdr: int, cd: int, pool: str, cp: int, stride: int):
        layers = {"1x1": ConvBN(cin, c1, 1)} if c1 else {}
        layers |= {"3x3_reduce": ConvBN(cin, c3r, 1), "3x3": ConvBN(c3r, c3, 3, stride),
                   "double_3x3_reduce": ConvBN(cin, cdr, 1), "double_3x3_1": ConvBN(cdr, cd, 3),
                   "double_3x3_2": ConvBN(cd, cd, 3, stride)}
        if cp:
            layers["pool_proj"] = ConvBN(cin, cp, 1)
        super().__init__(layers)
        self.pool, self.stride = pool, stride
        self.out_channels = c1 + c3 + cd + (cp or cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = [self["1x1"](x)] if "1x1" in self else []
        out.append(self["3x3"](self["3x3_reduce"](x)))
        out.append(self["double_3x3_2"](self["double_3x3_1"](self["double_3x3_reduce"](x))))
        if self.stride == 2:
            pooled = _halving_max_pool(x)
        elif self.pool == "max":
            pooled = F.max_pool2d(x, 3, 1, 1)
        else:  # Caffe's average counts the zero padding
            pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)
        out.append(self["pool_proj"](pooled) if "pool_proj" in self else pooled)
        return torch.cat(out, 1)


class BNInception(nn.Module):
    """Feature extractor: (N, C, H, W) -> (N, 1024), C = ``in_channels`` (3 for RGB,
    2 x stacked flow pairs). Any input size; the weights were trained at 224x224."""

    FIRST_CONV: ClassVar[str] = "conv1_7x7_s2.conv.weight"
    NAMING: ClassVar[str] = "finegym-ray"  # the names of this module, as train/weights.py reports them

    def __init__(self, *, in_channels: int = 3):
        super().__init__()
        self.conv1_7x7_s2 = ConvBN(in_channels, 64, 7, 2)
        self.conv2_3x3_reduce = ConvBN(64, 64, 1)
        self.conv2_3x3 = ConvBN(64, 192, 3)
        cin = 192
        self.blocks = []
        for name, spec in BLOCKS.items():
            block = Inception(cin, *spec)
            self.add_module(f"inception_{name}", block)
            self.blocks.append(f"inception_{name}")
            cin = block.out_channels
        self.out_features = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _caffe_max_pool(self.conv1_7x7_s2(x))
        x = _caffe_max_pool(self.conv2_3x3(self.conv2_3x3_reduce(x)))
        for name in self.blocks:
            x = getattr(self, name)(x)
        return x.flatten(2).mean(-1)  # global average pool: (N, 1024)


def from_caffe_input(weight: torch.Tensor, bias: torch.Tensor, *, rgb_mean: tuple[float, ...],
                     rgb_std: tuple[float, ...], flow_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of a first conv trained on Caffe's input, converted so that it
    computes the same on this package's input: RGB in [0, 1] less ``rgb_mean``, over
    ``rgb_std``; flow in pixels / ``flow_scale``. A 3-channel conv takes RGB (its B, G, R
    channels put in R, G, B order), any other flow (TSN's, each channel alike). Exact
    away from the image border, where the zero padding of the two inputs stands for
    slightly different values (ImageNet's mean colour here, Caffe's there)."""
    if weight.shape[1] == 3:
        # Caffe's input y = 255 * (std * x + mean) - Caffe's mean, channel by channel.
        weight = weight.flip(1)
        scale = 255.0 * torch.tensor(rgb_std, dtype=weight.dtype)
        shift = 255.0 * torch.tensor(rgb_mean, dtype=weight.dtype) - torch.tensor(CAFFE_MEAN_BGR[::-1],
                                                                                 dtype=weight.dtype)
    else:
        # TSN's flow image y = 255 * (flow_scale * x + bound) / (2 * bound) - 128.
        channels = weight.shape[1]
        scale = torch.full((channels,), 255.0 * flow_scale / (2.0 * CAFFE_FLOW_BOUND), dtype=weight.dtype)
        shift = torch.full((channels,), 255.0 / 2.0 - CAFFE_FLOW_MEAN, dtype=weight.dtype)
    bias = bias + (weight * shift.view(1, -1, 1, 1)).sum((1, 2, 3))
    return weight * scale.view(1, -1, 1, 1), bias
