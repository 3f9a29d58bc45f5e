"""The flow section of the preprocessing settings, its hash, and where the flow stage runs."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from finegym_ray.config import ConfigError, apply_overrides, load_config, to_yaml
from finegym_ray.preprocess.config import FlowConfig, PreprocessConfig, config_hash, output_settings
from finegym_ray.preprocess.pipeline import run_preprocess
from finegym_ray.preprocess.stages import Pools, pool_sizes
from finegym_ray.video.flow import method_defaults


def test_the_flow_section_from_yaml_and_overrides(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("flow:\n  method: tvl1\n  options: {warps: 3, device: cpu}\n")
    config = load_config(PreprocessConfig, path, ["flow.options.tau=0.2"])
    assert config.flow == FlowConfig("tvl1", {"warps": 3, "device": "cpu", "tau": 0.2})
    assert load_config(PreprocessConfig, path, ["flow=dis"]).flow == FlowConfig("dis")  # the whole section
    assert load_config(PreprocessConfig, _saved(config, tmp_path)) == config
    overridden = apply_overrides(PreprocessConfig(), ["flow.method=tvl1", "flow.options.warps=2"])
    assert overridden.flow == FlowConfig("tvl1", {"warps": 2})
    assert (overridden.flow.device, overridden.flow.own_stage) == ("auto", True)
    assert (PreprocessConfig().flow.device, PreprocessConfig().flow.own_stage) == ("cpu", False)


def _saved(config: PreprocessConfig, tmp_path) -> str:
    path = tmp_path / "saved.yaml"
    path.write_text(to_yaml(config))  # what the output's config.yaml holds
    return str(path)


@pytest.mark.parametrize("shorthand", ["flow=none", "flow: none"])
def test_a_method_name_alone_is_that_method_with_its_defaults(tmp_path, shorthand):
    if "=" in shorthand:
        config = apply_overrides(PreprocessConfig(), [shorthand])
    else:
        (tmp_path / "p.yaml").write_text(shorthand + "\n")
        config = load_config(PreprocessConfig, tmp_path / "p.yaml")
    assert config.flow == FlowConfig("none") and not config.flow.with_flow
    assert PreprocessConfig(flow="farneback").flow == FlowConfig("farneback")


@pytest.mark.parametrize("overrides, words", [
    (["flow=tvl2"], ["unknown flow method 'tvl2'", "dis", "tvl1"]),
    (["flow.method=dis", "flow.options.warps=3"], ["'dis' has no option 'warps'", "preset"]),
    (["flow.method=tvl1", "flow.options.warps=0"], ["warps", ">= 1"]),
    (["flow.method=tvl1", "flow.options.warps=2.5"], ["warps", "int"]),
    (["flow.options.preset=slowest"], ["slowest", "ultrafast"]),
    (["flow.method=tvl1", "flow.options.device=cuda:1"], ["device", "auto, cpu, cuda"]),
    (["flow.options=3"], ["mapping"]),
    (["dis_preset=fast"], ["unknown key 'dis_preset'"]),  # the setting before the flow section
    (["flow_workers=0"], ["flow_workers"]),
    (["flow_gpus_per_worker=.nan"], ["flow_gpus_per_worker"]),
])
def test_bad_flow_settings_are_config_errors_naming_them(overrides, words):
    with pytest.raises(ConfigError) as info:
        apply_overrides(PreprocessConfig(), overrides)
    for word in words:
        assert word in str(info.value)


def test_the_hash_holds_the_method_and_the_options_that_change_the_flow():
    tvl1 = PreprocessConfig(flow=FlowConfig("tvl1"))
    settings = output_settings(tvl1)["flow"]
    assert settings["method"] == "tvl1" and settings["warps"] == method_defaults("tvl1")["warps"]
    assert "device" not in settings and "batch_pairs" not in settings
    # Where and in what batches it runs: the same clips, a rerun elsewhere resumes.
    for runtime in ({"device": "cpu"}, {"device": "cuda"}, {"batch_pairs": 4}):
        assert config_hash(replace(tvl1, flow=FlowConfig("tvl1", runtime))) == config_hash(tvl1)
    assert config_hash(replace(tvl1, flow=FlowConfig("tvl1", {"warps": 3}))) != config_hash(tvl1)
    assert config_hash(replace(tvl1, flow="dis")) != config_hash(tvl1)
    # Defaults count as given: naming one changes nothing.
    default = config_hash(PreprocessConfig())
    assert config_hash(PreprocessConfig(flow=FlowConfig("dis", {"preset": "fast"}))) == default
    assert config_hash(PreprocessConfig(flow=FlowConfig("dis", {"preset": "medium"}))) != default


def test_an_output_made_with_dis_preset_is_refused_naming_the_change(tiny_gym, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    old = {key: value for key, value in output_settings(PreprocessConfig()).items() if key != "flow"}
    (out / "preprocess.json").write_text(json.dumps({"hash": "0123456789ab", "settings": {
        **old, "flow": "dis", "dis_preset": "fast"}}))
    with pytest.raises(ValueError, match=r"other settings \(changed: dis_preset, flow;"):
        run_preprocess(PreprocessConfig(), str(tiny_gym / "annotations"), str(tiny_gym / "videos"), str(out),
                       say=lambda _m: None)
    assert sorted(p.name for p in out.iterdir()) == ["preprocess.json"]  # nothing cut, nothing replaced


TVL1 = PreprocessConfig(flow=FlowConfig("tvl1"))


@pytest.mark.parametrize("config, resources, units, pools", [
    # CPU methods: one stage, one actor per CPU (or ``workers``).
    (PreprocessConfig(), {"CPU": 8.0}, 100, Pools(8)),
    (PreprocessConfig(workers=3), {"CPU": 8.0, "GPU": 2.0}, 100, Pools(3)),
    (PreprocessConfig(), {"CPU": 8.0}, 2, Pools(2)),
    # tvl1 on a GPU cluster: a flow actor per GPU, the other CPUs decode.
    (TVL1, {"CPU": 16.0, "GPU": 4.0}, 100, Pools(12, 4, 1.0, "auto")),
    (replace(TVL1, flow_gpus_per_worker=0.5, workers=2), {"CPU": 16.0, "GPU": 1.0}, 100, Pools(2, 2, 0.5, "auto")),
    (replace(TVL1, flow=FlowConfig("tvl1", {"device": "cuda"})), {"CPU": 4.0, "GPU": 1.0}, 1,
     Pools(1, 1, 1.0, "cuda")),
    # ...without GPUs, or asked for the CPU: CPU flow actors, one decoder per 16 CPUs.
    (TVL1, {"CPU": 2.0}, 100, Pools(1, 1, 0.0, "cpu")),
    (TVL1, {"CPU": 64.0}, 100, Pools(4, 60, 0.0, "cpu")),
    (replace(TVL1, flow=FlowConfig("tvl1", {"device": "cpu"})), {"CPU": 64.0, "GPU": 8.0}, 100,
     Pools(4, 60, 0.0, "cpu")),
    (replace(TVL1, flow_workers=3), {"CPU": 64.0}, 2, Pools(2, 2, 0.0, "cpu")),
])
def test_pool_sizes(config, resources, units, pools):
    assert pool_sizes(config, resources, units) == pools


def test_flow_on_cuda_without_a_gpu_is_refused():
    with pytest.raises(ValueError, match="no GPU.*device=auto or cpu"):
        pool_sizes(PreprocessConfig(flow=FlowConfig("tvl1", {"device": "cuda"})), {"CPU": 8.0}, 10)
