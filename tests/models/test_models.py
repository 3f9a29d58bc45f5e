"""Contract tests over every model builder, and the ResNet's compatibility promises."""

from __future__ import annotations

import pytest
import torch

from finegym_ray.models import (
    BACKBONE_MODELS,
    CLIP_MODELS,
    MODELS,
    BNInception,
    ResNet,
    adapt_input_channels,
    inflate_state_dict,
    temporal_shift,
)
from finegym_ray.models.posec3d import HEATMAP_MODELS, LIMBS
from finegym_ray.models.stgcn import BONES, JOINTS, POSE_MODELS, spatial_partition

TINY = {"depth": 10, "base_width": 8}
# Every model over a tiny ResNet with either input, BN-Inception (full size, its only
# one: ten times the tiny ResNet's time) under each of the two heads, one input each,
# and ActionVLAD over a tiny VGG-16 with either input.
CASES = [(name, "resnet", c) for name in sorted(MODELS) if name != "actionvlad" for c in (3, 10)] + [
    ("tsn", "bninception", 3), ("trn_multiscale", "bninception", 10), ("actionvlad", "vgg16", 3),
    ("actionvlad", "vgg16", 10)]
KWARGS = {"resnet": TINY, "bninception": {"backbone": "bninception"}, "vgg16": {"base_width": 4, "clusters": 4}}


def _input(name: str, batch: int, segments: int, channels: int, size: int = 32) -> torch.Tensor:
    if name in CLIP_MODELS:
        return torch.randn(batch, channels, segments, size, size)  # (B, C, T, H, W)
    return torch.randn(batch, segments, channels, size, size)  # (B, T, C, H, W)


@pytest.mark.parametrize("name, backbone, channels", CASES,
                         ids=[f"{'rgb' if c == 3 else 'flow5'}-{n}" + ("" if b == "resnet" else f"-{b}")
                              for n, b, c in CASES])
def test_every_model_gives_scores_and_trains_every_parameter(name, backbone, channels):
    torch.manual_seed(0)
    model = MODELS[name](num_classes=7, num_segments=4, in_channels=channels, dropout=0.0, **KWARGS[backbone])
    x = _input(name, batch=2, segments=4, channels=channels)
    scores = model(x)
    assert scores.shape == (2, 7) and torch.isfinite(scores).all()
    with torch.no_grad():
        feats = model.eval().features(x)
        # One pooled vector per sample, the same for a sample alone as in a batch.
        assert feats.shape == (2, model.backbone.out_features) and torch.isfinite(feats).all()
        torch.testing.assert_close(model.features(x[1:]), feats[1:], atol=1e-5, rtol=1e-4)
    model.train()
    scores.logsumexp(1).sum().backward()
    # DDP needs this: it waits for a gradient of every parameter.
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    zero = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.abs().sum() > 0]
    # Non-local output BNs start at zero by design; their input convs get gradients later.
    assert all(".bn." in n or ".theta." in n or ".phi." in n or ".g." in n for n in zero), zero


@pytest.mark.parametrize("depth, params, keys", [(18, 11_689_512, 122), (50, 25_557_032, 320)])
def test_full_resnets_have_torchvision_sizes_and_names(depth, params, keys):
    # torchvision's resnet18/resnet50 (with the 1000-class fc): the same parameter
    # count and state-dict size, so their ImageNet weights load by name.
    model = ResNet(depth=depth)
    assert sum(p.numel() for p in model.parameters()) == params
    state = model.state_dict()
    assert len(state) == keys
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
            "layer4.1.bn2.num_batches_tracked", "fc.weight", "fc.bias"} <= set(state)


