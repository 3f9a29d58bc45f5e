"""2-D and inflated 3-D ResNets, written here, with torchvision's parameter names.

The names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``, ...)
match torchvision's ``resnet18``/``resnet50`` so that ImageNet weights saved from
torchvision load with ``load_state_dict`` (2-D), or through ``inflate_state_dict``
(3-D, I3D-style: each 2-D kernel repeated over time and divided by its length).

The 3-D network is laid out as mmaction2's I3D-R50 (``i3d_r50``), so that its Kinetics
checkpoints fit tensor for tensor and compute here what they compute there
(``train/weights.py`` translates the names): a 5x7x7 first conv and the max pool after
it each halve time, a 2x1x1 max pool after stage 1 halves it again, and a block's
first conv is 3x1x1 in every block of stage 1, the even-numbered blocks of the middle
stages and the odd-numbered blocks of the last stage (stage 4's (0, 1, 0) in
mmaction2's ``inflate`` tuples).

Optional parts, each a keyword argument:
- ``shift_segments`` / ``shift_fraction`` (2-D): the temporal shift of TSM, applied to
  the input of each residual branch (the identity path is not shifted).
- ``nonlocal_stages`` (3-D): embedded-Gaussian non-local blocks at the end of every
  odd-numbered block of the named stages (NL-I3D: res3b, res3d, res4b, res4d, res4f),
  each block's ``non_local``, so that the blocks keep torchvision's numbering.
- ``base_width`` and ``blocks``: smaller networks for CPU tests and the demo.

No I/O, no config objects: typed keyword arguments only.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ..errors import InputError

DEPTHS = {  # depth -> (block kind, blocks per stage)
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def temporal_shift(x: torch.Tensor, segments: int, fraction: float) -> torch.Tensor:
    """TSM's shift: x is (N*T, C, H, W) with ``segments`` = T; a ``fraction`` of the
    channels takes each frame's values from the next frame, as many from the previous
    one, the rest stay; zeros fill in at the clip's ends."""
    nt, c, h, w = x.shape
    x = x.view(nt // segments, segments, c, h, w)  # (N, T, C, H, W)
    fold = int(c * fraction)
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # from the future
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]  # from the past
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return out.view(nt, c, h, w)


