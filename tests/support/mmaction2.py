"""mmaction2's ResNet backbones as plain functions of a state dict in mmaction2's naming,
written from its source (mmaction/models/backbones/resnet.py, resnet_tsm.py and
resnet3d.py, mmcv's NonLocal3d) for the weight-loading tests: the tensors are made, at
random, the first time the forward asks for them, so one call both writes a
checkpoint as mmaction2 names it and computes what mmaction2 computes with it (BN in
eval mode, with its running statistics).

Layouts as mmaction2's configs give them: ``i3d_r50`` (5x7x7 first conv with temporal
stride 2, first max pool of temporal stride 2, a 2x1x1 max pool after stage 1,
``INFLATE_R50``) and the embedded-Gaussian NL-I3D (``NON_LOCAL_R50``, sub-sampled keys
and values, no scaling).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

R50 = (3, 4, 6, 3)
INFLATE_R50 = ((1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 1, 0))
NON_LOCAL_R50 = ((0, 0, 0), (0, 1, 0, 1), (0, 1, 0, 1, 0, 1), (0, 0, 0))


class Weights(dict):
    """A state dict (name -> tensor) whose tensors are drawn, seeded, at first use."""

    def __init__(self, seed: int):
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)

    def get_or_make(self, name: str, shape: tuple[int, ...], kind: str) -> torch.Tensor:
        if name not in self:
            r = torch.rand(shape, generator=self.gen)
            n = torch.randn(shape, generator=self.gen)
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            self[name] = {"conv": n * math.sqrt(2.0 / fan_in), "scale": 0.5 + r, "shift": 0.1 * n}[kind]
        return self[name]

    def checkpoint(self, num_classes: int = 400) -> dict:
        """As mmaction2 saves a recognizer: ``meta`` and ``state_dict``, the backbone's
        tensors under ``backbone.``, the classifier under ``cls_head.fc_cls``."""
        feat = next(v.shape[0] for k, v in reversed(self.items()) if k.endswith("conv3.conv.weight"))
        state = {f"backbone.{k}": v for k, v in self.items()}
        state["cls_head.fc_cls.weight"] = torch.randn(num_classes, feat, generator=self.gen) * 0.01
        state["cls_head.fc_cls.bias"] = torch.zeros(num_classes)
        return {"meta": {"mmaction_version": "1.2.0", "epoch": 100}, "state_dict": state}


def _bn(x: torch.Tensor, w: Weights, name: str, c: int) -> torch.Tensor:
    for stat in ("weight", "running_var"):
        w.get_or_make(f"{name}.{stat}", (c,), "scale")
    for stat in ("bias", "running_mean"):
        w.get_or_make(f"{name}.{stat}", (c,), "shift")
    w.setdefault(f"{name}.num_batches_tracked", torch.tensor(7))
    return F.batch_norm(x, w[f"{name}.running_mean"], w[f"{name}.running_var"], w[f"{name}.weight"],
                        w[f"{name}.bias"], training=False, eps=1e-5)


def conv_module(x: torch.Tensor, w: Weights, name: str, cout: int, kernel: tuple[int, ...], stride, *,
                relu: bool, conv: str = "conv") -> torch.Tensor:
    """mmcv's ConvModule: a conv without bias (``{name}.{conv}.weight``), BN
    (``{name}.bn``), ReLU when ``relu``; padding half the kernel."""
    weight = w.get_or_make(f"{name}.{conv}.weight", (cout, x.shape[1], *kernel), "conv")
    op = F.conv2d if len(kernel) == 2 else F.conv3d
    x = _bn(op(x, weight, stride=stride, padding=tuple(k // 2 for k in kernel)), w, f"{name}.bn", cout)
    return F.relu(x) if relu else x


def tsm_shift(x: torch.Tensor, segments: int, div: int = 8) -> torch.Tensor:
    """resnet_tsm's TemporalShift: (N*T, C, H, W); the first C/div channels from the next
    frame, the next C/div from the previous one, zeros at the clip's ends."""
    nt, c, h, wd = x.shape
    v = x.view(nt // segments, segments, c, h * wd)
    fold = c // div
    out = torch.zeros_like(v)
    out[:, :-1, :fold] = v[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = v[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = v[:, :, 2 * fold:]
    return out.view(nt, c, h, wd)


def resnet2d(x: torch.Tensor, w: Weights, *, base: int, blocks=R50, shift_segments: int = 0) -> torch.Tensor:
    """mmaction2's ResNet (TSN) or ResNetTSM (``shift_segments``: T, shift at each
    block's first conv, 'blockres') with Bottleneck blocks: (N*T, C, H, W) -> its last
    feature map."""
    x = conv_module(x, w, "conv1", base, (7, 7), 2, relu=True)
    x = F.max_pool2d(x, 3, 2, 1)
    for stage, count in enumerate(blocks, start=1):
        planes = base * 2 ** (stage - 1)
        for i in range(count):
            name, stride = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
            identity = x
            if i == 0 and (stride != 1 or x.shape[1] != planes * 4):
                identity = conv_module(x, w, f"{name}.downsample", planes * 4, (1, 1), stride, relu=False)
            y = tsm_shift(x, shift_segments) if shift_segments else x
            y = conv_module(y, w, f"{name}.conv1", planes, (1, 1), 1, relu=True,
                            conv="conv.net" if shift_segments else "conv")
            y = conv_module(y, w, f"{name}.conv2", planes, (3, 3), stride, relu=True)
            y = conv_module(y, w, f"{name}.conv3", planes * 4, (1, 1), 1, relu=False)
            x = F.relu(y + identity)
    return x


def non_local(x: torch.Tensor, w: Weights, name: str) -> torch.Tensor:
    """mmcv's NonLocal3d, embedded Gaussian, ``sub_sample=True``, ``use_scale=False``,
    a BN on its output: (N, C, T, H, W) -> the same shape."""
    n, c = x.shape[:2]
    inner = c // 2

    def project(key: str) -> torch.Tensor:
        weight = w.get_or_make(f"{name}.{key}.conv.weight", (inner, c, 1, 1, 1), "conv")
        bias = w.get_or_make(f"{name}.{key}.conv.bias", (inner,), "shift")
        return F.conv3d(x, weight, bias)

    theta = project("theta").view(n, inner, -1).permute(0, 2, 1)
    phi = F.max_pool3d(project("phi.0"), (1, 2, 2)).view(n, inner, -1)
    g = F.max_pool3d(project("g.0"), (1, 2, 2)).view(n, inner, -1).permute(0, 2, 1)
    y = (torch.softmax(theta @ phi, dim=-1) @ g).permute(0, 2, 1).reshape(n, inner, *x.shape[2:])
    out = F.conv3d(y, w.get_or_make(f"{name}.conv_out.conv.weight", (c, inner, 1, 1, 1), "conv"))
    return x + _bn(out, w, f"{name}.conv_out.bn", c)


def resnet3d(x: torch.Tensor, w: Weights, *, base: int, blocks=R50, inflate=INFLATE_R50,
             nonlocal_blocks=None) -> torch.Tensor:
    """mmaction2's ResNet3d as ``i3d_r50`` configures it ('3x1x1' inflation, Bottleneck3d),
    non-local blocks where ``nonlocal_blocks`` has a 1: (N, C, T, H, W) -> its last
    feature map."""
    x = conv_module(x, w, "conv1", base, (5, 7, 7), (2, 2, 2), relu=True)
    x = F.max_pool3d(x, (1, 3, 3), (2, 2, 2), (0, 1, 1))
    for stage, count in enumerate(blocks, start=1):
        planes = base * 2 ** (stage - 1)
        for i in range(count):
            name, s = f"layer{stage}.{i}", 2 if stage > 1 and i == 0 else 1
            identity = x
            if i == 0 and (s != 1 or x.shape[1] != planes * 4):
                identity = conv_module(x, w, f"{name}.downsample", planes * 4, (1, 1, 1), (1, s, s), relu=False)
            k1 = (3, 1, 1) if inflate[stage - 1][i] else (1, 1, 1)
            y = conv_module(x, w, f"{name}.conv1", planes, k1, 1, relu=True)
            y = conv_module(y, w, f"{name}.conv2", planes, (1, 3, 3), (1, s, s), relu=True)
            y = conv_module(y, w, f"{name}.conv3", planes * 4, (1, 1, 1), 1, relu=False)
            x = F.relu(y + identity)
            if nonlocal_blocks and nonlocal_blocks[stage - 1][i]:
                x = non_local(x, w, f"{name}.non_local_block")
        if stage == 1:
            x = F.max_pool3d(x, (2, 1, 1), (2, 1, 1))
    return x
