"""The torch step library (train/steps.py; tests/test_layers.py checks that it imports
no Ray), in the precision and memory layout the GPU path uses: bf16 autocast (on the
CPU here, the same code as on CUDA) and channels-last weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from finegym_ray.config import apply_overrides
from finegym_ray.train import steps
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.loop import model_for

SMALL = ["depth=10", "base_width=8", "segments=3", "crop=32", "test_short=32", "batch_size=4", "lr=0.01"]


@pytest.mark.parametrize("model,modality", [("tsn", "rgb"), ("trn", "flow"), ("trn_multiscale", "rgb"),
                                            ("tsm", "flow"), ("i3d", "rgb")])
def test_bf16_channels_last_step_learns(model, modality):
    config = apply_overrides(TrainConfig(model=model, modality=modality), SMALL)
    torch.manual_seed(0)
    net = model_for(config, num_classes=5)
    # What train_loop_per_worker does on a GPU for 2-D models. Clip models take
    # channels_last_3d there, but CPU bf16 Conv3d in that layout gave non-finite weight
    # gradients in about 1 of 20 tries here (torch 2.13): benchmarks/gpu_check.py checks it on a GPU.
    if not config.clip_model:
        net = net.to(memory_format=torch.channels_last)
    optimizer = steps.make_optimizer(net.parameters(), name=config.optimizer, lr=config.lr,
                                     momentum=config.momentum, weight_decay=config.weight_decay)
    raw = torch.randint(0, 256, (4, config.segments, config.in_channels, *config.input_size), dtype=torch.uint8)
    x = steps.model_input(raw, torch.full((4,), 20.0), modality=modality, clip_model=config.clip_model)
    y = torch.tensor([0, 1, 2, 3])
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    before = {k: v.detach().clone() for k, v in net.state_dict().items()}
    tally = steps.Tally(5, torch.device("cpu"))
    losses = []
    for _ in range(8):
        scores, loss = steps.train_step(net, x, y, optimizer, nn.CrossEntropyLoss(), grad_clip=20.0,
                                        autocast=autocast)
        tally.add(scores, y, loss)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]  # the same batch eight times: it must fit it better
    changed = [k for k, v in net.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed and all(v.dtype == torch.float32 for v in net.state_dict().values() if v.dtype.is_floating_point)
    m = tally.metrics("train")
    assert m["train_samples"] == 32 and m["train_loss"] == pytest.approx(sum(losses) / 8)


def test_model_input_scales_rgb_and_dequantizes_flow():
    rgb = torch.full((1, 2, 3, 4, 4), 255, dtype=torch.uint8)  # (B, T, C, H, W)
    x = steps.model_input(rgb, torch.zeros(1), modality="rgb", clip_model=True)
    assert x.shape == (1, 3, 2, 4, 4)  # clip models get (B, C, T, H, W)
    torch.testing.assert_close(x[0, :, 0, 0, 0], torch.tensor([(1 - m) / s for m, s in
                                                               zip(steps.IMAGENET_MEAN, steps.IMAGENET_STD)]))
    flow = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 2, 1, 1)
    x = steps.model_input(flow, torch.tensor([10.0]), modality="flow", clip_model=False)
    # 0 and 255 are -bound and +bound pixels, in units of FLOW_SCALE_PX
    torch.testing.assert_close(x.flatten(), torch.tensor([-10.0, 10.0]) / steps.FLOW_SCALE_PX)


def test_schedule_warms_up_then_decays_to_zero():
    f = [steps.lr_factor(e, epochs=10, warmup_epochs=2) for e in range(11)]
    assert f[0] < f[1] < f[2] == 1.0 and f[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(f[2:], f[3:]))


def test_step_schedule_divides_by_10_after_each_step_as_the_paper_trains():
    # TSN RGB in the paper: 80 epochs, lr divided by 10 every 30.
    f = [steps.lr_factor(e, epochs=80, warmup_epochs=0, lr_schedule="step", lr_steps=(30, 60)) for e in range(80)]
    assert f[:30] == [1.0] * 30 and f[30:60] == pytest.approx([0.1] * 30) and f[60:] == pytest.approx([0.01] * 20)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.001)
    scheduler = steps.make_scheduler(optimizer, epochs=80, warmup_epochs=0, lr_schedule="step", lr_steps=(30, 60))
    lrs = []
    for _ in range(80):  # as the engine steps it: once after each epoch
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[29] == pytest.approx(0.001) and lrs[30] == pytest.approx(0.0001) and lrs[60] == pytest.approx(1e-5)
    f = [steps.lr_factor(e, epochs=10, warmup_epochs=2, lr_schedule="step", lr_steps=(5,)) for e in range(10)]
    assert f[:3] == [1 / 3, 2 / 3, 1.0] and f[4] == 1.0 and f[5] == pytest.approx(0.1)  # after a warm-up


def test_tally_counts_a_confusion_and_mean_loss():
    tally = steps.Tally(3, torch.device("cpu"))
    scores = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 0, 2.0]])
    tally.add(scores, torch.tensor([0, 1, 2, 2]), torch.tensor(1.0))
    tally.add(scores[:1], torch.tensor([1]), torch.tensor(3.0))
    m = tally.metrics("val")
    assert m["val_samples"] == 5 and m["val_loss"] == pytest.approx((4 * 1 + 3) / 5)
    assert m["val_top1"] == pytest.approx(3 / 5)
    assert m["val_mean_class"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