def test_bn_inception_has_tsns_layers_size_and_feature():
    # TSN's BN-Inception: 11,295,240 parameters with its 1000-class classifier (1024 x
    # 1000 + 1000), which the backbone leaves out; 7x7 maps of 1024 channels at 224x224.
    net = BNInception().eval()
    assert sum(p.numel() for p in net.parameters()) == 11_295_240 - 1_025_000
    assert net.conv1_7x7_s2.conv.weight.shape == (64, 3, 7, 7) and net.out_features == 1024
    assert [b.out_channels for b in map(net.get_submodule, net.blocks)] == [256, 320, 576, 576, 576, 608, 608, 1056,
                                                                            1024, 1024]
    seen = []
    net.inception_5b.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 1024)
        # Any size from 32 pixels: odd sides where 3c and 4e halve the map too.
        assert net(torch.zeros(1, 3, 32, 80)).shape == (1, 1024)
    assert seen[0] == (1, 1024, 7, 7) and seen[1] == (1, 1024, 1, 3)
    assert set(BACKBONE_MODELS) == {"tsn", "trn", "trn_multiscale"}


def test_inflated_weights_reproduce_the_2d_network_on_a_static_clip():
    torch.manual_seed(0)
    net2d, net3d = ResNet(**TINY).eval(), ResNet(dims=3, **TINY).eval()
    inflated = inflate_state_dict(net2d.state_dict(), net3d)
    assert set(inflated) == set(net3d.state_dict())  # every 3-D entry has a 2-D source
    net3d.load_state_dict(inflated)
    frame = torch.randn(1, 3, 32, 32)
    clip = frame.unsqueeze(2).repeat(1, 1, 9, 1, 1)  # (1, 3, T=9, 32, 32), static
    with torch.no_grad():
        a = net2d.bn1(net2d.conv1(frame))
        b = net3d.bn1(net3d.conv1(clip))[:, :, 2]  # time stride 2: frames 2-6, no padding reaches them
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_the_3d_resnet_50_is_laid_out_as_mmaction2s_i3d_r50():
    # So that mmaction2's Kinetics I3D and NL-I3D checkpoints fit it tensor for tensor
    # (tests/train/test_pretrained.py checks that they compute the same).
    from tests.support.mmaction2 import INFLATE_R50, NON_LOCAL_R50

    net = ResNet(depth=50, dims=3, base_width=4, nonlocal_stages=(2, 3))
    for stage, (inflate, non_local) in enumerate(zip(INFLATE_R50, NON_LOCAL_R50), start=1):
        blocks = list(getattr(net, f"layer{stage}"))
        assert [b.conv1.kernel_size for b in blocks] == [(3, 1, 1) if i else (1, 1, 1) for i in inflate]
        assert [b.non_local is not None for b in blocks] == [bool(n) for n in non_local]
    seen = []
    for stage in (net.layer1, net.layer2):
        stage.register_forward_hook(lambda m, i, o: seen.append(o.shape[2]))
    with torch.no_grad():
        net(torch.zeros(1, 3, 16, 32, 32))
    assert seen == [4, 2]  # time halved by conv1 and the first max pool, then by pool2 after stage 1


def test_flow_input_from_rgb_weights():
    rgb = ResNet(**TINY).state_dict()
    flow = ResNet(in_channels=10, **TINY)
    flow.load_state_dict(adapt_input_channels(rgb, 10))
    expected = rgb["conv1.weight"].mean(1, keepdim=True)
    assert torch.equal(flow.conv1.weight[:, 3:4], expected)


def test_temporal_shift_moves_a_fraction_of_channels_one_step():
    x = torch.arange(2 * 4 * 8, dtype=torch.float32).view(2 * 4, 8, 1, 1)  # N=2, T=4, C=8
    y = temporal_shift(x, segments=4, fraction=0.25).view(2, 4, 8)
    v = x.view(2, 4, 8)
    assert torch.equal(y[:, :-1, :2], v[:, 1:, :2]) and (y[:, -1, :2] == 0).all()  # from the next frame
    assert torch.equal(y[:, 1:, 2:4], v[:, :-1, 2:4]) and (y[:, 0, 2:4] == 0).all()  # from the previous
    assert torch.equal(y[:, :, 4:], v[:, :, 4:])


