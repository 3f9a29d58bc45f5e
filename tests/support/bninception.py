"""BN-Inception as TSN distributes its ImageNet weights (Caffe's network, converted with
Caffe's layer names), as a plain function of a state dict in those names, written from
the network's definition (TSN's bn_inception prototxt) for the weight-loading tests:
the tensors are made, at random, the first time the forward asks for them
(``Weights``), so one call both writes a file as TSN names it and computes what TSN
computes with it (BN in eval mode, with its running statistics; the file has
no BN counters, as converted Caffe weights have none).

Input as TSN feeds it: RGB as BGR pixels 0-255 less ``MEAN_BGR``; flow as 0-255 images
(bound 20) less 128, the first conv's RGB kernel averaged over its channels and
repeated for the flow channels (TSN's cross-modality initialisation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tests.support import mmaction2

MEAN_BGR = (104.0, 117.0, 128.0)
FLOW_MEAN = 128.0
# inception_*: 1x1, 3x3_reduce, 3x3, double_3x3_reduce, double_3x3_1 and _2, pool_proj;
# pool: "ave" (3x3, stride 1, padding counted), "max" (3x3, stride 1) or "max_s2" (3c and
# 4e: the 3x3 and second double 3x3 convs of stride 2, the pool output concatenated
# without projection).
INCEPTION = (
    ("3a", 64, 64, 64, 64, 96, "ave", 32),
    ("3b", 64, 64, 96, 64, 96, "ave", 64),
    ("3c", 0, 128, 160, 64, 96, "max_s2", 0),
    ("4a", 224, 64, 96, 96, 128, "ave", 128),
    ("4b", 192, 96, 128, 96, 128, "ave", 128),
    ("4c", 160, 128, 160, 128, 160, "ave", 128),
    ("4d", 96, 128, 192, 160, 192, "ave", 128),
    ("4e", 0, 128, 192, 192, 256, "max_s2", 0),
    ("5a", 352, 192, 320, 160, 224, "ave", 128),
    ("5b", 352, 192, 320, 192, 224, "max", 128),
)


class Weights(mmaction2.Weights):
    """mmaction2.Weights that draws only the kind of tensor asked for: BN-Inception's 10
    million parameters in a tenth of a second."""

    def get_or_make(self, name: str, shape: tuple[int, ...], kind: str) -> torch.Tensor:
        if name not in self:
            if kind == "scale":
                self[name] = 0.5 + torch.rand(shape, generator=self.gen)
            else:
                fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
                std = math.sqrt(2.0 / fan_in) if kind == "conv" else 0.1
                self[name] = torch.randn(shape, generator=self.gen) * std
        return self[name]


def conv_bn_relu(x: torch.Tensor, w: Weights, name: str, cout: int, kernel: int, stride: int = 1, *,
                 cin: int | None = None, padding: int | None = None) -> torch.Tensor:
    """Caffe's conv ``name`` (with bias), its BN ``name_bn`` and ReLU. ``cin``: the
    kernel's input channels where they differ from x's (the first conv of a flow
    network, made for RGB)."""
    weight = w.get_or_make(f"{name}.weight", (cout, cin or x.shape[1], kernel, kernel), "conv")
    if cin and cin != x.shape[1]:
        weight = weight.mean(1, keepdim=True).repeat(1, x.shape[1], 1, 1)
    bias = w.get_or_make(f"{name}.bias", (cout,), "shift")
    x = F.conv2d(x, weight, bias, stride, kernel // 2 if padding is None else padding)
    for stat in ("weight", "running_var"):
        w.get_or_make(f"{name}_bn.{stat}", (cout,), "scale")
    for stat in ("bias", "running_mean"):
        w.get_or_make(f"{name}_bn.{stat}", (cout,), "shift")
    x = F.batch_norm(x, w[f"{name}_bn.running_mean"], w[f"{name}_bn.running_var"], w[f"{name}_bn.weight"],
                     w[f"{name}_bn.bias"], training=False, eps=1e-5)
    return F.relu(x)


def bn_inception(x: torch.Tensor, w: Weights, *, pad_value: torch.Tensor | None = None) -> torch.Tensor:
    """(N, C, H, W) in TSN's input -> the last feature map (N, 1024, H/32, W/32), for
    sides that Caffe's layers halve evenly (multiples of 32). ``pad_value``: per input
    channel, what the first conv pads the image with (Caffe: zeros)."""
    if pad_value is not None:
        v = pad_value.view(1, -1, 1, 1)
        x = F.pad(x - v, (3, 3, 3, 3)) + v
    x = conv_bn_relu(x, w, "conv1_7x7_s2", 64, 7, 2, cin=3, padding=0 if pad_value is not None else None)
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    x = conv_bn_relu(x, w, "conv2_3x3_reduce", 64, 1)
    x = conv_bn_relu(x, w, "conv2_3x3", 192, 3)
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    for block, c1, c3r, c3, cdr, cd, pool, cp in INCEPTION:
        name = f"inception_{block}"
        stride = 2 if pool == "max_s2" else 1
        out = [conv_bn_relu(x, w, f"{name}_1x1", c1, 1)] if c1 else []
        out.append(conv_bn_relu(conv_bn_relu(x, w, f"{name}_3x3_reduce", c3r, 1), w, f"{name}_3x3", c3, 3, stride))
        y = conv_bn_relu(x, w, f"{name}_double_3x3_reduce", cdr, 1)
        y = conv_bn_relu(y, w, f"{name}_double_3x3_1", cd, 3)
        out.append(conv_bn_relu(y, w, f"{name}_double_3x3_2", cd, 3, stride))
        if pool == "max_s2":
            out.append(F.max_pool2d(x, 3, 2, ceil_mode=True))
        else:
            pooled = F.max_pool2d(x, 3, 1, 1) if pool == "max" else F.avg_pool2d(x, 3, 1, 1, count_include_pad=True)
            out.append(conv_bn_relu(pooled, w, f"{name}_pool_proj", cp, 1))
        x = torch.cat(out, 1)
    return x


def imagenet_file(w: Weights, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    """As TSN distributes the ImageNet network: a plain state dict, its classifier ``fc``."""
    state = dict(w)
    state["fc.weight"] = torch.randn(num_classes, 1024, generator=w.gen) * 0.01
    state["fc.bias"] = torch.zeros(num_classes)
    return state
