"""--pretrained: ImageNet ResNets in torchvision's names, Kinetics checkpoints in
mmaction2's and ImageNet BN-Inception in Caffe's (TSN's), from a file or S3, into any
model: each computes here what it computes at its source, a load that would leave part
of the backbone untrained is refused, and the run records the file's SHA-256."""

import hashlib
from dataclasses import replace

import pytest
import torch

from finegym_ray import storage
from finegym_ray.models.resnet import ResNet
from finegym_ray.train import steps
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.loop import model_for
from tests.support import bninception, mmaction2

SMALL = TrainConfig(depth=18, base_width=16, segments=2)
# A ResNet-50's blocks at 1/16 of the width: mmaction2's layouts, in milliseconds.
TINY_R50 = replace(SMALL, depth=50, base_width=4)
BN_INCEPTION = replace(SMALL, model="tsn", backbone="bninception", depth=50, base_width=64)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(3)
    state = ResNet(depth=18, base_width=16).state_dict()  # torchvision's names, fc included
    path = tmp_path_factory.mktemp("w") / "resnet18.pth"
    torch.save(state, path)
    return str(path), state


def test_2d_models_take_the_weights_as_they_are(weights):
    path, state = weights
    model = model_for(replace(SMALL, model="tsn", pretrained=path), num_classes=5)
    assert torch.equal(model.backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    assert torch.equal(model.backbone.bn1.running_mean, state["bn1.running_mean"])


def test_flow_input_averages_and_repeats_the_first_conv(weights):
    path, state = weights
    model = model_for(replace(SMALL, model="tsm", modality="flow", frames_per_segment=5, pretrained=path), 5)
    w = model.backbone.conv1.weight  # (16, 10, 7, 7)
    assert w.shape[1] == 10
    torch.testing.assert_close(w[:, 4], state["conv1.weight"].mean(1))
    assert torch.equal(model.backbone.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_i3d_inflates_2d_kernels(weights):
    path, state = weights
    model = model_for(replace(SMALL, model="i3d", segments=8, pretrained=path), 5)
    w = model.backbone.conv1.weight  # (16, 3, 5, 7, 7): repeated over time, divided by 5
    assert w.shape[2] == 5
    torch.testing.assert_close(w.sum(2), state["conv1.weight"])


def test_weights_from_s3(weights, s3_prefix):
    path, state = weights
    uri = storage.join(s3_prefix, "resnet18.pth")
    storage.upload_file(path, uri)
    model = model_for(replace(SMALL, model="tsn", pretrained=uri), 5)
    assert torch.equal(model.backbone.layer4[0].conv1.weight, state["layer4.0.conv1.weight"])


def test_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="no tensor fits"):
        model_for(replace(SMALL, model="tsn", pretrained=str(path)), 5)


@pytest.mark.parametrize("model", ["i3d", "nl_i3d"])
def test_imagenet_weights_inflated_give_the_2d_network_on_a_static_clip(tmp_path, model):
    # I3D's promise: a clip of one repeated frame gives, away from the clip's ends, the
    # 2-D network's features of that frame; new non-local blocks (output BN at zero)
    # change nothing. Three blocks in stage 2 put a non-local block between two blocks.
    torch.manual_seed(0)
    blocks = [1, 3, 1, 1]
    net2d = ResNet(depth=18, base_width=8, blocks=tuple(blocks)).eval()
    for m in net2d.modules():  # BN statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "imagenet.pth"
    torch.save(net2d.state_dict(), path)
    config = replace(SMALL, model=model, depth=18, base_width=8, blocks=blocks, segments=128, pretrained=str(path))
    net3d = model_for(config, 5).backbone.eval()
    frame = torch.randn(1, 3, 32, 32)
    clip = frame.unsqueeze(2).repeat(1, 1, 128, 1, 1)  # (1, 3, T=128, 32, 32), static
    seen = {}
    net3d.layer4.register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        net3d(clip)
        feat3d = seen["out"][:, :, 7].flatten(2).mean(-1)  # the middle step of 16: no clip end reaches it
        x = net2d.maxpool(net2d.relu(net2d.bn1(net2d.conv1(frame))))
        feat2d = net2d.layer4(net2d.layer3(net2d.layer2(net2d.layer1(x)))).flatten(2).mean(-1)
    torch.testing.assert_close(feat3d, feat2d, atol=1e-4, rtol=1e-4)


def _mmaction2_file(tmp_path, w: mmaction2.Weights):
    path = tmp_path / "kinetics400.pth"
    torch.save(w.checkpoint(), path)
    return str(path)


@pytest.mark.parametrize("model", ["tsn", "tsm"])
def test_an_mmaction2_kinetics_2d_checkpoint_computes_what_it_computes_there(tmp_path, model):
    torch.manual_seed(0)
    segments, x = 4, torch.randn(2 * 4, 3, 32, 32)  # (B*T, C, H, W): 2 clips of 4 segments
    w = mmaction2.Weights(seed=1)
    with torch.no_grad():
        want = mmaction2.resnet2d(x, w, base=4, shift_segments=segments if model == "tsm" else 0).mean((2, 3))
    config = replace(TINY_R50, model=model, segments=segments, pretrained=_mmaction2_file(tmp_path, w))
    backbone = model_for(config, 5).backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("model", ["i3d", "nl_i3d"])
def test_an_mmaction2_kinetics_i3d_checkpoint_computes_what_it_computes_there(tmp_path, model):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 64, 64)  # (B, C, T, H, W)
    w = mmaction2.Weights(seed=2)
    nonlocal_blocks = mmaction2.NON_LOCAL_R50 if model == "nl_i3d" else None
    with torch.no_grad():
        want = mmaction2.resnet3d(x, w, base=4, nonlocal_blocks=nonlocal_blocks).mean((2, 3, 4))
    config = replace(TINY_R50, model=model, segments=16, pretrained=_mmaction2_file(tmp_path, w))
    backbone = model_for(config, 5).backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), want, atol=1e-4, rtol=1e-4)


