"""Training and evaluation on a real Ray cluster: 2 DDP workers, resume after a killed
driver, recovery after a killed worker, shards and runs on S3, two-stream fusion."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from finegym_ray import storage
from finegym_ray.models.resnet import ResNet
from finegym_ray.preprocess.pipeline import run_preprocess
from finegym_ray.train import checkpoint as ckpt
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.curves import CURVES_PNG, EVENT_FILE, TENSORBOARD_DIR, read_scalars
from finegym_ray.train.data import load_split_labels
from finegym_ray.train.evaluate import evaluate, format_results
from finegym_ray.train.run import run_training
from finegym_ray.train.runs import list_runs
from tests.support.clips import TINY_PREPROCESS
from tests.support.output import assert_no_ray_internals, assert_progress_with_rate, assert_some_ray_internals
from tests.support.processes import own_pids_with
from tests.support.rays import free_placement_groups_of_ended_jobs
from tests.support.s3 import restart_when

# A tiny TSM on the subaction_event task; two workers of half a CPU leave one CPU to Ray Data.
TINY = ["task=subaction_event", "model=tsm", "depth=10", "base_width=8", "segments=2", "crop=32", "test_short=48",
        "batch_size=4", "workers=2", "cpus_per_worker=0.5", "test_views=1", "test_crops=1", "lr=0.05"]


# Where the test is about the driver rather than DDP: a Ray Train worker process fewer to
# start (each imports torch and Ray Train: about 7 CPU s here), the other CPU still Ray Data's.
ONE_WORKER = ("--set", "workers=1", "--set", "cpus_per_worker=1.0")


def tiny_config(data: str, runs: str, **kw) -> TrainConfig:
    from finegym_ray.config import apply_overrides
    return replace(apply_overrides(TrainConfig(data=data, runs=runs), TINY), **kw)


def quiet(_m: str) -> None:
    pass


def _epochs(run: str) -> list[int]:
    return [m["epoch"] for m in ckpt.find_latest(run).meta["history"]]


@pytest.mark.e2e
def test_two_workers_train_checkpoint_every_epoch_and_evaluate(tiny_store, tmp_path):
    data, _ = tiny_store
    config = tiny_config(data, str(tmp_path / "runs"), epochs=2)
    result = run_training(config, say=quiet)
    run = Path(result["run"])
    assert sorted(p.name for p in run.glob("epoch_*")) == ["epoch_0001", "epoch_0002"]
    history = result["history"]
    # Training curves, rebuilt from the history after each epoch: TensorBoard scalars and a PNG.
    scalars = read_scalars((run / TENSORBOARD_DIR / EVENT_FILE).read_bytes())
    assert [s for s, _ in scalars["loss/train"]] == [1, 2]
    assert [v for _, v in scalars["accuracy/val_top1"]] == pytest.approx([m["val_top1"] for m in history])
    assert cv2.imread(str(run / CURVES_PNG)) is not None
    train_clips = len(load_split_labels(data, "subaction_event", "train").labels)
    val_clips = len(load_split_labels(data, "subaction_event", "val").labels)
    # Each epoch saw every train clip once across the 2 shards (equal split may drop < 2).
    assert [m["epoch"] for m in history] == [0, 1]
    assert all(train_clips - 2 < m["train_samples"] <= train_clips for m in history)
    assert all(m["val_samples"] == val_clips for m in history)  # validation drops nothing
    assert all(np.isfinite(m["train_loss"]) and 0 <= m["val_top1"] <= 1 for m in history)
    saved = (run / "epoch_0002" / "config.yaml").read_text()
    assert "workers: 2" in saved and "model: tsm" in saved
    # The same command on a finished run trains nothing more and returns its result.
    again = run_training(config, say=quiet)
    assert again["checkpoint"] == result["checkpoint"] and again["history"] == history

    results = evaluate(str(run), say=quiet)
    m = results["run"]
    assert m["clips"] == val_clips and m["epoch"] == 1 and 0 <= m["top1"] <= 1
    present = [c for c in m["per_class"] if c["accuracy"] is not None]
    assert abs(np.mean([c["accuracy"] for c in present]) - m["mean_class"]) < 1e-9
    scores = pq.read_table(run / "eval" / "scores.parquet")
    s = np.stack(scores.column("scores").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(s.sum(1), 1, rtol=1e-5)  # averaged softmax
    for png in ("confusion.png", "per_class.png"):
        assert cv2.imread(str(run / "eval" / png)) is not None


@pytest.fixture(scope="module")
def still_flow_run(partial_store, tmp_path_factory) -> tuple[TrainConfig, dict]:
    """(config, result) of a one-epoch flow TSM at a learning rate of 1e-9 with seed 1: its
    weights stay where the seed put them (test_the_seed_sets_the_initial_weights), and
    its scores are a flow stream's to fuse (the fusion test)."""
    config = tiny_config(partial_store[0], str(tmp_path_factory.mktemp("runs")), epochs=1, workers=1,
                         cpus_per_worker=1.0, val_every=0, modality="flow", frames_per_segment=2, lr=1e-9,
                         weight_decay=0.0, seed=1)
    return config, run_training(config, say=quiet)