def test_tsm_differs_from_tsn_only_by_the_shift():
    torch.manual_seed(0)
    a = MODELS["tsn"](num_classes=5, num_segments=4, dropout=0.0, **TINY).eval()
    b = MODELS["tsm"](num_classes=5, num_segments=4, dropout=0.0, **TINY).eval()
    b.load_state_dict(a.state_dict())  # same parameters: the shift adds none
    x = _input("tsn", 1, 4, 3)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))  # the shift mixes frames
        for block in b.modules():
            if hasattr(block, "shift"):
                block.shift = None
        torch.testing.assert_close(a(x), b(x))


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=12)
    with pytest.raises(ValueError, match="temporal shift"):
        ResNet(dims=3, shift_segments=4)
    with pytest.raises(ValueError, match="non-local blocks apply to 3-D"):
        ResNet(dims=2, nonlocal_stages=(2,))
    with pytest.raises(ValueError, match="backbone must be one of resnet, bninception, got 'vgg'"):
        MODELS["tsn"](num_classes=3, backbone="vgg")


@pytest.fixture
def one_thread():
    # Skeletons this small gain nothing from threads, and on a busy machine OpenMP's
    # synchronisation made each step a hundred times slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _meets_the_contract(model, x: torch.Tensor, wrong: torch.Tensor, says: str, num_classes: int) -> None:
    """Scores for ``x``, features per sample, a gradient for every parameter, and
    ``wrong`` input refused with ``says``."""
    scores = model(x)
    assert scores.shape == (len(x), num_classes) and torch.isfinite(scores).all()
    with torch.no_grad():
        feats = model.eval().features(x)
        assert feats.shape == (len(x), model.out_features) and torch.isfinite(feats).all()
        torch.testing.assert_close(model.features(x[1:]), feats[1:], atol=1e-5, rtol=1e-4)
    model.train()
    scores.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    with pytest.raises(ValueError, match=says):
        model(wrong)


@pytest.mark.parametrize("name, channels, persons", [(n, c, m) for n in sorted(POSE_MODELS) for c, m in ((3, 1),
                                                                                                            (2, 2))])
def test_every_pose_model_gives_scores_and_trains_every_parameter(name, channels, persons, one_thread):
    torch.manual_seed(0)
    model = POSE_MODELS[name](num_classes=7, in_channels=channels, base_width=4, dropout=0.0)
    x = torch.randn(2, persons, 12, JOINTS, channels)  # (N, M, T, V, C)
    _meets_the_contract(model, x, torch.randn(1, 1, 12, 18, channels), "ST-GCN takes", 7)


@pytest.mark.parametrize("name, channels", [(n, c) for n in sorted(HEATMAP_MODELS) for c in (JOINTS, LIMBS)])
def test_every_heatmap_model_gives_scores_and_trains_every_parameter(name, channels, one_thread):
    torch.manual_seed(0)
    model = HEATMAP_MODELS[name](num_classes=5, in_channels=channels, base_width=4, blocks=(1, 1, 1), dropout=0.0)
    x = torch.rand(2, channels, 6, 24, 24)  # (N, K, T, H, W)
    _meets_the_contract(model, x, torch.rand(1, channels + 1, 6, 24, 24), "PoseC3D takes heatmap volumes", 5)


def test_the_skeleton_graph_partitions_each_joints_bones():
    a = spatial_partition()
    torch.testing.assert_close(a.sum(dim=(0, 2)), torch.ones(JOINTS))
    support = (a > 0).any(0)
    bones = {(i, j) for i, j in BONES} | {(j, i) for i, j in BONES} | {(i, i) for i in range(JOINTS)}
    assert {(int(i), int(j)) for i, j in support.nonzero()} == bones
    # A joint gathers from a nearer neighbour exactly where that one gathers from a farther.
    assert torch.equal(a[1] > 0, (a[2] > 0).T)
    with pytest.raises(ValueError, match="not connected"):
        spatial_partition(BONES[:-2])  # the face cut off from the shoulders


def test_the_heatmap_model_refuses_bad_arguments():
    with pytest.raises(ValueError, match="blocks must be three counts"):
        HEATMAP_MODELS["posec3d"](num_classes=3, blocks=(1, 1))
    with pytest.raises(ValueError, match="in_channels must be at least 1"):
        HEATMAP_MODELS["posec3d"](num_classes=3, in_channels=0)
