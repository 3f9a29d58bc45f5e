"""The detector trained on a real Ray cluster (2 DDP workers) from real feature files,
its resume after an unfinished checkpoint, its evaluation; bad settings refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from finegym_ray.localize.config import LocalizeConfig
from finegym_ray.localize.evaluate import evaluate_run, format_results
from finegym_ray.localize.formats import read_detections, read_ground_truth
from finegym_ray.localize.metric import TIOU_THRESHOLDS, detection_map
from finegym_ray.localize.toy import write_toy_features
from finegym_ray.localize.train import prepare, run_localize_training
from finegym_ray.train import checkpoint as ckpt
from finegym_ray.video_job import no_video_reason, write_error_record
from tests.train.test_train import largest_gap, latest_weights

TINY = dict(detector_kwargs={"embed_dim": 32, "head_dim": 32, "num_levels": 4}, epochs=3, batch_size=2,
            warmup_epochs=0, lr=0.003, workers=2, cpus_per_worker=0.5)


def quiet(_m: str) -> None:
    pass


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[str, str]:
    """(features folder, ground truth JSON): 10 toy videos of 96 steps x 16 features."""
    out = str(tmp_path_factory.mktemp("toy_features"))
    return out, write_toy_features(out, videos=10, steps=96, dim=16)


@pytest.fixture(scope="module")
def trained(ray_cluster, toy, tmp_path_factory) -> tuple[LocalizeConfig, dict]:
    features, gt = toy
    config = LocalizeConfig(features=features, annotations=gt, runs=str(tmp_path_factory.mktemp("runs")),
                            name="toy", **TINY)
    return config, run_localize_training(config, say=quiet)


@pytest.mark.e2e
def test_two_workers_train_a_checkpoint_per_epoch(trained):
    config, result = trained
    assert [m["epoch"] for m in result["history"]] == [0, 1, 2]
    assert all(np.isfinite(m["train_loss"]) and np.isfinite(m["val_loss"]) for m in result["history"])
    # The training budget in optimizer steps: each worker's equal shard, in batches.
    per_worker = -(-len(prepare(config, say=quiet).train) // config.workers)
    assert [m["iterations"] for m in result["history"]] == [-(-per_worker // config.batch_size)] * 3
    latest = ckpt.find_latest(result["run"])
    assert latest.epoch == 2 and latest.meta["class_names"] == ["BB", "FX", "UB", "VT"]
    # keep_checkpoints=2: the oldest one pruned.
    assert sorted(p.parent.name for p in Path(result["run"]).glob("epoch_*/manifest.json")) == [
        ckpt.dir_name(1), ckpt.dir_name(2)]


@pytest.mark.e2e
def test_the_same_command_resumes_after_the_newest_complete_checkpoint(trained):
    config, result = trained
    run = Path(result["run"])
    said = []
    assert run_localize_training(config, say=said.append)["checkpoint"].endswith(ckpt.dir_name(2))
    assert any("has trained all 3 epochs" in s for s in said)
    (run / ckpt.dir_name(2) / "manifest.json").unlink()  # as a kill mid-write leaves it
    said.clear()
    again = run_localize_training(config, say=said.append)
    assert any("resuming" in s and ckpt.dir_name(1) in s for s in said), said
    assert [m["epoch"] for m in again["history"]] == [0, 1, 2]  # each epoch once, in order
    assert (run / ckpt.dir_name(2) / "manifest.json").exists()
    with pytest.raises(ValueError, match="other settings.*lr"):
        run_localize_training(replace(config, lr=0.01), say=quiet)


@pytest.mark.e2e
def test_the_seed_sets_the_initial_weights(ray_cluster, toy, tmp_path):
    # At a learning rate of 1e-9 an epoch leaves the weights where they started: those of
    # the detector this process builds after seeding with the run's seed (1), not with
    # another (0, what a worker that left the seed alone or fixed it would give).
    features, gt = toy

    import torch

    from finegym_ray.localize.train import build_detector, prepare

    config = LocalizeConfig(features=features, annotations=gt, runs=str(tmp_path), name="seeded",
                            **{**TINY, "epochs": 1, "workers": 1, "lr": 1e-9, "weight_decay": 0.0,
                               "val_every": 0, "seed": 1})
    trained = latest_weights(run_localize_training(config, say=quiet)["run"])
    data = prepare(config, say=quiet)

    def built(seed: int) -> dict:
        torch.manual_seed(seed)
        state = build_detector(config, in_channels=data.feature_dim, num_classes=len(data.class_names)).state_dict()
        return {k: state[k] for k in trained}

    assert largest_gap(trained, built(1)) < 1e-6
    assert largest_gap(trained, built(0)) > 1e-3


@pytest.mark.e2e
def test_evaluation_writes_metrics_detections_and_a_timeline(trained, tmp_path):
    config, result = trained
    results = evaluate_run(config, say=quiet)
    out = Path(result["run"]) / "eval"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tiou_thresholds"] == list(TIOU_THRESHOLDS) and len(metrics["map"]) == 10
    assert all(0 <= m <= 1 for m in metrics["map"]) and metrics["videos"] >= 2
    lo, hi = metrics["interval_95"]["average_map"]
    assert lo <= metrics["average_map"] <= hi
    # metrics.json is what the metric gives on detections.json against the ground truth.
    detections = read_detections(str(out / "detections.json"))
    gt = read_ground_truth(config.annotations)
    again = detection_map({v: gt[v] for v in detections}, detections)
    assert np.allclose(again.map, metrics["map"]) and sum(map(len, detections.values())) == metrics["detections"]
    image = cv2.imread(str(out / "timeline.png"))
    assert image is not None and image.shape[1] == 960 and image.shape[0] > 100
    assert results["result"].average_map == pytest.approx(metrics["average_map"])
    assert (metrics["labelled"], metrics["without_features"]) == (metrics["videos"], 0)

    # A val video never downloaded: extraction recorded it and wrote no features. The
    # evaluation scores the others and says what is missing, and why.
    features = tmp_path / "features"
    shutil.copytree(config.features, features)
    data = prepare(config, say=quiet)
    gt = read_ground_truth(config.annotations)
    gone = next(data.ids[u] for u in data.val if {lab for v in data.ids.values() if v != data.ids[u]
                                                  for lab, _, _ in gt[v]} == set(data.class_names))
    (features / "action" / f"{gone}.parquet").unlink()
    write_error_record(str(features), f"action_{gone}", scope="video", reason=no_video_reason(gone, "/videos"),
                       group=gone, kind="action", uri="")
    said = []
    partial = evaluate_run(replace(config, features=str(features)), say=said.append)
    m = partial["metrics"]
    assert (m["videos"], m["labelled"], m["without_features"]) == (len(data.val) - 1, len(data.val), 1)
    assert m["without_features_why"] == {"no video": 1} and gone not in read_detections(str(out / "detections.json"))
    note = f"on {len(data.val) - 1} of {len(data.val)} val sequences; 1 without features (1 no video)"
    assert any(note in line for line in said), said
    assert f"mAP {note}" in format_results(partial)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finegym_ray.cli", "localize", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("setting, says", [("level=frames", "level must be one of action, subaction"),
                                           ("detector=transformer", "unknown detector 'transformer'")])
def test_bad_settings_are_refused_with_one_line_before_ray_starts(toy, tmp_path, setting, says):
    features, gt = toy
    r = _cli("train", "--set", f"features={features}", "--set", f"annotations={gt}", "--set",
             f"runs={tmp_path / 'runs'}", "--set", setting)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and says in lines[0], r.stderr
    assert not (tmp_path / "runs").exists()


def test_a_detector_too_big_for_the_cluster_is_refused_at_once(ray_cluster, toy, tmp_path):
    from finegym_ray.capacity import CapacityError

    features, gt = toy
    config = LocalizeConfig(features=features, annotations=gt, runs=str(tmp_path / "runs"), name="big",
                            **{**TINY, "workers": 3, "cpus_per_worker": 1.0})
    with pytest.raises(CapacityError,
                       match=r"localize train big needs 3 train workers x 1 CPU: .*the cluster has 2 CPU"):
        run_localize_training(config, say=quiet)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


# ----------------------------------------------------------------------------------
# Run folders are data: a resumed checkpoint is checked on the driver before Ray Train
# starts a worker.
# ----------------------------------------------------------------------------------
def _files(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _planted_run(config: LocalizeConfig, *, state: dict, config_yaml: str) -> Path:
    """The run of ``config`` with one checkpoint (epoch 1 of 3) holding ``state`` and
    ``config_yaml``, its manifest vouching for both, as anyone with write access to a
    shared bucket could leave it; its meta matches the features, so that it resumes."""
    from finegym_ray.localize.train import prepare, run_uri

    data = prepare(config, say=quiet)
    run = run_uri(config)
    ckpt.write(run, 0, state=state, config_yaml=config_yaml,
               meta={"class_names": data.class_names, "data_hash": data.settings_hash,
                     "feature_dim": data.feature_dim, "history": []})
    return Path(run)


def _train_cli(config: LocalizeConfig, tmp_path: Path, address: str) -> subprocess.CompletedProcess:
    from finegym_ray.config import to_yaml

    path = tmp_path / "localize.yaml"
    path.write_text(to_yaml(config))
    return subprocess.run([sys.executable, "-m", "finegym_ray.cli", "localize", "train", "--config", str(path),
                           "--address", address], capture_output=True, text=True, timeout=600)


def test_a_resumed_state_that_would_run_code_is_refused_on_the_driver_in_one_line(ray_cluster, toy, tmp_path):
    from finegym_ray.config import to_yaml
    from tests.support.hostile import WritesMarker
    from tests.test_cli import one_error_line

    features, gt = toy
    config = LocalizeConfig(features=features, annotations=gt, runs=str(tmp_path / "runs"), name="planted",
                            **{**TINY, "max_failures": 0})
    marker = tmp_path / "marker"
    run = _planted_run(config, state={"model": WritesMarker(str(marker))}, config_yaml=to_yaml(config))
    before = _files(run)
    t0 = time.monotonic()
    r = _train_cli(config, tmp_path, ray_cluster.address)
    seconds = time.monotonic() - t0
    one_error_line(r, f"{run}/{ckpt.dir_name(0)}/state.pt refused")
    # PyTorch's own text advises loading it with weights_only=False: never echoed.
    assert "weights_only" not in r.stdout + r.stderr
    assert not marker.exists()
    assert _files(run) == before  # no Ray Train run state, no lease left, nothing else written
    assert seconds < 60, seconds  # no Ray Train worker started (and no stall warning waited for)


def test_a_checkpoint_config_that_is_an_alias_bomb_is_refused_in_one_line(ray_cluster, toy, tmp_path):
    from tests.support.hostile import alias_bomb
    from tests.test_cli import one_error_line

    features, gt = toy
    config = LocalizeConfig(features=features, annotations=gt, runs=str(tmp_path / "runs"), name="bomb", **TINY)
    # A million values once its aliases are expanded, from about 200 bytes (few enough
    # that the code before the bounded reader printed them rather than ran out of memory).
    run = _planted_run(config, state={"model": {}}, config_yaml=alias_bomb(levels=6, width=10) + "lr: *f\n")
    before = _files(run)
    r = _train_cli(config, tmp_path, ray_cluster.address)
    one_error_line(r, f"{run}/{ckpt.dir_name(0)}/config.yaml", "aliases")
    assert len(r.stderr) < 1000, len(r.stderr)
    assert _files(run) == before