@pytest.mark.e2e
def test_fusion_weighs_two_runs_trained_where_a_video_of_the_val_split_is_missing(partial_store, still_flow_run,
                                                                                  tmp_path, monkeypatch):
    data, _, gone = partial_store
    runs = str(tmp_path / "runs")
    full = {split: load_split_labels(data, "subaction_event", split).labels for split in ("train", "val")}
    lost = {split: sorted(k for k in keys if k.startswith(gone + "_")) for split, keys in full.items()}
    assert lost["val"] and len(lost["val"]) < len(full["val"])
    # Given relative to where training runs, the run records its paths absolute, so that
    # it is evaluated from any folder.
    monkeypatch.chdir(tmp_path)
    rgb_config = tiny_config(os.path.relpath(data), "runs", epochs=1, workers=1, cpus_per_worker=1.0)
    said = []
    rgb = run_training(rgb_config, say=said.append)
    for recorded in (Path(rgb["run"]) / "config.yaml", Path(rgb["checkpoint"]) / "config.yaml"):
        assert {k: v for k, v in yaml.safe_load(recorded.read_text()).items() if k in ("data", "runs")} == \
            {"data": data, "runs": runs}
    # Training uses the clips that exist and says, in one line, what the missing video took.
    n_train, n_val = (len(full[s]) - len(lost[s]) for s in ("train", "val"))
    assert f"training on the clips that exist: train {len(lost['train'])} without a clip ({len(lost['train'])} " \
           f"no video) of {len(full['train'])} labelled; val {len(lost['val'])} without a clip " \
           f"({len(lost['val'])} no video) of {len(full['val'])} labelled" in said, said
    assert rgb["history"][0]["train_samples"] == n_train and rgb["history"][0]["val_samples"] == n_val
    assert ckpt.find_latest(rgb["run"]).meta["coverage"] == {
        "train": {"clips": n_train, "labelled": len(full["train"])},
        "val": {"clips": n_val, "labelled": len(full["val"])}}
    row = next(r for r in list_runs(runs) if r.name == "tsm_rgb_subaction_event")
    assert (row.val_clips, row.val_labelled) == (n_val, len(full["val"]))
    # FineGym's strict protocol refuses, before any scoring, naming the count and why.
    with pytest.raises(ValueError, match=f"{len(lost['val'])} of {len(full['val'])} labelled clips have no clip "
                                         rf"\({len(lost['val'])} no video\): --require-complete"):
        evaluate(rgb["run"], require_complete=True, say=quiet)
    assert not (Path(rgb["run"]) / "eval").exists()

    _, flow = still_flow_run
    said.clear()
    results = evaluate(rgb["run"], fuse=flow["run"], say=said.append)
    assert set(results) == {"run", "other", "fused"} and results["other"]["modality"] == "flow"
    fused_dir = Path(results["fused"]["out"])
    a, b, f = (np.stack(pq.read_table(p / "scores.parquet").column("scores").to_numpy(zero_copy_only=False))
               for p in (Path(rgb["run"]) / "eval", Path(flow["run"]) / "eval", fused_dir))
    np.testing.assert_allclose(f, (a + 1.5 * b) / 2.5, rtol=1e-6)  # TSN's weights, RGB 1 : flow 1.5
    # Every clip that exists scored once; beside every figure, what it is on and what is missing, and why.
    note = f"on {n_val} of {len(full['val'])} clips; {len(lost['val'])} without a clip ({len(lost['val'])} no video)"
    for name, out in (("run", Path(rgb["run"]) / "eval"), ("other", Path(flow["run"]) / "eval"),
                      ("fused", fused_dir)):
        m = json.loads((out / "metrics.json").read_text())
        assert (m["clips"], m["labelled"], m["without_clip"], m["without_clip_why"]) == (
            n_val, len(full["val"]), len(lost["val"]), {"no video": len(lost["val"])}), name
        assert results[name]["without_clip"] == len(lost["val"])
        assert sorted(pq.read_table(out / "scores.parquet").column("key").to_pylist()) == sorted(
            set(full["val"]) - set(lost["val"]))
    assert m["modality"] == "two-stream" and m["fuse_dropped"] == {"run": 0, "other": 0}
    assert sum(note in line for line in said) == 3, said
    assert format_results(results).count(f"mean class and top-1 {note}") == 3
    # Resuming a run with settings that change the model is refused, naming them.
    with pytest.raises(ValueError, match="depth"):
        run_training(replace(rgb_config, depth=18), say=quiet)


