"""--pretrained: a torchvision-named ResNet state dict, from a file or S3, into any model."""

from dataclasses import replace

import pytest
import torch

from finegym_ray import storage
from finegym_ray.models.resnet import ResNet
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.loop import model_for

SMALL = TrainConfig(depth=18, base_width=16, segments=2)


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