def test_the_load_report_counts_what_was_loaded_and_left_out(tmp_path):
    from finegym_ray.train.loop import check_pretrained

    w = mmaction2.Weights(seed=3)
    mmaction2.resnet3d(torch.zeros(1, 3, 8, 32, 32), w, base=4, nonlocal_blocks=mmaction2.NON_LOCAL_R50)
    path = _mmaction2_file(tmp_path, w)
    lines = []
    record = check_pretrained(replace(TINY_R50, model="nl_i3d", segments=8, pretrained=path), 5, say=lines.append)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    needed = sum(1 for k in w if not k.endswith("num_batches_tracked"))
    assert record == {"uri": path, "sha256": digest, "naming": "mmaction2", "loaded": needed, "needed": needed,
                      "missing": 0, "mismatched": 0, "unexpected": 0, "left_out": 2, "new": 0}
    text = lines[0]
    assert f"sha256 {digest}" in text and "naming mmaction2" in text
    assert f"loaded {needed} of {needed} backbone tensors; missing 0; unexpected 0; shape-mismatched 0" in text
    assert "(outside the backbone: the classifier and the like): 2 (cls_head.fc_cls.bias, cls_head.fc_cls.weight)" \
        in text

    # ImageNet weights into NL-I3D: the 2-D kernels inflated, the non-local blocks new.
    imagenet = tmp_path / "imagenet.pth"
    torch.save(ResNet(depth=50, base_width=4).state_dict(), imagenet)
    lines.clear()
    record = check_pretrained(replace(TINY_R50, model="nl_i3d", segments=8, pretrained=str(imagenet)), 5,
                              say=lines.append)
    assert record["naming"] == "torchvision" and record["loaded"] == record["needed"] == 265  # 318 less 53 BN counters
    assert record["new"] == 5 * 11 and record["left_out"] == 2  # theta, phi, g (weight, bias), out, bn (4)
    assert "left out on purpose (outside the backbone: the classifier and the like): 2 (fc.bias, fc.weight)" \
        in lines[0]
    assert "adapted: 53 2-D kernels inflated to 3-D" in lines[0]
    assert "new in this model, kept at their initialisation: non-local blocks of 5 (layer2.1, layer2.3, " \
           "layer3.1, layer3.3, ...)" in lines[0]


