"""The paper's event-level recognition (whole routines into FineGym's 10 events) end to
end on a tiny store cut with events=true, its refusal on clips cut without routines, and
the refusal of runs and sweeps recorded without today's ``task_version`` (whose task
names may mean other tasks)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from finegym_ray import storage
from finegym_ray.config import apply_overrides, to_yaml
from finegym_ray.train import checkpoint as ckpt
from finegym_ray.train.config import TASK_VERSION, TrainConfig
from finegym_ray.train.data import load_split_labels
from finegym_ray.train.evaluate import checkpoint_at_test, evaluate
from finegym_ray.train.run import _check_same_config, run_training
from tests.support.clips import TINY_PREPROCESS

# A tiny TSN on one worker of one CPU (the other CPU for Ray Data); 4 segments spread
# over each whole routine.
TINY = ["model=tsn", "depth=10", "base_width=8", "segments=4", "crop=32", "test_short=48", "batch_size=4",
        "workers=1", "cpus_per_worker=1.0", "test_views=1", "test_crops=1", "optimizer=adamw", "lr=0.002"]


def quiet(_m: str) -> None:
    pass


def tiny_config(data: str, runs: str, **kw) -> TrainConfig:
    return replace(apply_overrides(TrainConfig(data=data, runs=runs), TINY), **kw)


@pytest.fixture(scope="module")
def event_store(ray_cluster, tiny_gym, tmp_path_factory) -> str:
    """tiny_gym cut with routines and sub-actions (RGB only: the tests train on RGB)."""
    from finegym_ray.preprocess.pipeline import run_preprocess

    out = str(tmp_path_factory.mktemp("event_store"))
    run_preprocess(replace(TINY_PREPROCESS, events=True, flow="none"), str(tiny_gym / "annotations"),
                   str(tiny_gym / "videos"), out, say=quiet)
    return out


@pytest.mark.e2e
def test_event_task_trains_and_evaluates_on_whole_routines(event_store, tmp_path):
    data = event_store
    train, val = (load_split_labels(data, "event", s) for s in ("train", "val"))
    assert train.num_classes == 10  # the head has every event, whichever the synthetic data renders
    events = pq.read_table(Path(data) / "manifest" / "events.parquet").to_pylist()
    assert {**train.labels, **val.labels} == {e["event_key"]: e["event_label"] - 1 for e in events}
    clips = pq.read_table(Path(data) / "clips", columns=["key", "kind", "num_frames"]).to_pylist()
    routines = {c["key"]: c["num_frames"] for c in clips if c["kind"] == "event"}
    assert set(routines) == set(train.labels) | set(val.labels)
    said = []
    result = run_training(tiny_config(data, str(tmp_path / "runs"), task="event", epochs=1), say=said.append)
    assert any(f"task event: 10 classes, {len(train.labels)} train routines" in m for m in said), said
    (epoch,) = result["history"]
    # Routines only: one sample per train routine per epoch, every val routine validated.
    assert epoch["train_samples"] == len(train.labels) and epoch["val_samples"] == len(val.labels)
    assert np.isfinite(epoch["train_loss"])
    recorded = yaml.safe_load((Path(result["run"]) / "config.yaml").read_text())
    assert (recorded["task"], recorded["task_version"]) == ("event", TASK_VERSION)

    m = evaluate(result["run"], say=quiet)["run"]
    assert m["task"] == "event" and m["clips"] == len(val.labels) and m["num_classes"] == 10
    assert [c["name"] for c in m["per_class"]][:4] == ["VT", "FX", "BB", "UB"]
    scores = pq.read_table(Path(result["run"]) / "eval" / "scores.parquet")
    assert set(scores.column("key").to_pylist()) == set(val.labels)
    assert np.stack(scores.column("scores").to_numpy(zero_copy_only=False)).shape == (len(val.labels), 10)


def test_event_task_is_refused_on_clips_cut_without_routines(tiny_store, tmp_path):
    data, _ = tiny_store  # cut with events=false
    with pytest.raises(ValueError, match=r"classifies whole routines.*events=false: preprocess with "
                                         r"--set events=true") as e:
        run_training(tiny_config(data, str(tmp_path / "runs"), task="event", epochs=1), say=quiet)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def _old_run(runs: Path, data: str, name: str = "tsn_rgb_event") -> tuple[str, TrainConfig]:
    """RUNS/NAME as another version recorded it: its config.yaml (the run's and its
    checkpoint's) without ``task_version``."""
    import torch

    from finegym_ray.models import MODELS

    config = tiny_config(data, str(runs), task="subaction_event", name=name, epochs=2)
    old = yaml.safe_load(to_yaml(config))
    del old["task_version"]
    text = yaml.safe_dump(old, sort_keys=False)
    torch.manual_seed(0)
    net = MODELS["tsn"](**config.model_kwargs(4))
    run = str(runs / name)
    storage.write_text(storage.join(run, "config.yaml"), text)
    ckpt.write(run, 0, state={"model": net.state_dict()}, config_yaml=text,
               meta={"class_names": ["VT", "FX", "BB", "UB"], "history": []})
    return run, config


def test_a_run_recorded_without_todays_task_version_is_refused_in_one_line(tmp_path):
    run, config = _old_run(tmp_path, "unused")
    refusal = r"config.yaml: task_version None, this finegym-ray reads 2 .*train again under another name"
    with pytest.raises(ValueError, match=rf"^{re.escape(run)}/epoch_0001/{refusal}") as evaluated:
        checkpoint_at_test(run)
    with pytest.raises(ValueError, match=rf"^{re.escape(run)}/{refusal}") as resumed:
        _check_same_config(run, config)
    assert "\n" not in str(evaluated.value) + str(resumed.value)
    # A config recorded by a newer version is refused too, not guessed at.
    recorded = yaml.safe_load(Path(run, "config.yaml").read_text())
    Path(run, "config.yaml").write_text(yaml.safe_dump({**recorded, "task_version": 3}))
    with pytest.raises(ValueError, match="task_version 3, this finegym-ray reads 2"):
        _check_same_config(run, config)


def test_a_sweep_recorded_without_todays_task_version_is_refused(tmp_path):
    from finegym_ray.tune.config import SweepConfig
    from finegym_ray.tune.sweep import _record_settings

    sweep = SweepConfig(name="s", sweeps=str(tmp_path))
    base = tiny_config("unused", str(tmp_path / "runs"), task="subaction_event")
    folder = str(tmp_path / "s")
    assert _record_settings(folder, sweep, base) is False
    assert _record_settings(folder, sweep, base) is True
    path = Path(folder, "sweep.yaml")
    saved = yaml.safe_load(path.read_text())
    del saved["base"]["task_version"]
    path.write_text(yaml.safe_dump(saved, sort_keys=False))
    before = path.read_text()
    with pytest.raises(ValueError, match=r"sweep.yaml base: task_version None, this finegym-ray reads 2"):
        _record_settings(folder, sweep, base)
    assert path.read_text() == before