@pytest.mark.e2e
def test_a_pose_run_fuses_with_a_clip_run_on_the_keys_both_scored(partial_store, still_flow_run, pose_store,
                                                                   tmp_path):
    from finegym_ray.pose.config import PoseConfig
    from finegym_ray.pose.train import run_pose_training

    data, _, gone = partial_store  # one video's clips missing; the pose store has every key's poses
    poses = PoseConfig(data=pose_store, runs=str(tmp_path), task="subaction_event", model="stgcn",
                       model_kwargs={"base_width": 8}, frames=8, epochs=1, batch_size=4, val_every=0,
                       test_views=1, test_flip=False)
    pose_run = run_pose_training(poses, say=quiet)["run"]
    _, flow = still_flow_run
    results = evaluate(flow["run"], fuse=pose_run, say=quiet)
    val = load_split_labels(data, "subaction_event", "val").labels
    lost = sum(k.startswith(gone + "_") for k in val)
    fused = results["fused"]
    assert fused["fuse_weights"] == [1.5, 1.0]  # flow's TSN weight against a pose stream's
    assert results["other"]["clips"] == len(val) and fused["clips"] == results["run"]["clips"] == len(val) - lost
    assert fused["fuse_dropped"] == {"run": 0, "other": lost} and lost


@pytest.mark.e2e
def test_resume_takes_the_newest_complete_checkpoint_and_refuses_other_data_or_epochs(tiny_store, tmp_path):
    data, _ = tiny_store
    # From pretrained weights, on the paper's step schedule: the run records the weights'
    # SHA-256, and the rate is divided by 10 after the first epoch.
    weights = tmp_path / "resnet10.pth"
    torch.save(ResNet(depth=10, base_width=8).state_dict(), weights)
    config = tiny_config(data, str(tmp_path / "runs"), epochs=2, workers=1, cpus_per_worker=1.0, keep_checkpoints=0,
                         pretrained=str(weights), lr_schedule="step", lr_steps=[1])
    said = []
    run = Path(run_training(config, say=said.append)["run"])
    sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert any(f"sha256 {sha256}" in m for m in said), said
    meta = ckpt.find_latest(str(run)).meta
    assert meta["pretrained"]["sha256"] == sha256 and meta["pretrained"]["loaded"] == meta["pretrained"]["needed"]
    assert [m["lr"] for m in meta["history"]] == pytest.approx([0.05, 0.005])
    first = {p.name: p.read_bytes() for p in (run / "epoch_0001").iterdir()}
    # What a write cut short leaves: the newest folder has everything but state.pt.
    (run / "epoch_0002" / "state.pt").unlink()
    said = []
    result = run_training(config, say=said.append)
    assert any("skipping" in m and "epoch_0002" in m and "state.pt" in m for m in said), said
    assert any("resuming" in m and "after epoch_0001" in m for m in said), said
    assert [m["epoch"] for m in result["history"]] == [0, 1]  # epoch 1 trained again, epoch 0 not
    curves = read_scalars((run / TENSORBOARD_DIR / EVENT_FILE).read_bytes())
    assert [s for s, _ in curves["loss/train"]] == [1, 2]  # the redone epoch once, not appended twice
    assert {p.name: p.read_bytes() for p in (run / "epoch_0001").iterdir()} == first
    assert ckpt.find_latest(str(run), verify_state=True).epoch == 1
    assert ckpt.find_latest(str(run)).meta["pretrained"]["sha256"] == sha256  # kept through the resume
    assert evaluate(str(run), say=quiet)["run"]["epoch"] == 1

    # The schedule spans the run's epochs: another number is refused, not reshaped.
    with pytest.raises(ValueError, match="epochs=2"):
        run_training(replace(config, epochs=3), say=quiet)
    # Clips cut with other preprocessing settings than the run's are refused.
    last = ckpt.find_latest(str(run))
    ckpt.write(str(run), 1, state=last.load_state(), config_yaml=last.config_yaml,
               meta={**last.meta, "data_hash": "0123456789ab"})
    with pytest.raises(ValueError, match="preprocessing settings hash 0123456789ab"):
        run_training(config, say=quiet)


