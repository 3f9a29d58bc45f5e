"""The training step without Ray, in the precision and memory layout the GPU path uses:
bf16 autocast (on the CPU here, the same code as on CUDA) and channels-last weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from finegym_ray.config import apply_overrides
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.loop import build_model, make_optimizer, train_step

SMALL = ["depth=10", "base_width=8", "segments=3", "crop=32", "test_short=32", "batch_size=4", "lr=0.01"]


@pytest.mark.parametrize("model,modality", [("tsn", "rgb"), ("trn", "flow"), ("trn_multiscale", "rgb"),
                                            ("tsm", "flow"), ("i3d", "rgb")])
def test_bf16_channels_last_step_learns(model, modality):
    config = apply_overrides(TrainConfig(model=model, modality=modality), SMALL)
    torch.manual_seed(0)
    net = build_model(config, num_classes=5)
    if not config.clip_model:  # what train_loop_per_worker does on a GPU
        net = net.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(net, config)
    x = torch.randint(0, 256, (4, config.segments, config.in_channels, *config.input_size), dtype=torch.uint8)
    batch = {"x": x, "flow_bound": torch.full((4,), 20.0)}
    y = torch.tensor([0, 1, 2, 3])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    losses = [train_step(net, batch, y, optimizer, nn.CrossEntropyLoss(), config, autocast)[1].item()
              for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]  # the same batch eight times: it must fit it better
    changed = [k for k, v in net.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed and all(v.dtype == torch.float32 for v in net.state_dict().values() if v.dtype.is_floating_point)
