"""The ready configs under configs/: each loads, validates and builds its model."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from finegym_ray import models
from finegym_ray.config import load_config
from finegym_ray.train import config as train_config
from finegym_ray.train.config import DEMO, TrainConfig
from finegym_ray.train.loop import model_for

ROOT = Path(__file__).parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# The paper's rows the recognition trainer trains; configs/paper/stgcn_pose.yaml is
# train-poses' (tests/pose/test_config.py).
PAPER = sorted(p for p in (ROOT / "configs" / "paper").glob("*.yaml") if p.stem != "stgcn_pose")


def test_every_model_and_input_has_a_faster_variant_of_ours():
    names = {p.stem for p in CONFIGS}
    for model in ("tsn", "trn", "trn_multiscale", "tsm", "i3d", "nl_i3d"):
        for modality in ("rgb", "flow"):
            assert f"{model}_{modality}_gym99" in names
            text = (ROOT / "configs" / f"{model}_{modality}_gym99.yaml").read_text()
            assert "not the paper's protocol" in text, model  # the paper's: configs/paper/


def test_the_paper_configs_train_each_row_the_package_can_as_the_supplementary_says():
    # FineGym's supplementary, section 1.1 (docs/training.md's table): TSN and TRN on
    # BN-Inception, 3 segments, dropout 0.8, RGB 80 epochs at 0.001 / 10 every 30, flow
    # 200 at 0.002 / 10 every 80; TSM as TSN but on ResNet-50 for 100 epochs, the rate
    # divided by 10 every 40; I3D and NL I3D on 8 frames 2 apart; ActionVLAD on VGG-16,
    # 10 frames, 64 k-means centres fixed for 20 epochs at lr 0.01, then 80 epochs at
    # 1e-4 with the layers before conv5_1 frozen.
    configs = {p.stem: load_config(TrainConfig, p) for p in PAPER}
    tsn_trn = {f"{m}_{x}" for m in ("tsn", "trn", "trn_multiscale") for x in ("rgb", "flow")}
    assert set(configs) == {"tsm_rgb", "tsm_flow", "i3d_rgb", "nl_i3d_rgb", "actionvlad_rgb"} | tsn_trn
    for c in configs.values():
        assert (c.task, c.depth, c.base_width, c.blocks, c.optimizer, c.lr_schedule, c.warmup_epochs) == \
            ("gym99", 50, 64, None, "sgd", "step", 0)
    got = {name: (c.model, c.backbone, c.modality, c.segments, c.frames_per_segment, c.dropout, c.epochs, c.lr,
                  c.lr_steps) for name, c in configs.items()}
    resnet = {"tsm_rgb": ("tsm", "resnet", "rgb", 3, 1, 0.8, 100, 0.001, [40, 80]),
              "tsm_flow": ("tsm", "resnet", "flow", 3, 5, 0.8, 100, 0.002, [40, 80]),
              "i3d_rgb": ("i3d", "resnet", "rgb", 8, 1, 0.5, 100, 0.001, [40, 80]),
              "nl_i3d_rgb": ("nl_i3d", "resnet", "rgb", 8, 1, 0.5, 100, 0.001, [40, 80]),
              "actionvlad_rgb": ("actionvlad", "resnet", "rgb", 10, 1, 0.5, 100, 0.01, [20, 20])}
    bninception = {f"{m}_rgb": (m, "bninception", "rgb", 3, 1, 0.8, 80, 0.001, [30, 60])
                   for m in ("tsn", "trn", "trn_multiscale")}
    bninception |= {f"{m}_flow": (m, "bninception", "flow", 3, 5, 0.8, 200, 0.002, [80, 160])
                    for m in ("tsn", "trn", "trn_multiscale")}
    assert got == resnet | bninception
    assert configs["i3d_rgb"].dense_stride == configs["nl_i3d_rgb"].dense_stride == 2
    vlad = configs["actionvlad_rgb"]
    assert (vlad.vlad_clusters, vlad.vlad_centres, vlad.freeze_vlad_epochs, vlad.freeze_backbone_before) == \
        (64, "kmeans", 20, "conv5_1")
    table = (ROOT / "docs" / "training.md").read_text()
    assert all(f"configs/paper/{p.name}" in table for p in PAPER + [ROOT / "configs" / "paper" / "stgcn_pose.yaml"])


@pytest.mark.parametrize("path", CONFIGS + PAPER, ids=lambda p: p.relative_to(ROOT / "configs").with_suffix("")
                         .as_posix())
def test_config_loads_and_its_model_takes_its_input(path):
    config = load_config(TrainConfig, path)
    if path in PAPER and config.backbone == "resnet":  # our variants build them at full width: seconds each
        config = replace(config, base_width=8)
    model = model_for(config, num_classes=99)
    h, w = 32, 48  # the layout matters here, not the size
    if config.clip_model:
        x = torch.zeros(1, config.in_channels, 8, h, w)
    else:
        x = torch.zeros(1, config.segments, config.in_channels, h, w)
    with torch.no_grad():
        assert model.eval()(x).shape == (1, 99)


def test_the_event_config_is_tsn_rgb_on_whole_routines():
    config = load_config(TrainConfig, ROOT / "configs" / "tsn_rgb_event.yaml")
    assert (config.task, config.model, config.modality, config.depth) == ("event", "tsn", "rgb", 50)
    assert config.task_version == train_config.TASK_VERSION  # configs one writes leave it out


def test_task_version_is_todays_and_recorded_configs_of_another_are_refused():
    with pytest.raises(ValueError, match="task_version must be 2"):
        TrainConfig(task_version=1)
    read = train_config.recorded_config
    assert read({"task": "event", "task_version": 2}) == {"task": "event", "task_version": 2}
    for version in (None, 1, 3):  # None: recorded before the version was
        recorded = {"task": "event"} if version is None else {"task": "event", "task_version": version}
        with pytest.raises(ValueError, match=rf"^r/config.yaml: task_version {version}, this finegym-ray reads 2 "
                                             r"\(recorded by another version.*train again under another name$"):
            read(recorded, "r/config.yaml")


def test_config_names_the_models_there_are():
    assert set(train_config.MODELS) == set(models.MODELS)
    assert set(train_config.CLIP_MODELS) == set(models.CLIP_MODELS)
    assert train_config.BACKBONES == models.BACKBONES
    assert set(train_config.BACKBONE_MODELS) == set(models.BACKBONE_MODELS)


def test_the_demo_presets_rgb_partner_differs_only_in_its_input():
    # The demo trains configs/tsm_flow_demo.yaml (DEMO); its RGB partner for --fuse
    # (docs/training.md's tsm_rgb_set) differs only in its input.
    rgb = load_config(TrainConfig, ROOT / "configs" / "tsm_rgb_demo.yaml")
    assert rgb.run_name == "tsm_rgb_set"
    assert replace(rgb, modality="flow", frames_per_segment=3, data=DEMO.data, runs=DEMO.runs) == DEMO


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="model must be one of"):
        TrainConfig(model="resnet")
    with pytest.raises(ValueError, match="task must be one of"):
        TrainConfig(task="gym100")
    with pytest.raises(ValueError, match="frames_per_segment must be 1"):
        TrainConfig(model="i3d", frames_per_segment=5)
    with pytest.raises(ValueError, match=r"lr_schedule=step needs lr_steps, epochs in order from 1 to epochs-1 "
                                         r"\(49\), got \[30, 20\]"):
        TrainConfig(lr_schedule="step", lr_steps=[30, 20])
    with pytest.raises(ValueError, match="lr_steps apply to lr_schedule=step"):
        TrainConfig(lr_steps=[30])
    with pytest.raises(ValueError, match="lr_schedule must be one of cosine, step"):
        TrainConfig(lr_schedule="poly")
    with pytest.raises(ValueError, match="backbone=bninception serves tsn, trn, trn_multiscale; tsm takes a ResNet"):
        TrainConfig(model="tsm", backbone="bninception")
    with pytest.raises(ValueError, match=r"depth, base_width and blocks size a ResNet, and backbone=bninception has "
                                         r"one size: leave them out \(got depth 18, base_width 64, blocks None\)"):
        TrainConfig(model="tsn", backbone="bninception", depth=18)


# Names that would leave the runs (or sweeps) folder, or that a shell or file system
# reads as something else, and names as people write them.
BAD_NAMES = ["../../x", "a/b", "..", ".", "/abs", "a\\b", "a..b", ".hidden", "-x", "a b", "a\x00b", "x" * 101]
GOOD_NAMES = ["tsm_rgb_gym99", "run-2.v1", "0", "x" * 95]


def _named(kind: str, name: str):
    from finegym_ray.localize.config import LocalizeConfig
    from finegym_ray.tune.config import SweepConfig

    return {"run": lambda: TrainConfig(name=name), "sweep": lambda: SweepConfig(name=name),
            "localize": lambda: LocalizeConfig(features="f", name=name)}[kind]()


@pytest.mark.parametrize("kind", ["run", "sweep", "localize"])
def test_run_sweep_and_localization_names_follow_one_grammar(kind):
    import re

    for name in BAD_NAMES:
        with pytest.raises(ValueError, match=f"name must be one plain folder name .*got {re.escape(repr(name))}"):
            _named(kind, name)
    for name in GOOD_NAMES:
        assert _named(kind, name).name == name
    # A recorded config (a run's config.yaml, read by evaluate) goes through the same check.
    with pytest.raises(ValueError, match="name must be one plain folder name"):
        load_config(TrainConfig, overrides=["name=../../x"])


def test_a_sweep_name_leaves_room_for_its_best_run():
    from finegym_ray.tune.config import SweepConfig

    assert TrainConfig(name=f"{SweepConfig(name='x' * 95).name}_best").name == "x" * 95 + "_best"
    with pytest.raises(ValueError, match="1 to 95 characters"):
        SweepConfig(name="x" * 96)