def _train_cli(cluster, data: str, runs: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "finegym_ray.cli", "train", "--address", cluster.address, "--data", data,
            "--runs", runs, *[a for o in TINY for a in ("--set", o)], *extra]


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return
        assert proc.poll() is None, f"training ended early: {proc.communicate()[0][-3000:]}"
        time.sleep(0.1)
    raise AssertionError(f"{path} did not appear in time")


@pytest.mark.e2e
def test_two_trainings_of_one_run_started_together_one_trains_and_the_other_is_refused(ray_cluster, tiny_store,
                                                                                         tmp_path):
    data, _ = tiny_store
    runs = tmp_path / "runs"
    cmd = _train_cli(ray_cluster, data, str(runs), *ONE_WORKER, "--set", "epochs=1", "--name", "same")
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], [o[1][-2000:] for o in outputs]
    loser = outputs[codes.index(2)][1]
    assert "is being written by another job" in loser and "train same" in loser, loser[-2000:]
    assert _epochs(str(runs / "same")) == [0]
    assert not (runs / "same" / "lease.json").exists()


@pytest.mark.e2e
def test_a_driver_stopped_by_ctrl_c_or_killed_resumes_with_the_same_command(ray_cluster, tiny_store, tmp_path):
    data, _ = tiny_store
    runs = tmp_path / "runs"
    cmd = _train_cli(ray_cluster, data, str(runs), *ONE_WORKER, "--set", "epochs=4", "--name", "resume")
    # Ctrl-C: in a session of its own, as a terminal's foreground job, which the whole group gets.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for(runs / "resume" / "epoch_0001" / "manifest.json", proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert err.strip().splitlines()[-1] == ("finegym-ray: interrupted; run the same command again to resume "
                                             "the train"), err[-2000:]
    assert "Traceback" not in err
    assert not (runs / "resume" / "lease.json").exists()

    # The same command, killed outright (its lease left behind) a checkpoint later.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(runs / "resume" / "epoch_0002" / "manifest.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((runs / "resume").glob("epoch_*/manifest.json")))
    assert done < 4, "the kill came too late to test anything"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "resuming" in rerun.stdout
    # What a person reads: one line of settings, epochs with a rate, nothing of Ray's.
    assert_no_ray_internals(rerun.stdout + rerun.stderr)
    assert f"all settings in {runs / 'resume' / 'config.yaml'}" in rerun.stdout
    assert_progress_with_rate(rerun.stdout, "train") and "[train] epoch 4/4: " in rerun.stdout
    assert _epochs(str(runs / "resume")) == [0, 1, 2, 3]  # each epoch once, in order
    free_placement_groups_of_ended_jobs(ray_cluster.address)  # what the killed driver's run may have left


