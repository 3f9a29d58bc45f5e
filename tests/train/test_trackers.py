"""Training runs in MLflow and W&B (train/trackers.py), read back through MLflow's client
and the files W&B writes: the resolved config as params, one value per epoch although two
workers train (only rank 0 logs), a resume that continues the same MLflow run, no
credential anywhere, and a missing extra named before Ray starts."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest

from finegym_ray.cli import main
from finegym_ray.errors import InputError
from finegym_ray.localize.config import LocalizeConfig
from finegym_ray.train import checkpoint as ckpt
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.run import run_training
from finegym_ray.train.trackers import EXPERIMENT, RUN_TAG, tracking_uri
from tests.train.test_train import quiet, tiny_config

SECRET = "not-a-real-key-0123456789abcdef0123456789"


def test_tracker_settings_are_checked_as_the_others_are():
    with pytest.raises(InputError, match="no password in the URI"):
        TrainConfig(mlflow="http://me:secret@mlflow.example:5000")
    with pytest.raises(InputError, match="wandb must be a W&B project name"):
        TrainConfig(wandb="team/project")  # the entity goes in WANDB_ENTITY
    with pytest.raises(InputError, match="mlflow must be an MLflow tracking URI"):
        LocalizeConfig(mlflow="file:./my runs")
    assert TrainConfig(mlflow="http://mlflow.example:5000", wandb="finegym").wandb == "finegym"
    # A local store is made absolute for workers that run in another directory; a server stays.
    assert tracking_uri("file:./mlruns") == Path("mlruns").resolve().as_uri()
    assert tracking_uri("mlruns") == Path("mlruns").resolve().as_uri()
    assert tracking_uri("http://mlflow.example:5000") == "http://mlflow.example:5000"


def test_a_missing_tracker_package_is_named_with_its_extra_before_ray_starts(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # not importable, as where the extra is not installed
    # The data does not exist: the tracker's package is checked first, and Ray starts after both.
    assert main(["train", "--data", "/nonexistent/store", "--set", "wandb=finegym"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'finegym-ray[wandb]'" in err[0], err


def _wandb_records(path: Path) -> list:
    """The records of a W&B run file (run-ID.wandb). W&B has no public reader of it: a
    7-byte file header, then LevelDB's log format (32 KiB blocks of chunks, each with a
    7-byte header: CRC, length, type full/first/middle/last) framing W&B's protobuf
    Records."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack_from("<HB", data, pos + 4)
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, or the last chunk of a record
            records.append(Record.FromString(pending))
            pending = b""
    return records


def _wandb_history(path: Path) -> dict[int, dict]:
    """step -> the metrics a W&B run file holds for it."""
    history = {}
    for record in _wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            items = {".".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item}
            history[record.history.step.num] = {k: v for k, v in items.items() if not k.startswith("_")}
    return history


@pytest.mark.e2e
def test_a_run_logs_to_mlflow_and_wandb_and_its_resume_continues_the_mlflow_run(tiny_store, tmp_path,
                                                                                 monkeypatch):
    from mlflow.tracking import MlflowClient

    data, _ = tiny_store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to write a local folder
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_API_KEY", SECRET)  # must stay in the environment
    store = (tmp_path / "mlruns").as_uri()
    config = tiny_config(data, str(tmp_path / "runs"), epochs=2, mlflow=store, wandb="finegym-tests")
    first = run_training(config, say=quiet)
    run = Path(first["run"])
    recorded = ckpt.find_latest(str(run)).meta["trackers"]
    # The last checkpoint lost: the same run resumes after epoch 1 and trains epoch 2 again, on
    # one worker (a setting a resume may change, which MLflow would refuse as a changed param).
    shutil.rmtree(run / "epoch_0002")
    second = run_training(dataclasses.replace(config, workers=1, cpus_per_worker=1.0), say=quiet)

    client = MlflowClient(store)
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert mlflow_run.info.run_id == recorded["mlflow"]["run_id"]
    assert mlflow_run.info.run_name == config.run_name and mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.tags[RUN_TAG] == first["run"]
    params = mlflow_run.data.params
    assert set(params) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert params["model"] == "tsm" and params["workers"] == "2" and params["data"] == data  # the first session's
    loss = sorted(client.get_metric_history(mlflow_run.info.run_id, "train_loss"), key=lambda m: m.timestamp)
    # Step: epochs done. One value per epoch of each training (rank 0's), epoch 2 twice.
    assert [m.step for m in loss] == [1, 2, 2]
    assert [m.value for m in loss] == pytest.approx([m["train_loss"] for m in first["history"]]
                                                    + [second["history"][1]["train_loss"]])
    val = client.get_metric_history(mlflow_run.info.run_id, "val_top1")
    assert sorted(m.step for m in val) == [1, 2, 2] and "epoch" not in mlflow_run.data.metrics

    # W&B: an offline run per training session, both of the one W&B run id.
    wandb_id = recorded["wandb"]["id"]
    files = sorted((tmp_path / "wandb" / "wandb").glob(f"offline-run-*-{wandb_id}/run-{wandb_id}.wandb"))
    assert len(files) == 2, files
    histories = [_wandb_history(f) for f in files]
    assert sorted(histories[0]) == [1, 2] and sorted(histories[1]) == [2]
    assert histories[0][1]["train_loss"] == pytest.approx(first["history"][0]["train_loss"])
    assert histories[1][2]["val_top1"] == pytest.approx(second["history"][1]["val_top1"])
    (started,) = [r.run for r in _wandb_records(files[0]) if r.WhichOneof("record_type") == "run"]
    assert started.display_name == config.run_name and started.project == "finegym-tests"
    assert json.loads({i.key: i.value_json for i in started.config.update}["model"]) == "tsm"

    # The key is in no file of the run, of MLflow's store or of W&B's.
    for root in (run, tmp_path / "mlruns", tmp_path / "wandb"):
        leaked = [p for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
        assert not leaked, leaked
