"""Pose settings: what a pose model cannot take is refused in one line naming it."""

from pathlib import Path

import pytest
import torch

from finegym_ray.config import load_config
from finegym_ray.errors import InputError
from finegym_ray.pose.config import PoseConfig
from finegym_ray.pose.data import in_channels
from finegym_ray.pose.train import build_pose_model

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.parametrize("settings, says", [
    ({"model": "stgcn", "modality": "limbs"}, "stgcn reads joint coordinates"),
    ({"model": "tsm"}, "model must be one of stgcn, posec3d"),
    ({"task": "event"}, "poses are per sub-action"),
    ({"model_kwargs": {"num_classes": 3}}, "model_kwargs must be a mapping without num_classes"),
    ({"frames": 0}, "frames must be >= 1"),
    ({"heatmap_size": 4}, "heatmap_size must be >= 8"),
    ({"lr_schedule": "step", "lr_steps": None}, "lr_schedule=step needs lr_steps"),
    ({"gpus_per_worker": 0.5, "workers": 2}, "needs workers=1"),
    ({"sigma": float("nan")}, "sigma"),
])
def test_bad_settings_are_refused(settings, says):
    with pytest.raises(InputError, match=says):
        PoseConfig(**settings)


def test_the_run_is_named_by_model_input_and_task():
    assert PoseConfig(model="posec3d", modality="limbs", task="fx_s1").run_name == "posec3d_limbs_fx_s1"
    assert PoseConfig(name="mine").run_name == "mine"


@pytest.mark.parametrize("name", ["paper/stgcn_pose", "pose/stgcn_gym99", "pose/posec3d_keypoints_gym99",
                                  "pose/posec3d_limbs_gym99"])
def test_each_pose_config_loads_and_its_model_takes_its_input(name):
    config = load_config(PoseConfig, CONFIGS / f"{name}.yaml")
    model = build_pose_model(config, 99).eval()
    if config.heatmaps:
        x = torch.zeros(1, in_channels(config), 8, 16, 16)
    else:
        x = torch.zeros(1, config.persons, 8, 17, 3)
    with torch.no_grad():
        assert model(x).shape == (1, 99)


def test_the_paper_row_is_st_gcns_kinetics_recipe_at_5x_the_epochs():
    # ST-GCN on Kinetics-skeleton: SGD, lr 0.1 / 10 at epochs 20, 30, 40 of 50, weight decay 1e-4.
    c = load_config(PoseConfig, CONFIGS / "paper" / "stgcn_pose.yaml")
    assert (c.model, c.optimizer, c.lr, c.weight_decay, c.epochs, c.lr_schedule, c.lr_steps) == (
        "stgcn", "sgd", 0.1, 1e-4, 250, "step", [100, 150, 200])