@pytest.mark.e2e
def test_killed_worker_is_replaced_and_training_continues(ray_cluster, tiny_store, tmp_path):
    data, _ = tiny_store
    runs = tmp_path / "runs"
    cmd = _train_cli(ray_cluster, data, str(runs), "--set", "epochs=3", "--set", "max_failures=2",
                     "--name", "killed", "--verbose")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(runs / "killed" / "epoch_0001" / "manifest.json", proc)
    workers = own_pids_with("RayTrainWorker")
    assert workers, "found no training worker to kill"
    os.kill(workers[0], signal.SIGKILL)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert _epochs(str(runs / "killed")) == [0, 1, 2]
    assert_some_ray_internals(output)  # --verbose: Ray's lines, the worker's death among them
    assert_progress_with_rate(output, "train")


@pytest.mark.e2e
def test_training_on_s3_reads_shards_writes_checkpoints_and_loses_nothing_to_a_restart(ray_cluster, tiny_gym,
                                                                                       s3_server, s3_prefix):
    data, runs = storage.join(s3_prefix, "store"), storage.join(s3_prefix, "runs")
    run_preprocess(TINY_PREPROCESS, str(tiny_gym / "annotations"), str(tiny_gym / "videos"), data, say=quiet)
    config = tiny_config(data, runs, epochs=3, workers=1, cpus_per_worker=1.0, keep_checkpoints=0)
    run = storage.join(runs, config.run_name)
    log = {}
    restarter = restart_when(s3_server, lambda: storage.exists(storage.join(run, "epoch_0001", "manifest.json")),
                             3.0, log)
    result = run_training(config, say=quiet)
    ended_at = time.monotonic()
    restarter.join(120)
    assert "up_at" in log and log["down_at"] < ended_at, "the restart did not happen during training"
    assert result["run"] == storage.join(runs, "tsm_rgb_subaction_event") == run
    assert result["checkpoint"] == storage.join(run, "epoch_0003")
    assert [m["epoch"] for m in result["history"]] == [0, 1, 2]
    assert result["history"][0]["train_samples"] == len(load_split_labels(data, "subaction_event", "train").labels)
    assert [f.epoch for f in ckpt.listing(run)] == [0, 1, 2]
    for found in ckpt.listing(run):  # every checkpoint complete, its state verified against the manifest
        ckpt._open(found).load_state()
    results = evaluate(run, say=quiet)
    assert storage.exists(storage.join(run, "eval", "metrics.json"))
    assert results["run"]["clips"] == len(load_split_labels(data, "subaction_event", "val").labels)


def test_a_split_without_labels_is_a_clear_error(tiny_store, tmp_path):
    data, _ = tiny_store
    with pytest.raises(ValueError, match="splits in the manifest: train, val"):
        run_training(tiny_config(data, str(tmp_path), train_split="test"), say=quiet)


