"""ActionVLAD's training, without Ray: the paper's two steps at the level of the training
step, its centres by k-means, VGG-16 weights in torchvision's names, and its settings."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
import torch

from finegym_ray.models.actionvlad import ALPHA, VGG16, kmeans
from finegym_ray.train import steps
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.loop import check_pretrained, model_for

# Tiny: a VGG-16 at 1/32 of its width, 4 centres, 3 frames of 32x32.
TINY = TrainConfig(model="actionvlad", base_width=2, vlad_clusters=4, segments=3, dropout=0.0,
                   freeze_backbone_before="conv5_1", freeze_vlad_epochs=2)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_centres_are_held_for_the_first_epochs_then_train_with_conv5():
    torch.manual_seed(0)
    model = model_for(TINY, num_classes=5)
    optimizer = steps.make_optimizer(model.parameters(), name="sgd", lr=0.5, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(4, 3, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    criterion = torch.nn.CrossEntropyLoss()

    def epoch(index: int) -> set[str]:
        """The parameters that two steps of epoch ``index`` moved."""
        before = _snapshot(model)
        hold = steps.held_parameters(model, epoch=index, head_only_epochs=TINY.freeze_vlad_epochs)
        for _ in range(2):
            steps.train_step(model, x, y, optimizer, criterion, grad_clip=20.0, autocast=contextlib.nullcontext(),
                             hold=hold)
        return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}

    head = {"head.weight", "head.bias"}
    assert epoch(0) == head and epoch(1) == head  # the first step: a classifier over fixed centres
    conv5 = {f"backbone.features.{i}.{w}" for i in (24, 26, 28) for w in ("weight", "bias")}
    assert epoch(2) == head | conv5 | {"vlad.centres", "vlad.assign.weight", "vlad.assign.bias"}  # then jointly
    assert steps.held_parameters(model, epoch=0, head_only_epochs=0) == []


def test_kmeans_sets_the_centres_and_the_assignment_that_goes_with_them():
    torch.manual_seed(0)
    model = model_for(TINY, num_classes=5)
    x = torch.randn(2, 3, 3, 32, 32)
    descriptors = steps.vlad_descriptors(model, x, autocast=contextlib.nullcontext())
    assert descriptors.shape == (2 * 3 * 2 * 2, 16)  # clips x frames x 2x2 positions, 16 channels
    torch.testing.assert_close(descriptors.norm(dim=1), torch.ones(len(descriptors)))
    steps.init_vlad_centres(model, descriptors, limit=20, seed=1)
    pick = torch.randperm(len(descriptors), generator=torch.Generator().manual_seed(1))[:20]
    centres = kmeans(descriptors[pick], 4, seed=1)
    assert torch.equal(model.vlad.centres.detach(), centres)
    torch.testing.assert_close(model.vlad.assign.weight.detach(), 2 * ALPHA * centres)


def test_vgg16_weights_in_torchvisions_names_load_with_a_report(tmp_path):
    torch.manual_seed(1)
    source = VGG16(base_width=2)
    state = {**source.state_dict(), "classifier.6.weight": torch.zeros(1000, 4096),
             "classifier.6.bias": torch.zeros(1000)}  # torchvision's ImageNet head: left out
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    config = replace(TINY, pretrained=str(path))
    lines = []
    record = check_pretrained(config, 5, say=lines.append)
    assert (record["naming"], record["loaded"], record["needed"], record["left_out"]) == ("torchvision", 26, 26, 2)
    assert "left out on purpose (outside the backbone: the classifier and the like): 2 (classifier.6.bias, " \
           "classifier.6.weight)" in lines[0]
    model = model_for(config, 5)
    frames = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(frames), source(frames))
    # Flow: the first conv averaged over RGB and repeated, as for the other backbones.
    flow = model_for(replace(config, modality="flow", frames_per_segment=5), 5)
    torch.testing.assert_close(flow.backbone.features[0].weight[:, 7], state["features.0.weight"].mean(1))


def test_actionvlad_settings_are_checked():
    assert TINY.model_kwargs(5) == {"num_classes": 5, "in_channels": 3, "base_width": 2, "dropout": 0.0,
                                    "num_segments": 3, "clusters": 4, "freeze_before": "conv5_1"}
    with pytest.raises(ValueError, match="freeze_vlad_epochs and freeze_backbone_before apply to model=actionvlad, "
                                         "not tsm"):
        TrainConfig(freeze_vlad_epochs=20)
    with pytest.raises(ValueError, match="freeze_backbone_before must be empty or one of conv1_1, .*got 'conv6'"):
        replace(TINY, freeze_backbone_before="conv6")
    with pytest.raises(ValueError, match="vlad_centres must be one of kmeans, random, got 'zeros'"):
        replace(TINY, vlad_centres="zeros")
    with pytest.raises(ValueError, match=r"actionvlad's backbone is VGG-16, which base_width alone shrinks: leave "
                                         r"backbone, depth and blocks out \(got backbone resnet, depth 18"):
        replace(TINY, depth=18)
    # The second step's rate: an epoch listed twice divides it by 100 there.
    paper = replace(TINY, lr=0.01, epochs=100, lr_schedule="step", lr_steps=[20, 20])
    assert [steps.lr_factor(e, epochs=100, warmup_epochs=0, lr_schedule="step", lr_steps=tuple(paper.lr_steps))
            for e in (19, 20)] == [1.0, pytest.approx(0.01)]

