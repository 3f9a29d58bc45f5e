"""Pose models on the training engine: the task's loop on every element task with both
models, then real Ray Train runs (two DDP workers) that checkpoint, resume, evaluate
with the clips' protocol and fuse."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import finegym_ray.api as fgr
from finegym_ray.errors import InputError
from finegym_ray.pose.config import PoseConfig
from finegym_ray.pose.evaluate import score_keys
from finegym_ray.pose.train import KIND, run_pose_training, training_labels, training_plan
from finegym_ray.train import checkpoint as ckpt
from finegym_ray.train.evaluate import check_scored, evaluate, write_report
from finegym_ray.train.runs import list_runs

MODELS = {"stgcn": {"model": "stgcn", "model_kwargs": {"base_width": 8}},
          "posec3d": {"model": "posec3d", "model_kwargs": {"base_width": 8, "blocks": [1, 1, 1]},
                      "heatmap_size": 16}}
# The element tasks this tiny SynGym has (no vault; UB-S1 has no element in val, so it
# validates on train).
ELEMENT_TASKS = {"gym99": "val", "gym288": "val", "fx": "val", "fx_s1": "val", "ub_s1": "train", "set": "val"}


def quiet(_m: str) -> None:
    pass


def tiny(store: str, runs: str, model: str = "stgcn", **settings) -> PoseConfig:
    return PoseConfig(**{"data": store, "runs": runs, "task": "gym99", "frames": 8, "epochs": 2, "batch_size": 4,
                         "lr": 0.05, "test_views": 2, "workers": 2, "cpus_per_worker": 0.5, **MODELS[model],
                         **settings})


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", ELEMENT_TASKS)
def test_each_element_task_trains_validates_and_is_scored_in_the_tasks_loop(pose_store, tmp_path, task, model):
    import torch

    from finegym_ray.train import steps

    config = tiny(pose_store, str(tmp_path), model, task=task, val_split=ELEMENT_TASKS[task], workers=1)
    train, val = training_labels(config, say=quiet)
    task_ = training_plan(config, train, val).task
    task_.setup(rank=0, world=1, device=torch.device("cpu"))
    torch.manual_seed(0)
    net = task_.build_model(pretrained=True)
    optimizer = steps.make_optimizer(net.parameters(), name="sgd", lr=0.05, momentum=0.9, weight_decay=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    metrics = task_.train_metrics(task_.train_epoch(net, optimizer, 0, bare=net, say=None))
    assert metrics["train_samples"] == len(train.labels) and np.isfinite(metrics["train_loss"])
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())  # it learnt
    assert task_.validate(net)["val_samples"] == len(val.labels)
    # Scored with the test protocol (what a scoring task runs) and reported as clip runs are.
    scored = score_keys(net.state_dict(), config, train.num_classes, val.labels, threads=1)
    table = pa.table({"key": scored["key"], "label": scored["label"], "scores": scored["scores"]})
    check_scored(table, val.labels, task)
    report = write_report(str(tmp_path / "eval"), table, val, {"task": task, "model": model})
    assert report["clips"] == len(val.labels) and 0 <= report["mean_class_lo"] <= report["mean_class_hi"] <= 1
    assert "hierarchy" in report if task != "set" else "levels" not in report


def test_an_epoch_draws_the_same_samples_with_input_processes(pose_store, tmp_path):
    import torch

    config = tiny(pose_store, str(tmp_path), "posec3d", workers=1)
    task_ = training_plan(config, *training_labels(config, say=quiet)).task
    task_.setup(rank=0, world=1, device=torch.device("cpu"))

    def epoch(workers: int) -> list:
        from finegym_ray.pose.train import Samples

        order = np.random.default_rng([0, 3, 0]).permutation(len(task_.train_items))
        return [x for x, _ in task_._loader(Samples(task_.train_items, order, config, seed=[0, 3, 0]), workers)]

    in_worker, beside = epoch(0), epoch(2)
    assert len(in_worker) == len(beside) and all(torch.equal(a, b) for a, b in zip(in_worker, beside))


@pytest.fixture(scope="module")
def stgcn(ray_cluster, pose_store, tmp_path_factory) -> tuple[PoseConfig, dict]:
    config = tiny(pose_store, str(tmp_path_factory.mktemp("runs")), name="stgcn")
    return config, run_pose_training(config, say=quiet)


@pytest.mark.e2e
def test_two_workers_train_a_pose_run_with_a_checkpoint_per_epoch(stgcn):
    config, result = stgcn
    assert [m["epoch"] for m in result["history"]] == [0, 1]
    assert all(np.isfinite(m["train_loss"]) and "val_mean_class" in m and "data_wait_s" in m
               for m in result["history"])
    # Both workers' shards: the epoch's samples are the train keys', each shard padded to the longest.
    train, _ = training_labels(config, say=quiet)
    assert result["history"][0]["train_samples"] == 2 * -(-len(train.labels) // 2)
    latest = ckpt.find_latest(result["run"])
    assert latest.epoch == 1 and latest.meta["kind"] == KIND and latest.meta["class_names"] == list(train.class_names)
    (row,) = list_runs(config.runs)  # `finegym-ray runs` lists it as it lists clip runs
    assert (row.name, row.model, row.input, row.task, row.epochs_done, row.epochs_planned) == (
        "stgcn", "stgcn", "keypoints", "gym99", 2, 2)
    assert row.best_mean_class == max(m["val_mean_class"] for m in result["history"])


@pytest.mark.e2e
def test_a_pose_run_resumes_after_its_newest_complete_checkpoint(stgcn):
    config, result = stgcn
    run = Path(result["run"])
    said = []
    run_pose_training(config, say=said.append)
    assert any("has trained all 2 epochs" in s for s in said)
    (run / ckpt.dir_name(1) / "manifest.json").unlink()  # as a kill mid-write leaves it
    said.clear()
    again = run_pose_training(replace(config, workers=1, cpus_per_worker=1.0), say=said.append)  # another scale
    assert any("resuming" in s and ckpt.dir_name(0) in s for s in said), said
    assert [m["epoch"] for m in again["history"]] == [0, 1]
    with pytest.raises(InputError, match="other settings.*frames"):
        run_pose_training(replace(config, frames=6), say=quiet)
    run_pose_training(replace(config, workers=1, cpus_per_worker=1.0, test_views=3), say=quiet)  # where, not what


@pytest.mark.e2e
def test_a_pose_run_is_evaluated_with_the_clips_protocol_and_fused_with_another(stgcn, tmp_path):
    config, result = stgcn
    said = []
    results = evaluate(result["run"], say=said.append)
    m = results["run"]
    _, val = training_labels(config, say=quiet)
    assert (m["clips"], m["labelled"], m["views"], m["crops"], m["segments"]) == (len(val.labels), len(val.labels),
                                                                                   2, 2, 8)
    assert m["modality"] == "keypoints" and m["model"] == "stgcn"
    assert m["mean_class_lo"] <= m["mean_class"] <= m["mean_class_hi"] and "hierarchy" in m
    out = Path(result["run"]) / "eval"
    scores = pq.read_table(out / "scores.parquet")
    assert sorted(scores.column("key").to_pylist()) == sorted(val.labels)
    assert json.loads((out / "metrics.json").read_text())["top1"] == m["top1"]
    said.clear()
    evaluate(result["run"], say=said.append)
    assert any("reusing" in s for s in said)
    with pytest.raises(InputError, match="tested with the 8 frames"):
        evaluate(result["run"], segments=4, say=quiet)

    limbs = replace(config, model="posec3d", modality="limbs", runs=str(tmp_path), name="limbs", workers=1,
                    cpus_per_worker=1.0, **{k: v for k, v in MODELS["posec3d"].items() if k != "model"})
    trained = fgr.train_poses(limbs, quiet=True)  # the notebook's way: the API, on the connected Ray
    assert trained.run == str(tmp_path / "limbs") and [m["epoch"] for m in trained.history] == [0, 1]
    (tmp_path / "limbs" / ckpt.dir_name(1) / "manifest.json").unlink()  # the heatmap model resumes too
    said.clear()
    assert [m["epoch"] for m in run_pose_training(limbs, say=said.append)["history"]] == [0, 1]
    assert any("resuming" in s and ckpt.dir_name(0) in s for s in said), said
    fused = evaluate(result["run"], fuse=trained.run, say=quiet)
    assert fused["fused"]["fuse_weights"] == [1.0, 1.0]  # PoseC3D's keypoints : limbs
    assert fused["fused"]["clips"] == len(val.labels) and fused["other"]["modality"] == "limbs"
    a, b = (np.stack(pq.read_table(Path(r["out"]) / "scores.parquet").sort_by("key").column("scores").to_numpy(
        zero_copy_only=False)) for r in (fused["run"], fused["other"]))
    both = np.stack(pq.read_table(Path(fused["fused"]["out"]) / "scores.parquet").sort_by("key").column(
        "scores").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(both, (a + b) / 2, rtol=1e-5)