def test_more_workers_than_clips_is_a_clear_error(tiny_store, tmp_path):
    data, _ = tiny_store
    clips = len(load_split_labels(data, "subaction_event", "train").labels)
    with pytest.raises(ValueError, match=f"{clips} train clips of task subaction_event cannot feed {clips + 1} "):
        # Workers small enough for the cluster, so that the capacity check lets it through.
        run_training(tiny_config(data, str(tmp_path), workers=clips + 1, cpus_per_worker=0.04), say=quiet)
    assert not list(tmp_path.iterdir())  # nothing written


def test_element_tasks_know_each_class_set_and_event(tiny_store):
    data, _ = tiny_store
    gym99 = load_split_labels(data, "gym99", "train")
    assert len(gym99.levels["set"]) == len(gym99.levels["event"]) == gym99.num_classes == 99
    assert gym99.levels["set"][0] == 1 and gym99.levels["event"][0] == 1  # Gym99 starts with vault
    assert load_split_labels(data, "subaction_event", "train").levels == {}


def latest_weights(run: str) -> dict:
    """The weight tensors of ``run``'s newest checkpoint, by name."""
    state = ckpt.find_latest(run).load_state()["model"]
    return {k: v for k, v in state.items() if k.endswith("weight")}


def largest_gap(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.e2e
def test_the_seed_sets_the_initial_weights(still_flow_run):
    # At a learning rate of 1e-9 an epoch leaves the weights where they started: those of
    # the model this process builds after seeding with the run's seed (1), not with
    # another (0, what a worker that left the seed alone or fixed it would give).
    import torch

    from finegym_ray.train.loop import model_for

    config, result = still_flow_run
    trained = latest_weights(result["run"])

    def built(seed: int) -> dict:
        torch.manual_seed(seed)
        state = model_for(config, len(result["class_names"]), pretrained=True).state_dict()
        return {k: state[k] for k in trained}

    assert largest_gap(trained, built(1)) < 1e-6
    assert largest_gap(trained, built(0)) > 1e-3


def test_a_state_that_would_run_code_is_refused_on_the_driver_before_training(ray_cluster, tiny_store, tmp_path):
    from finegym_ray.config import to_yaml
    from finegym_ray.store import recorded_hash as settings_hash
    from finegym_ray.train.config import with_absolute_paths
    from tests.train.test_evaluate import _make_hostile

    data, _ = tiny_store
    runs = tmp_path / "runs"
    # A run with one checkpoint of the settings below, made to run code on unpickling,
    # its manifest vouching for it: the same command would resume it.
    config = with_absolute_paths(tiny_config(data, str(runs), epochs=2, name="tsm"))
    run = str(runs / "tsm")
    storage.write_text(storage.join(run, "config.yaml"), to_yaml(config))
    ckpt.write(run, 0, state={"model": {}}, config_yaml=to_yaml(config),
               meta={"data_hash": settings_hash(data), "history": [{"epoch": 0}]})
    marker = tmp_path / "marker"
    _make_hostile(run, marker)
    r = subprocess.run(_train_cli(ray_cluster, data, str(runs), "--set", "epochs=2", "--name", "tsm"),
                       capture_output=True, text=True, timeout=300)
    errors = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(errors) == 1, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    assert errors[0].startswith("finegym-ray: error: ") and f"{run}/epoch_0001/state.pt refused" in errors[0]
    assert "weights_only" not in r.stdout + r.stderr and not marker.exists()
    assert "epoch 1/2" not in r.stdout  # refused before a worker trained


def test_a_run_config_that_is_an_alias_bomb_is_one_error_naming_it(tmp_path):
    from finegym_ray.config import ConfigError
    from finegym_ray.train.run import _check_same_config
    from tests.support.hostile import alias_bomb

    config = tiny_config(str(tmp_path / "data"), str(tmp_path / "runs"), name="bomb")
    where = tmp_path / "runs" / "bomb" / "config.yaml"
    where.parent.mkdir(parents=True)
    where.write_text(alias_bomb())
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"{where}: .*alias"):
        _check_same_config(str(where.parent), config)
    assert time.monotonic() - started < 5
