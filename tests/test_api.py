"""The Python API (finegym_ray/api.py): the commands as functions that return results,
refuse bad input as the commands do, and start their own Ray quietly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import finegym_ray.api as fgr
from finegym_ray import cli, presets
from finegym_ray.config import ConfigError, load_config
from finegym_ray.train.config import TrainConfig
from tests.support.output import assert_no_ray_internals
from tests.train.test_train import TINY


def test_the_api_and_the_command_line_refuse_a_bad_setting_in_the_same_line(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1\nlr: 0.1\n")  # YAML whose error spans several lines
    for config, override in ((presets.path("tsm_flow_demo.yaml"), "epoch=3"), (broken, "lr=0.1")):
        with pytest.raises(ConfigError) as refused:
            fgr.train(config, overrides=[override])
        assert cli.main(["train", "--config", str(config), "--set", override]) == 2
        assert capsys.readouterr().err == f"finegym-ray: error: {refused.value}\n"
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        fgr.train("tsm_flow_demo.yaml", overrides={"epoch": 3})


def test_a_config_is_a_file_a_preset_name_or_the_dataclass_and_the_options_win(tmp_path):
    path = presets.path("tsm_flow_demo.yaml")
    want = fgr._load(TrainConfig, path, ["epochs=2", "name=a"], data="store", name="2024")
    assert (want.epochs, want.data, want.name) == (2, "store", "2024")  # a name of digits stays a name
    for config, overrides in (("tsm_flow_demo", ["epochs=2"]), ("configs/tsm_flow_demo.yaml", {"epochs": 2}),
                              (load_config(TrainConfig, path), "epochs=2")):
        assert fgr._load(TrainConfig, config, overrides, data=Path("store"), name="2024") == want
    with pytest.raises(ConfigError, match="config must be a YAML file, a preset's name or a TrainConfig"):
        fgr._load(TrainConfig, 3, ())
    with pytest.raises(ConfigError, match="no such config file"):
        fgr.train(tmp_path / "missing.yaml")
    # Refused before any Ray starts, in the command's words.
    with pytest.raises(fgr.InputError, match="not a preprocessed store"):
        fgr.train("tsm_flow_demo.yaml", data=tmp_path)


# A fresh Python with no Ray: train, then evaluate what it trained.
SCRIPT = """
import json, sys
import finegym_ray.api as fgr

data, runs, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
trained = fgr.train(overrides=overrides, data=data, runs=runs, name="api")
scored = fgr.evaluate(trained)
print(repr(trained))
print(repr(scored))
print("RESULT", json.dumps({"run": trained.run, "checkpoint": trained.checkpoint, "history": trained.history,
                            "out": scored.run.out, "clips": scored.run.clips, "mean_class": scored.run.mean_class,
                            "interval": scored.run.mean_class_interval}))
"""


@pytest.mark.e2e
def test_a_fresh_python_trains_and_evaluates_without_ray_noise(tiny_store, tmp_path):
    data, _ = tiny_store
    overrides = [*TINY, "epochs=1", "workers=1", "cpus_per_worker=1", "val_every=0"]
    r = subprocess.run([sys.executable, "-c", SCRIPT, data, str(tmp_path / "runs"), json.dumps(overrides)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert_no_ray_internals(r.stdout + r.stderr)
    assert "[train] epoch 1/1: " in r.stdout and "[evaluate] " in r.stdout
    result = json.loads(r.stdout.split("RESULT ", 1)[1])
    assert result["run"] == str(tmp_path / "runs" / "api")
    assert result["checkpoint"].endswith("/api/epoch_0001") and [m["epoch"] for m in result["history"]] == [0]
    lo, hi = result["interval"]
    assert result["clips"] > 0 and 0 <= lo <= result["mean_class"] <= hi <= 1
    assert (Path(result["out"]) / "metrics.json").is_file()
    reprs = r.stdout.split("RESULT ", 1)[0].splitlines()[-2:]
    assert reprs[0].startswith("TrainResult(run=") and "epochs=1" in reprs[0]
    assert reprs[1].startswith("EvaluateResult(run: mean class ")
