"""Sweep configs: loading, overrides, base resolution and the search-space checks."""

from dataclasses import replace
from pathlib import Path

import pytest

from finegym_ray.config import ConfigError, load_config
from finegym_ray.train.config import TrainConfig
from finegym_ray.tune.config import (
    SweepConfig,
    TrialResources,
    check_space,
    grid_size,
    load_sweep,
    trial_config,
    trial_count,
)


def _sweep(tmp_path, text: str, name: str = "lr_sweep"):
    path = tmp_path / "sweeps" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_base_beside_the_sweep_file_then_train_values_on_top(tmp_path, monkeypatch):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "base.yaml").write_text("model: tsn\nsegments: 3\nepochs: 9\n")
    path = _sweep(tmp_path, "base: base.yaml\ntrain: {epochs: 4}\nspace: {lr: {loguniform: [1.0e-3, 0.1]}}\n")
    monkeypatch.chdir(tmp_path)  # the base is not in the current directory
    sweep, base = load_sweep(str(path), [])
    assert sweep.name == "lr_sweep" and sweep.base == str(tmp_path / "sweeps" / "base.yaml")
    assert base == replace(TrainConfig(), model="tsn", segments=3, epochs=4)
    assert sweep.folder == "./finegym_sweeps/lr_sweep"