def _conv(dims: int, cin: int, cout: int, kernel: int, stride: int = 1, t_kernel: int = 1,
          t_stride: int = 1) -> nn.Module:
    if dims == 2:
        return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False)
    return nn.Conv3d(cin, cout, (t_kernel, kernel, kernel), (t_stride, stride, stride),
                     padding=(t_kernel // 2, kernel // 2, kernel // 2), bias=False)


def _bn(dims: int, c: int) -> nn.Module:
    return nn.BatchNorm2d(c) if dims == 2 else nn.BatchNorm3d(c)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, dims: int, cin: int, width: int, stride: int, t_kernel: int, shift: tuple[int, float] | None,
                 non_local: bool = False):
        super().__init__()
        self.shift = shift
        self.conv1 = _conv(dims, cin, width, 3, stride, t_kernel)
        self.bn1 = _bn(dims, width)
        self.conv2 = _conv(dims, width, width, 3)
        self.bn2 = _bn(dims, width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(dims, cin, width, stride)
        self.non_local = NonLocal(width) if non_local else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = temporal_shift(x, *self.shift) if self.shift else x
        y = self.relu(self.bn1(self.conv1(y)))
        y = self.bn2(self.conv2(y))
        y = self.relu(y + identity)
        return self.non_local(y) if self.non_local is not None else y


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, dims: int, cin: int, width: int, stride: int, t_kernel: int, shift: tuple[int, float] | None,
                 non_local: bool = False):
        super().__init__()
        self.shift = shift
        # Temporal kernel on the first 1x1 conv, stride on the 3x3 (torchvision's v1.5).
        self.conv1 = _conv(dims, cin, width, 1, 1, t_kernel)
        self.bn1 = _bn(dims, width)
        self.conv2 = _conv(dims, width, width, 3, stride)
        self.bn2 = _bn(dims, width)
        self.conv3 = _conv(dims, width, width * 4, 1)
        self.bn3 = _bn(dims, width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(dims, cin, width * 4, stride)
        self.non_local = NonLocal(width * 4) if non_local else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = temporal_shift(x, *self.shift) if self.shift else x
        y = self.relu(self.bn1(self.conv1(y)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        y = self.relu(y + identity)
        return self.non_local(y) if self.non_local is not None else y


def _downsample(dims: int, cin: int, cout: int, stride: int) -> nn.Module | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(_conv(dims, cin, cout, 1, stride), _bn(dims, cout))


class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block over (T, H, W) with a zero-initialised output
    BN, so that inserting it leaves a pretrained network's function unchanged. Keys and
    values come from a 2x2 max-pooled grid (a quarter of the positions), queries from
    every position, without scaling the dot products: mmaction2's NL-I3D
    (``sub_sample=True``, ``use_scale=False``)."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta = nn.Conv3d(channels, inner, 1)
        self.phi = nn.Conv3d(channels, inner, 1)
        self.g = nn.Conv3d(channels, inner, 1)
        self.out = nn.Conv3d(inner, channels, 1, bias=False)
        self.bn = nn.BatchNorm3d(channels)
        self.pool = nn.MaxPool3d((1, 2, 2))
        nn.init.zeros_(self.bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, h, w = x.shape
        # A 1-pixel map (tiny test inputs) has nothing to pool.
        pool = self.pool if min(h, w) >= 2 else nn.Identity()
        q = self.theta(x).flatten(2).transpose(1, 2)  # (N, THW, C')
        k = pool(self.phi(x)).flatten(2)  # (N, C', THW/4)
        v = pool(self.g(x)).flatten(2).transpose(1, 2)  # (N, THW/4, C')
        attn = torch.softmax(q @ k, dim=-1)  # (N, THW, THW/4)
        y = (attn @ v).transpose(1, 2).reshape(n, -1, t, h, w)  # (N, C', T, H, W)
        return x + self.bn(self.out(y))


def _inflated(stage: int, index: int, stages: int) -> bool:
    """Whether block ``index`` of ``stage`` (both from 1 and 0) has a 3x1x1 first conv
    in the 3-D network: mmaction2's I3D-R50 pattern, ((1, 1, 1), (1, 0, 1, 0),
    (1, 0, 1, 0, 1, 0), (0, 1, 0)), extended to any block count by the same rule."""
    if stage == 1:
        return True
    if stage == stages:
        return index % 2 == 1
    return index % 2 == 0


class ResNet(nn.Module):
    """Feature extractor: (N, C, H, W) -> (N, F) for 2-D, (N, C, T, H, W) -> (N, F) for
    3-D, F = ``out_features``. ``fc`` exists only for loading ImageNet weights by name."""

    FIRST_CONV: ClassVar[str] = "conv1.weight"
    NAMING: ClassVar[str] = "torchvision"  # the names of this module, as train/weights.py reports them

    def __init__(self, *, depth: int = 50, dims: int = 2, in_channels: int = 3, base_width: int = 64,
                 blocks: tuple[int, ...] | None = None, shift_segments: int = 0, shift_fraction: float = 0.125,
                 nonlocal_stages: tuple[int, ...] = ()):
        super().__init__()
        if depth not in DEPTHS:
            raise InputError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
        if shift_segments and dims != 2:
            raise InputError("the temporal shift applies to 2-D ResNets")
        if nonlocal_stages and dims != 3:
            raise InputError("non-local blocks apply to 3-D ResNets")
        kind, default_blocks = DEPTHS[depth]
        blocks = tuple(blocks or default_blocks)
        block = BasicBlock if kind == "basic" else Bottleneck
        shift = (shift_segments, shift_fraction) if shift_segments else None
        self.dims = dims
        # 3-D: time halved by the first conv, by the max pool after it and by pool2.
        self.conv1 = _conv(dims, in_channels, base_width, 7, 2, t_kernel=5 if dims == 3 else 1,
                           t_stride=2 if dims == 3 else 1)
        self.bn1 = _bn(dims, base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if dims == 2 else nn.MaxPool3d((1, 3, 3), (2, 2, 2), (0, 1, 1))
        self.pool2 = nn.MaxPool3d((2, 1, 1), (2, 1, 1)) if dims == 3 else None
        cin = base_width
        for stage, count in enumerate(blocks, start=1):
            width = base_width * 2 ** (stage - 1)
            layers: list[nn.Module] = []
            for i in range(count):
                t_kernel = 3 if dims == 3 and _inflated(stage, i, len(blocks)) else 1
                layers.append(block(dims, cin, width, 2 if (i == 0 and stage > 1) else 1, t_kernel, shift,
                                    non_local=stage in nonlocal_stages and i % 2 == 1))
                cin = width * block.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.num_stages = len(blocks)
        self.out_features = cin
        self.fc = nn.Linear(cin, 1000)  # ImageNet head: kept for weight loading, unused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{stage}")(x)
            # A clip already down to one step (fewer than 5 frames in) has no pair to pool.
            if stage == 1 and self.pool2 is not None and x.shape[2] >= 2:
                x = self.pool2(x)
        return x.flatten(2).mean(-1)  # global average pool: (N, F)


def inflate_state_dict(state_2d: dict[str, torch.Tensor], model_3d: nn.Module) -> dict[str, torch.Tensor]:
    """``state_2d`` with each 2-D conv kernel that ``model_3d`` holds as a 3-D kernel of
    the same (out, in, kh, kw) repeated over that kernel's time length and divided by
    it, so that a static clip gives the 2-D network's activations away from the clip's
    ends. Every other entry is passed on as it is: the loader (``train/weights.py``)
    reports what fits."""
    target = model_3d.state_dict()
    out = {}
    for name, value in state_2d.items():
        want = target.get(name)
        if want is not None and value.dim() == 4 and want.dim() == 5 and want.shape[:2] + want.shape[3:] == value.shape:
            t = want.shape[2]
            value = value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
        out[name] = value
    return out


def adapt_input_channels(state: dict[str, torch.Tensor], in_channels: int,
                         first_conv: str = ResNet.FIRST_CONV) -> dict[str, torch.Tensor]:
    """RGB-pretrained weights for a flow network (TSN's cross-modality initialisation):
    the first conv's kernel (``first_conv``) averaged over its 3 input channels and
    repeated ``in_channels`` times."""
    state = dict(state)
    w = state[first_conv]  # (64, 3, kh, kw) or (64, 3, kt, kh, kw)
    shape = [1] * w.dim()
    shape[1] = in_channels
    state[first_conv] = w.mean(dim=1, keepdim=True).repeat(*shape)
    return state