def test_a_partly_matching_file_is_refused_unless_pretrained_strict_is_false(tmp_path, weights):
    _, state = weights
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    partial["layer1.0.conv1.weight"] = torch.zeros(16, 16, 1, 1)  # another shape
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    config = replace(SMALL, model="tsn", pretrained=str(path))
    with pytest.raises(ValueError, match=r"partial.pth: fits \d+ of the backbone's \d+ tensors \(missing 25 "
                                         r"\(layer4.0.conv1.weight, .*shape-mismatched 1 \(layer1.0.conv1.weight "
                                         r"\(file \(16, 16, 1, 1\); model \(16, 16, 3, 3\)\)\)\): refused, .*"
                                         r"pretrained_strict=false loads what fits"):
        model_for(config, 5)
    model = model_for(replace(config, pretrained_strict=False), 5)
    assert torch.equal(model.backbone.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])


def test_nested_and_wrapped_state_dicts_are_unwrapped(tmp_path, weights):
    # DDP's module., a recognizer's backbone. and its head, under state_dict or model:
    # how training scripts save, finegym-ray's own state.pt among them.
    _, state = weights
    wrapped = {f"module.backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
    wrapped["module.head.weight"] = torch.zeros(5, 512)
    for i, saved in enumerate([{"state_dict": wrapped, "epoch": 3}, {"model": wrapped, "optimizer": {}}]):
        path = tmp_path / f"wrapped{i}.pth"
        torch.save(saved, path)
        model = model_for(replace(SMALL, model="trn", pretrained=str(path)), 5)
        running_var = model.backbone.layer2[0].downsample[1].running_var
        assert torch.equal(running_var, state["layer2.0.downsample.1.running_var"])


class _Code:
    """What a file may hold beside tensors: loading it with pickle would run code."""

    def __reduce__(self):
        return (print, ("this ran",))


def test_a_file_holding_python_objects_is_refused_without_running_them(tmp_path, weights, capsys):
    _, state = weights
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": state, "meta": _Code()}, path)
    with pytest.raises(ValueError, match=r"unsafe.pth: holds Python objects besides tensors, which loading with "
                                         r"weights_only refuses .*torch.save\(torch.load\(PATH, weights_only=False\)"):
        model_for(replace(SMALL, model="tsn", pretrained=str(path)), 5)
    assert "this ran" not in capsys.readouterr().out


def test_the_run_records_the_sha256_it_checked_and_workers_load_only_that_file(tmp_path, weights):
    from finegym_ray.train import checkpoint as checkpoints
    from finegym_ray.train.run import pretrained_record

    path, _ = weights
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    config = replace(SMALL, model="tsn", pretrained=path)
    run = str(tmp_path / "runs" / "r")
    lines = []
    record = pretrained_record(config, run, 5, say=lines.append)
    assert record["sha256"] == digest and record["loaded"] == record["needed"] == 100 and lines
    # A worker loads the file only with the digest the driver recorded.
    model_for(config, 5, sha256=digest)
    with pytest.raises(ValueError, match=f"its SHA-256 is {digest}, but this run checked weights of 0+ there"):
        model_for(config, 5, sha256="0" * 64)
    # A run with a checkpoint keeps its record: its weights replaced the file's, which
    # may have changed or gone since.
    checkpoints.write(run, 0, state={"epoch": 0}, config_yaml="", meta={"pretrained": record, "history": []})
    assert pretrained_record(replace(config, pretrained=str(tmp_path / "gone.pth")), run, 5) == record


@pytest.fixture(scope="module")
def bn_inception(tmp_path_factory):
    """TSN's ImageNet BN-Inception file, its tensors at random: (its path, the tensors)."""
    w = bninception.Weights(seed=4)
    bninception.bn_inception(torch.zeros(1, 3, 32, 32), w)  # makes every tensor
    path = tmp_path_factory.mktemp("w") / "bn_inception.pth"
    torch.save(bninception.imagenet_file(w), path)
    return str(path), w


@pytest.mark.parametrize("modality", ["rgb", "flow"])
def test_tsns_imagenet_bn_inception_computes_what_it_computes_in_tsn(bn_inception, modality):
    # TSN feeds BGR pixels less Caffe's mean, or flow images (bound 20) less 128; this
    # package RGB normalised with ImageNet's mean and std, or flow in pixels / 20. The
    # first conv converted as it loads, the network computes on the same frames what
    # TSN's computes, with the border padded by what this package's zero padding stands
    # for (ImageNet's mean colour; no motion) where Caffe pads with zeros.
    torch.manual_seed(0)
    channels = 3 if modality == "rgb" else 10
    raw = torch.randint(0, 256, (1, 1, channels, 32, 64), dtype=torch.uint8)  # (B, T, C, H, W)
    if modality == "rgb":
        mean_bgr = torch.tensor(bninception.MEAN_BGR)
        tsn_input = raw[:, 0].flip(1).float() - mean_bgr.view(1, 3, 1, 1)
        pad = 255 * torch.tensor(steps.IMAGENET_MEAN).flip(0) - mean_bgr
    else:
        tsn_input = raw[:, 0].float() - bninception.FLOW_MEAN
        pad = torch.full((channels,), 255 / 2 - bninception.FLOW_MEAN)
    path, w = bn_inception
    with torch.no_grad():
        want = bninception.bn_inception(tsn_input, w, pad_value=pad).mean((2, 3))
    config = replace(BN_INCEPTION, modality=modality, frames_per_segment=channels // (3 if modality == "rgb" else 2),
                     segments=1, pretrained=path)
    x = steps.model_input(raw, torch.full((1,), 20.0), modality=modality, clip_model=False)
    backbone = model_for(config, 5).backbone.eval()
    with torch.no_grad():
        got = backbone(x[:, 0])
    scale = want.abs().max()  # float32 rounding, of the largest features' size
    torch.testing.assert_close(got / scale, want / scale, atol=1e-5, rtol=0)


def test_bn_inception_files_of_tsn_and_of_finegym_ray_load_with_their_report(tmp_path, bn_inception):
    from finegym_ray.train.loop import check_pretrained
    from finegym_ray.train.weights import load_pretrained

    imagenet, w = bn_inception
    needed = len(w)  # Caffe's weights have no BN counters
    lines = []
    record = check_pretrained(replace(BN_INCEPTION, pretrained=imagenet), 5, say=lines.append)
    assert (record["naming"], record["loaded"], record["needed"], record["left_out"]) == ("caffe", needed, needed, 2)
    assert f"loaded {needed} of {needed} backbone tensors; missing 0; unexpected 0; shape-mismatched 0" in lines[0]
    assert "(outside the backbone: the classifier and the like): 2 (fc.bias, fc.weight)" in lines[0]
    assert "adapted: first conv converted from Caffe's input (BGR pixels 0-255 less 104, 117, 128) to RGB " \
           "normalised with ImageNet's mean and std" in lines[0]

    # A TSN (or TRN) trained with TSN's PyTorch code, DataParallel's module. and all,
    # into a flow TRN: TSN's cross-modality initialisation, then flow's conversion.
    tsn = {f"module.base_model.{k}": v for k, v in w.items()}
    tsn |= {"module.new_fc.weight": torch.zeros(5, 1024), "module.new_fc.bias": torch.zeros(5)}
    checkpoint = tmp_path / "tsn_bninception_kinetics.pth.tar"
    torch.save({"epoch": 80, "arch": "BNInception", "state_dict": tsn}, checkpoint)
    lines.clear()
    flow = replace(BN_INCEPTION, model="trn", modality="flow", frames_per_segment=5, segments=3)
    record = check_pretrained(replace(flow, pretrained=str(checkpoint)), 5, say=lines.append)
    assert (record["loaded"], record["needed"], record["left_out"]) == (needed, needed, 2)
    assert "left out on purpose (outside the backbone: the classifier and the like): 2 (new_fc.bias, new_fc.weight)" \
        in lines[0]
    assert "adapted: first conv averaged over its 3 RGB channels and repeated to 10; first conv converted from " \
           "TSN's flow images (0-255 for -20 to 20 pixels, less 128) to flow in pixels / 20" in lines[0]

    # A run of this package: its own names, already on its input, loaded as they are.
    trained = model_for(flow, 5)
    ours = tmp_path / "state.pt"
    torch.save({"model": trained.state_dict(), "epoch": 3}, ours)
    model = model_for(flow, 5)
    report = load_pretrained(model.backbone, str(ours))
    assert (report.naming, len(report.loaded), report.needed, report.adapted) == ("finegym-ray", needed, needed, [])
    assert torch.equal(model.backbone.conv1_7x7_s2.conv.weight, trained.backbone.conv1_7x7_s2.conv.weight)
