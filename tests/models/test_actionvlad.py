"""ActionVLAD: VGG-16 as torchvision names it, NetVLAD pooling's properties, k-means."""

from __future__ import annotations

import pytest
import torch

from finegym_ray.models import MODELS
from finegym_ray.models.actionvlad import LAYERS, VGG16, NetVLAD, kmeans
from finegym_ray.train import config as train_config


def test_vgg16_has_torchvisions_conv_layers_names_and_size():
    # torchvision's vgg16().features: 14,714,688 parameters, convs at these indices, so
    # that its ImageNet weights load by name; conv5_3 of a 224x224 frame is 14x14x512.
    net = VGG16()
    assert sum(p.numel() for p in net.parameters()) == 14_714_688
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    assert list(net.state_dict()) == [f"features.{i}.{w}" for i in convs for w in ("weight", "bias")]
    assert net.index == dict(zip(LAYERS, convs)) and train_config.VGG_LAYERS == LAYERS
    with torch.no_grad():
        assert VGG16(base_width=2)(torch.zeros(1, 3, 224, 224)).shape == (1, 16, 14, 14)


def test_freezing_before_conv5_1_leaves_conv5_training():
    model = MODELS["actionvlad"](num_classes=3, base_width=2, clusters=2, freeze_before="conv5_1")
    training = {n for n, p in model.named_parameters() if p.requires_grad}
    assert training == {f"backbone.features.{i}.{w}" for i in (24, 26, 28) for w in ("weight", "bias")} | {
        "vlad.centres", "vlad.assign.weight", "vlad.assign.bias", "head.weight", "head.bias"}
    with pytest.raises(ValueError, match="freeze_before must be one of conv1_1, .*conv5_3, got 'conv6_1'"):
        VGG16(base_width=2).freeze_before("conv6_1")


def test_vlad_vectors_are_normalised_and_ignore_the_order_of_frames():
    torch.manual_seed(0)
    model = MODELS["actionvlad"](num_classes=5, base_width=2, clusters=3, dropout=0.0).eval()
    x = torch.randn(2, 4, 3, 32, 32)  # (B, T, C, H, W)
    with torch.no_grad():
        v = model.vlad(model.descriptors(x))
        assert v.shape == (2, 3 * 16)
        torch.testing.assert_close(v.norm(dim=1), torch.ones(2))
        shuffled = x[:, torch.tensor([2, 0, 3, 1])]
        torch.testing.assert_close(model.vlad(model.descriptors(shuffled)), v, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(model(shuffled), model(x), atol=1e-5, rtol=1e-4)
        # Intra-normalisation: each cluster's part of the unnormalised vector has one length.
        parts = v.view(2, 3, 16).norm(dim=2)
        torch.testing.assert_close(parts, torch.full((2, 3), 3 ** -0.5))


def test_centres_set_the_soft_assignment_to_the_nearest_centre():
    vlad = NetVLAD(dim=2, clusters=2)
    vlad.set_centres(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.nn.functional.normalize(torch.tensor([[[0.9, 0.1], [0.2, 0.8]]]), dim=-1)  # (1, N=2, D=2)
    a = torch.softmax(vlad.assign(x), dim=-1)
    assert a[0, 0, 0] > 0.99 and a[0, 1, 1] > 0.99


def test_kmeans_finds_the_centres_of_made_up_clusters():
    g = torch.Generator().manual_seed(0)
    true = torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [-5.0, -5.0, 0.0]])
    x = (true.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 3, generator=g))[torch.randperm(200, generator=g)]
    found = kmeans(x, 4, iters=20, seed=1)
    # Each true centre has one found centre near it.
    distances = torch.cdist(true, found)
    assert (distances.min(1).values < 0.1).all() and len(set(distances.argmin(1).tolist())) == 4
    # Fewer rows than centres: rows repeated, no centre undefined.
    assert torch.isfinite(kmeans(x[:2], 4)).all()
    with pytest.raises(ValueError, match="k-means needs at least one descriptor"):
        kmeans(x[:0], 4)
