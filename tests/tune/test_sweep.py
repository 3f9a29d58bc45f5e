"""Sweeps on the session's real 2-CPU Ray cluster: ASHA stops a trial and the next one
starts, results land in the sweep folder, and a sweep whose driver was killed resumes
without rerunning finished trials or restarting an unfinished one from epoch 0."""

from __future__ import annotations

import glob
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pyarrow.parquet as pq
import pytest
import yaml

from finegym_ray import storage
from finegym_ray.config import load_config
from finegym_ray.train import checkpoint as ckpt
from finegym_ray.train.config import TrainConfig
from finegym_ray.tune.config import load_sweep
from finegym_ray.tune.state import SNAPSHOT, state_key
from finegym_ray.tune.sweep import run_sweep
from tests.support.rays import free_placement_groups_of_ended_jobs, notebook_ray, run_driver

# Sweeps of real trials on Ray Tune.
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# A tiny TSN on the subaction_event task, validated on its training clips (the tiny SynGym's val
# split may be empty). One worker of one CPU leaves the other CPU to Ray Data.
TRAIN = {"task": "subaction_event", "model": "tsn", "depth": 10, "base_width": 8, "segments": 2, "crop": 32,
         "test_short": 48, "batch_size": 4, "test_views": 1, "test_crops": 1, "val_split": "train",
         "optimizer": "adamw"}


def sweep_file(tmp_path: Path, data: str, **settings) -> Path:
    path = tmp_path / "sweep.yaml"
    body = {"train": {**TRAIN, "data": data, "runs": str(tmp_path / "runs")}, "sweeps": str(tmp_path / "sweeps"),
            "resources": {"workers": 1, "cpus_per_worker": 1.0}, **settings}
    path.write_text(yaml.safe_dump(body))
    return path


def _tune_command(path: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "finegym_ray.cli", "tune", "--config", str(path), "--address", address]