def test_base_falls_back_to_the_current_directory(tmp_path, monkeypatch):
    (tmp_path / "cfg.yaml").write_text("segments: 5\n")
    path = _sweep(tmp_path, "base: cfg.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert load_sweep(str(path), [])[1].segments == 5
    path.write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml.*no such file"):
        load_sweep(str(path), [])


def test_overrides_reach_dict_fields_and_sections(tmp_path):
    path = _sweep(tmp_path, "space: {lr: {grid: [0.01, 0.1]}, dropout: {uniform: [0.1, 0.5]}}\n")
    sweep, base = load_sweep(str(path), ["num_samples=4", "train.epochs=2", "resources.workers=2",
                                         "space.segments.grid=[1,3]", "space.lr.loguniform=[0.001,0.1]",
                                         "space.dropout=null", "name=other"])
    assert sweep.space == {"lr": {"loguniform": [0.001, 0.1]}, "segments": {"grid": [1, 3]}}
    assert (sweep.num_samples, base.epochs, sweep.resources.workers, sweep.name) == (4, 2, 2, "other")
    assert trial_count(sweep) == 8


def test_a_sweep_from_overrides_alone_needs_a_name():
    assert load_sweep(None, ["name=s", "space.seed.randint=[0,3]"])[0].name == "s"
    with pytest.raises(ConfigError, match="no name"):
        load_sweep(None, [])


def test_a_sweep_given_as_its_dataclass_takes_overrides_as_its_file_does(tmp_path):
    path = _sweep(tmp_path, "space: {lr: {grid: [0.01, 0.1]}}\nnum_samples: 2\n")
    overrides = ["train.epochs=2", "space.segments.grid=[1,3]", "name=other"]
    from_file = load_sweep(str(path), overrides)
    assert load_sweep(from_file[0], overrides) == from_file
    with pytest.raises(ConfigError, match="no name"):
        load_sweep(SweepConfig(), [])


@pytest.mark.parametrize("override, msg", [
    ("space.lr.grid", "expected key=value"),
    ("space.lr.grid.x=1", "expected space.KEY.KIND=VALUE"),
    ("train.a.b=1", "expected train.KEY=VALUE"),
    ("space.lr.grid=[1", "not a YAML value"),
    ("train.epochs=0", "epochs must be >= 1"),
])
def test_bad_overrides(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_sweep(None, ["name=s", override])


@pytest.mark.parametrize("text, msg", [
    ("space: {segmnts: {grid: [3]}}", r"space.segmnts: unknown key 'segmnts'; known: .*segments"),
    ("space: {segments: {grid: [0, 3]}}", r"space.segments.grid: 0 does not fit.*segments must be >= 1"),
    ("space: {segments: {grid: []}}", "non-empty list"),
    ("space: {segments: {grid: [3], choice: [4]}}", "exactly one of"),
    ("space: {segments: {sample: [3]}}", "exactly one of"),
    ("space: {lr: {loguniform: [0, 0.1]}}", r"lo > 0"),
    ("space: {lr: {loguniform: [0.1, 0.01]}}", r"lo < hi"),
    ("space: {lr: {uniform: [0.01, .nan]}}", r"finite"),
    ("space: {dropout: {uniform: [0.1, 1.0]}}", r"1.0 does not fit.*dropout"),  # both ends must be valid
    ("space: {segments: {uniform: [1, 4]}}", "uniform draws floats but segments takes int values; use randint or"),
    ("space: {lr: {randint: [1, 4]}}", "randint draws ints but lr takes float values; use uniform"),
    ("space: {blocks: {uniform: [1, 2]}}", r"blocks takes list\[int\] \| None values; use grid/choice"),
    ("space: {segments: {randint: [3, 3]}}", "lo < hi"),
    ("space: {segments: {randint: [1, 4.5]}}", "ints"),
    ("space: {segments: {randint: [0, 4]}}", "0 does not fit"),
    ("space: {crop: {randint: [200, 258]}}", "257 does not fit.*crop"),  # hi excluded: 257 is the top
    ("space: {workers: {grid: [1, 2]}}", "not sweepable: set resources.workers"),
    ("space: {name: {choice: [a, b]}}", "not sweepable"),
    ("space: [lr]", "space must map"),
    ("scheduler: asha\ntrain: {val_every: 2}", "asha with metric val_mean_class needs val_every 1, got 2"),
    ("scheduler: asha\nspace: {val_every: {grid: [1, 2]}}", "needs val_every 1, got 1, 2"),
    ("metric: val_top1\ntrain: {val_every: 0}", "never reported with val_every 0"),
    ("scheduler: asha\ngrace_period: 5\ntrain: {epochs: 3}", "grace_period 5 is more than epochs 3"),
    ("scheduler: asha\ngrace_period: 2\nspace: {epochs: {randint: [1, 4]}}", "more than epochs 1"),
    ("metric: accuracy", "metric must be one of"),
    ("scheduler: hyperband", "scheduler must be one of"),
    ("reduction_factor: 1", "reduction_factor must be"),
    ("resources: {workers: 0}", "resources: workers must be"),
    ("resources: {gpus: 1}", "unknown key.*gpus"),
    ("train: {epoch: 3}", "train: unknown key.*epoch"),
    ("train: {segments: 0}", "train: .*segments must be >= 1"),
    ("train: {use_gpu: true}", "train.use_gpu: set by the sweep"),
])
def test_problems_are_one_line_config_errors_naming_file_and_key(tmp_path, text, msg):
    path = _sweep(tmp_path, text + "\n")
    with pytest.raises(ConfigError, match=msg) as e:
        load_sweep(str(path), [])
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_asha_on_a_train_metric_needs_no_validation(tmp_path):
    path = _sweep(tmp_path, "scheduler: asha\nmetric: train_loss\nmode: min\ntrain: {val_every: 0}\n")
    assert load_sweep(str(path), [])[0].scheduler == "asha"


def test_check_space_accepts_every_kind():
    check_space({"segments": {"grid": [1, 3]}, "model": {"choice": ["tsn", "tsm"]}, "lr": {"loguniform": [1e-4, 1]},
                 "dropout": {"uniform": [0, 0.9]}, "seed": {"randint": [0, 100]},
                 "blocks": {"choice": [None, [1, 1, 1, 1]]}}, TrainConfig())


def test_trial_config_applies_params_and_resources():
    base = TrainConfig(workers=4, use_gpu=None, epochs=7)
    cfg = trial_config(base, {"lr": 0.05, "segments": 3}, runs="s3://b/sweeps/x/trials", name="t1",
                       resources=TrialResources(workers=2, cpus_per_worker=3))
    assert cfg == replace(base, lr=0.05, segments=3, runs="s3://b/sweeps/x/trials", name="t1", workers=2,
                          cpus_per_worker=3.0, use_gpu=False)
    gpu = trial_config(base, {}, runs="r", name="t", resources=TrialResources(gpus_per_worker=0.5))
    assert gpu.use_gpu is True and gpu.gpus_per_worker == 0.5  # trials share a GPU as the sweep says
    with pytest.raises(ConfigError, match="segments must be >= 1"):
        trial_config(base, {"segments": 0}, runs="r", name="t", resources=TrialResources())


def test_grid_size():
    assert grid_size({}) == 1
    assert grid_size({"a": {"grid": [1, 2, 3]}, "b": {"grid": [1, 2]}, "c": {"choice": [1, 2]}}) == 6


def test_a_sweep_is_a_config_like_the_others(tmp_path):
    # The same loader, so the same YAML rules: 1e-3 is a float, unknown keys are errors.
    path = _sweep(tmp_path, "train: {lr: 1e-3}\nnum_sample: 2\n")
    with pytest.raises(ConfigError, match="unknown key.*num_sample"):
        load_sweep(str(path), [])
    path.write_text("train: {lr: 1e-3}\n")
    assert load_sweep(str(path), [])[1].lr == 0.001
    assert load_config(TrainConfig, None, ["lr=1e-3"]) == load_sweep(str(path), [])[1]



@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs" / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_ready_sweep_loads(path):
    sweep, base = load_sweep(str(path), [])
    assert sweep.name == path.stem and sweep.space