def test_a_killed_sweep_resumes_without_rerunning_or_restarting_trials(tiny_store, ray_cluster, tmp_path):
    data, _ = tiny_store
    path = sweep_file(tmp_path, data, space={"seed": {"grid": [0, 1]}}, max_concurrent_trials=1,
                      train={**TRAIN, "data": data, "runs": str(tmp_path / "runs"), "epochs": 3})
    trials = tmp_path / "sweeps" / "sweep" / "trials"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(_tune_command(path, ray_cluster.address), cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Killed once the first trial has finished and the second has a checkpoint.
        deadline = time.time() + 400
        while time.time() < deadline and driver.poll() is None:
            runs = sorted(trials.glob("*")) if trials.exists() else []
            done = [r for r in runs if (r / "epoch_0003" / "manifest.json").exists()]
            started = [r for r in runs if r not in done and (r / "epoch_0001" / "manifest.json").exists()]
            if done and started:
                break
            time.sleep(0.2)  # later epochs of the tiny model take about a second
        assert driver.poll() is None, driver.stdout.read()
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    (first,), (second,) = done, started
    first_mtime = (first / "epoch_0003" / "manifest.json").stat().st_mtime
    before = ckpt.find_latest(str(second)).meta["history"]

    again = subprocess.run(_tune_command(path, ray_cluster.address), cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=600)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out
    assert "resuming the sweep" in out
    assert f"trial {first.name} started" not in out  # finished: not rerun
    assert (first / "epoch_0003" / "manifest.json").stat().st_mtime == first_mtime
    after = ckpt.find_latest(str(second)).meta["history"]
    # Continued after its newest checkpoint: the epochs before it are the ones trained
    # before the kill, not retrained.
    assert [m["epoch"] for m in after] == [0, 1, 2]
    assert after[:len(before)] == before
    table = pq.read_table(tmp_path / "sweeps" / "sweep" / "results" / "results.parquet").to_pylist()
    assert sorted(r["status"] for r in table) == ["finished", "finished"]

    # Another search in the same folder would mix two sweeps' trials: refused.
    sweep, base = load_sweep(str(path), ["space.seed.grid=[0, 1, 2]"])
    with pytest.raises(ValueError, match="with other settings \\(space\\)"):
        run_sweep(sweep, base, say=lambda m: None)
    free_placement_groups_of_ended_jobs(ray_cluster.address)  # what the killed driver's trial may have left



class _Planted:
    """Unpickling this creates MARKER: what a planted pickle could do instead of any command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _plant_in_a_trial(state_uri: str, marker: Path) -> None:
    """Replace the first trial's results in Tune's experiment state (a JSON file whose
    trials carry cloudpickled fields, hex-encoded) with a planted pickle."""
    state = json.loads(storage.read_text(state_uri))
    trial = json.loads(state["trial_data"][0][0])
    trial["results"] = pickle.dumps(_Planted(marker)).hex()
    state["trial_data"][0][0] = json.dumps(trial)
    storage.write_text(state_uri, json.dumps(state))


def test_asha_stops_trials_and_every_trial_runs_on_a_ray_of_its_own_beside_a_notebooks_ray(tiny_store, tmp_path):
    """`tune` without --address starts a Ray of its own while another user's Ray (a
    notebook's ray.init()) runs on this host. Each trial that ASHA stops must still free
    its CPU (Ray Train's placement group cleaner must find this Ray among the others),
    or the next trial waits forever."""
    data, _ = tiny_store
    # The data given relative to where the sweep starts: trials run in folders of their own.
    data = os.path.relpath(data, tmp_path)
    # The first trial learns (AdamW at lr 0.01); the others jump a whole unit per step
    # (lr 1: Adam's steps are about lr whatever the gradient) and their training loss
    # after the first epoch is several times the first trial's, so ASHA stops them at
    # its first rung, and each stop must free the CPU for the next trial
    # (ray-project/ray#54305). Three epochs: a stop reaches a trial asynchronously, and
    # these epochs take about a second, so a trial may finish its second epoch before
    # the stop lands (seen once); with three it still ends short of its last.
    path = sweep_file(tmp_path, data, space={"lr": {"grid": [0.01, 1.0, 1.0]}}, metric="train_loss", mode="min",
                      scheduler="asha", grace_period=1, reduction_factor=2, max_concurrent_trials=1,
                      train={**TRAIN, "data": data, "runs": str(tmp_path / "runs"), "epochs": 3})
    command = [sys.executable, "-m", "finegym_ray.cli", "tune", "--config", str(path)]
    with notebook_ray():
        try:
            r = run_driver(command, timeout_s=900, cwd=str(tmp_path))
        except subprocess.TimeoutExpired as e:
            pytest.fail(f"the sweep did not end in {e.timeout} s:\n{e.stdout[-3000:]}\n{e.stderr[-2000:]}")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    folder = tmp_path / "sweeps" / "sweep"
    table = pq.read_table(folder / "results" / "results.parquet").to_pylist()
    assert len(table) == 3 and all(t["status"] in ("finished", "stopped") for t in table), table
    assert table[0]["lr"] == 0.01 and table[0]["status"] == "finished" and table[0]["epochs_run"] == 3
    assert sum(t["stopped"] for t in table) >= 1 and all(t["epochs_run"] >= 1 for t in table)
    assert any("stopped by ASHA after 1 of 3 epochs" in line for line in lines), lines
    assert any(line.startswith("[tune] trial ") and "[3/3 done" in line for line in lines), lines

    assert (folder / "results" / "results.csv").read_text().count("\n") == 4
    best = load_config(TrainConfig, folder / "results" / "best.yaml")
    assert best.lr == 0.01 and best.name == "sweep_best" and best.runs == str(tmp_path / "runs")
    assert best.data == os.path.normpath(tmp_path / data)  # ready to train from any folder
    png = cv2.imread(str(folder / "results" / "lr.png"))
    assert png is not None and png.shape[0] > 100
    for trial_id in (t["trial_id"] for t in table):  # Tune's TensorBoard files, and each trial's own training run
        assert glob.glob(str(folder / trial_id / "events.out.tfevents.*")), trial_id
        assert ckpt.find_latest(str(folder / "trials" / trial_id)) is not None


def test_a_sweep_on_s3_restores_its_signed_state_and_refuses_a_pickle_planted_there(tiny_store, ray_cluster,
                                                                                    s3_prefix, tmp_path,
                                                                                    monkeypatch):
    from mlflow.tracking import MlflowClient

    data, _ = tiny_store
    # The trial logs to MLflow too (train/trackers.py): a run of its own in the sweep's experiment.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to write a local folder
    store = (tmp_path / "mlruns").as_uri()
    path = sweep_file(tmp_path, data, space={"seed": {"grid": [0]}}, sweeps=f"{s3_prefix}/sweeps",
                      train={**TRAIN, "data": data, "runs": str(tmp_path / "runs"), "epochs": 1, "mlflow": store})
    sweep, base = load_sweep(str(path), [])
    first = run_sweep(sweep, base, say=lambda m: None)
    folder = first["folder"]
    (trial,) = first["trials"]
    client = MlflowClient(store)
    (logged,) = client.search_runs([client.get_experiment_by_name(sweep.name).experiment_id])
    assert logged.info.run_name == trial.trial_id and logged.data.params["seed"] == "0"
    assert [m.step for m in client.get_metric_history(logged.info.run_id, "train_loss")] == [1]
    assert storage.exists(storage.join(folder, SNAPSHOT))
    # Tune's own copies of its state may go: what it restores from is the signed snapshot.
    for uri in storage.list_uris(folder):
        name = uri[len(folder) + 1:]
        if name == "tuner.pkl" or name.startswith("experiment_state-"):
            storage.delete(uri)

    lines = []
    again = run_sweep(sweep, base, say=lines.append)
    assert f"resuming the sweep in {folder}" in lines, lines
    assert not [line for line in lines if " started " in line], lines
    assert [(t.trial_id, t.status, t.history) for t in again["trials"]] == [(trial.trial_id, "finished",
                                                                            trial.history)]
    key, _ = state_key()
    assert not [uri for uri in storage.list_uris(folder) if key in storage.read_bytes(uri)]

    # A pickle planted in the folder is refused before anything reads it: by a new driver,
    # in one line naming the file, and by this process.
    marker = tmp_path / "planted-code-ran"
    tuner = storage.join(folder, "tuner.pkl")
    signed = storage.read_bytes(tuner)
    storage.write_bytes(tuner, pickle.dumps(_Planted(marker)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    refused = subprocess.run(_tune_command(path, ray_cluster.address), cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert not marker.exists()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.count("\n") == 1 and "tuner.pkl" in refused.stderr, refused.stderr
    storage.write_bytes(tuner, signed)
    # The newest of Tune's experiment states (one per driver; their names hold its start time).
    state_uri = max(uri for uri in storage.list_uris(folder) if uri[len(folder) + 1:].startswith("experiment_state-"))
    _plant_in_a_trial(state_uri, marker)
    with pytest.raises(ValueError, match=f"{state_uri.rsplit('/', 1)[-1]} was changed after this machine's "
                                         "sweep signed it"):
        run_sweep(sweep, base, say=lambda m: None)
    assert not marker.exists()


def test_an_errored_trial_is_recorded_from_its_error_text(ray_cluster, tmp_path):
    # Tune's pickled copy of a trial's error (error.pkl) is never read back from the
    # sweep folder (tune/state.py): the error comes from the trial's error.txt.
    missing = tmp_path / "no-such-store"
    path = sweep_file(tmp_path, str(missing), space={"seed": {"grid": [0]}},
                      train={**TRAIN, "data": str(missing), "runs": str(tmp_path / "runs"), "epochs": 1})
    sweep, base = load_sweep(str(path), [])
    (trial,) = run_sweep(sweep, base, say=lambda m: None)["trials"]
    assert trial.status == "errored" and str(missing) in trial.error, trial
    assert list((tmp_path / "sweeps" / "sweep").glob("*/error.pkl"))  # Tune wrote it, for nobody to read
