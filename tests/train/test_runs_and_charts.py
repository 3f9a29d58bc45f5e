"""What users of mmaction2 and Ray expect around a run: `finegym-ray runs` (finished,
partial, running and failed runs, locally and on S3), training curves (TensorBoard
event file and PNG) rebuilt from a history, the labelled confusion chart with its
most-confused pairs, metrics.json without an empty ``levels``, GPUs per worker, and the
address `submit` prints. No training here: the curves of real training runs are checked
in test_train.py's runs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pytest
import torch

from finegym_ray import storage
from finegym_ray.charts import CONFUSION_NOTE, confusion_image
from finegym_ray.cli import main
from finegym_ray.config import to_yaml
from finegym_ray.lease import LEASE_FILE, process_namespace, writer_lease
from finegym_ray.train import checkpoint as ckpt
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.curves import CURVES_PNG, EVENT_FILE, TENSORBOARD_DIR, read_scalars, write_curves
from finegym_ray.train.data import SplitLabels
from finegym_ray.train.evaluate import _say_confused, metrics_of, most_confused, write_report
from finegym_ray.train.runs import FAILED_FILE, list_runs, record_failure
from tests.support.hostile import alias_bomb


def _history(epochs: int, val_every: int = 1) -> list[dict]:
    out = []
    for e in range(epochs):
        m = {"epoch": e, "lr": 0.01, "train_loss": 2.0 - 0.3 * e, "train_top1": 0.2 + 0.1 * e,
             "train_mean_class": 0.15 + 0.1 * e, "epoch_s": 1.5, "data_wait_s": 0.1}
        if (e + 1) % val_every == 0:
            m.update(val_loss=1.9 - 0.2 * e, val_top1=0.3 + 0.05 * e, val_mean_class=[0.25, 0.45, 0.4, 0.42][e % 4])
        out.append(m)
    return out


def _run(root: str, name: str, *, epochs_planned: int, epochs_done: int, model: str = "tsm",
         coverage: dict | None = None) -> str:
    """A run folder as training leaves it: config.yaml and real checkpoints (tiny state);
    ``coverage``: what its meta.json records of its clips (``run.split_coverage``)."""
    from finegym_ray.config import to_yaml

    run = storage.join(root, name)
    # A sweep's trial (name "sweep/trials/t0") records its folder's parent as its runs.
    config = TrainConfig(runs=run.rsplit("/", 1)[0], name=run.rsplit("/", 1)[1], model=model, task="set",
                         epochs=epochs_planned)
    storage.write_text(storage.join(run, "config.yaml"), to_yaml(config))
    history = _history(epochs_done)
    for e in range(epochs_done):
        ckpt.write(run, e, state={"w": torch.zeros(2)}, config_yaml=to_yaml(config),
                   meta={"class_names": ["a", "b"], "data_hash": "x", "history": history[:e + 1],
                         **({"coverage": coverage} if coverage else {})})
    return run


def _gone_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_detectors_run_is_listed_with_its_detector_and_feature_input(tmp_path):
    from finegym_ray.config import to_yaml
    from finegym_ray.localize.config import LocalizeConfig

    # The localization demo trains beside the recognition runs, in the same runs folder.
    config = LocalizeConfig(runs=str(tmp_path), name="syngym_action", epochs=1)
    run = storage.join(str(tmp_path), "syngym_action")
    storage.write_text(storage.join(run, "config.yaml"), to_yaml(config))
    ckpt.write(run, 0, state={"w": torch.zeros(2)}, config_yaml=to_yaml(config),
               meta={"class_names": ["a"], "history": [{"epoch": 0, "train_loss": 1.0}]})
    (row,) = list_runs(str(tmp_path))
    assert (row.model, row.input, row.task, row.state) == ("pyramid", "feat", "classes", "finished")


def test_runs_lists_finished_partial_running_and_failed_runs(tmp_path, capsys):
    root = str(tmp_path / "runs")
    _run(root, "done", epochs_planned=2, epochs_done=2)
    # Trained where a video of the val split was missing: 3 of its 4 labelled clips exist.
    _run(root, "partial", epochs_planned=1, epochs_done=1,
         coverage={"train": {"clips": 20, "labelled": 22}, "val": {"clips": 3, "labelled": 4}})
    _run(root, "stopped", epochs_planned=4, epochs_done=1, model="tsn")
    record_failure(_run(root, "raised", epochs_planned=3, epochs_done=1), RuntimeError("worker died\nmore lines"))
    killed = _run(root, "killed", epochs_planned=3, epochs_done=2)
    # What a driver killed with kill -9 leaves: its lease, naming a process that is gone.
    storage.write_text(storage.join(killed, LEASE_FILE), json.dumps(
        {"token": "t", "user": "u", "host": socket.gethostname(), "pid": _gone_pid(), "process_start": 1,
         "namespace": process_namespace(), "what": "train killed", "started": time.time(), "heartbeat": time.time()}))
    # A sweep's trials under a lease this process holds: running.
    _run(root, "sweep/trials/t0", epochs_planned=3, epochs_done=1)
    _run(root, "sweep/trials/t1", epochs_planned=1, epochs_done=1)
    storage.write_text(storage.join(root, "store", "config.yaml"), "short_side: 64\n")  # preprocessing's, not a run

    with writer_lease(storage.join(root, "sweep"), what="tune sweep"):
        rows = {r.name: r for r in list_runs(root)}
        assert main(["runs", root]) == 0
        table = capsys.readouterr().out
    assert set(rows) == {"done", "partial", "stopped", "raised", "killed", "sweep/trials/t0", "sweep/trials/t1"}
    assert {n: r.state for n, r in rows.items()} == {
        "done": "finished", "partial": "finished", "stopped": "partial", "raised": "failed", "killed": "failed",
        "sweep/trials/t0": "running", "sweep/trials/t1": "finished"}
    done = rows["done"]
    assert (done.model, done.input, done.task, done.epochs_done, done.epochs_planned) == ("tsm", "rgb", "set", 2, 2)
    assert (done.best_epoch, done.best_mean_class, done.last_epoch) == (2, 0.45, 2)
    assert done.best_top1 == pytest.approx(0.35) and done.last_top1 == pytest.approx(0.35)
    assert rows["stopped"].model == "tsn" and rows["stopped"].epochs_done == 1
    assert "RuntimeError: worker died" in rows["raised"].note
    assert (tmp_path / "runs" / "raised" / FAILED_FILE).is_file()
    assert "is gone" in rows["killed"].note
    lines = {line.split()[0]: line for line in table.splitlines() if line and not line.startswith(" ")}
    assert lines["done"].split()[4:] == ["2/2", "45.0%", "35.0%", "2", "45.0%", "35.0%", "-", "finished"]
    assert lines["partial"].split()[-2:] == ["3/4", "finished"] and "val clips" in lines["run"]
    assert (rows["partial"].val_clips, rows["partial"].val_labelled) == (3, 4)
    assert lines["stopped"].endswith("partial") and lines["killed"].endswith("failed")
    assert "7 runs under" in table and "2 failed" in table

    assert main(["runs", root, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {r["name"]: (r["val_clips"], r["val_labelled"]) for r in listed}["partial"] == (3, 4)
    assert {r["name"]: r["state"] for r in listed}["sweep/trials/t0"] == "partial"  # the sweep's lease is gone now
    assert main(["runs", str(tmp_path / "nothing")]) == 2
    assert "no such runs folder" in capsys.readouterr().err



def _replace_meta(checkpoint: str, data: bytes) -> None:
    """Give a checkpoint another meta.json, its manifest updated to vouch for it."""
    path = Path(checkpoint)
    manifest = json.loads((path / ckpt.MANIFEST).read_text())
    manifest["files"]["meta.json"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / "meta.json").write_bytes(data)
    (path / ckpt.MANIFEST).write_text(json.dumps(manifest))


def test_hostile_run_files_are_one_line_each_and_every_other_run_still_shows(tmp_path):
    root = tmp_path / "runs"
    _run(str(root), "good", epochs_planned=2, epochs_done=2)
    bomb = alias_bomb() + "model: *i\nepochs: 2\n"
    assert len(bomb.encode()) < 500
    (Path(_run(str(root), "bomb", epochs_planned=2, epochs_done=0)) / "config.yaml").write_text(bomb)
    # Checkpoints whose history holds other things than epoch records, or numbers no
    # fraction can be.
    config = TrainConfig(runs=str(root), name="odd", epochs=3)
    for name, history in [("odd_history", [1, "x", None, [2]]),
                          ("odd_numbers", [{"epoch": 0, "val_mean_class": 10 ** 400, "val_top1": [1]},
                                           {"epoch": "1", "val_mean_class": 0.5}]),
                          ("odd_meta", None)]:
        run = _run(str(root), name, epochs_planned=3, epochs_done=0)
        meta = {"class_names": ["a"], "history": history} if history is not None else {}
        uri = ckpt.write(run, 0, state={"w": torch.zeros(2)}, config_yaml=to_yaml(config), meta=meta)
        if history is None:
            _replace_meta(uri, b"[1, 2]")
    failed = _run(str(root), "odd_failure", epochs_planned=3, epochs_done=1)
    (Path(failed) / FAILED_FILE).write_text("[1, 2]")

    for mode in ([], ["--json"]):
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "finegym_ray.cli", "runs", str(root), *mode],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert time.monotonic() - t0 < 30 and len(r.stdout) < 20_000, len(r.stdout)
        if mode:
            rows = {row["name"]: row for row in json.loads(r.stdout)}
            states = {n: row["state"] for n, row in rows.items()}
            notes = {n: row["note"] for n, row in rows.items()}
            assert (rows["odd_numbers"]["best_mean_class"], rows["odd_numbers"]["best_top1"]) == (None, None)
        else:
            lines = r.stdout.splitlines()
            states = {line.split()[0]: line.split()[-1] for line in lines[1:-1] if not line.startswith(" ")}
            notes = {line.split()[0]: lines[i + 1].strip() for i, line in enumerate(lines[1:-1], 1)
                     if not line.startswith(" ") and lines[i + 1].startswith(" ")}
        # odd_meta: a meta.json that is no JSON object makes its one checkpoint damaged,
        # passed over as resume passes it over, so the run has no epoch done.
        assert states == {"good": "finished", "bomb": "unreadable", "odd_history": "unreadable",
                          "odd_numbers": "partial", "odd_meta": "partial", "odd_failure": "partial"}, r.stdout
        assert "config.yaml" in notes["bomb"] and "alias" in notes["bomb"], notes
        assert "meta.json" in notes["odd_history"] and "history" in notes["odd_history"], notes



def test_runs_and_curves_on_s3(s3_prefix):
    run = _run(s3_prefix, "tsm_rgb_set", epochs_planned=3, epochs_done=3)
    write_curves(run, _history(3))
    (row,) = list_runs(s3_prefix)
    assert (row.name, row.state, row.epochs_done) == ("tsm_rgb_set", "finished", 3)
    scalars = read_scalars(storage.read_bytes(storage.join(run, TENSORBOARD_DIR, EVENT_FILE)))
    assert [s for s, _ in scalars["loss/train"]] == [1, 2, 3]
    assert cv2.imdecode(np.frombuffer(storage.read_bytes(storage.join(run, CURVES_PNG)), np.uint8), 1) is not None


def test_curves_are_rebuilt_from_the_history_so_a_redone_epoch_is_not_duplicated(tmp_path):
    run = str(tmp_path / "run")
    write_curves(run, _history(3, val_every=2))
    # Resumed after epoch 1's checkpoint was lost: epoch 1 trained again, then epoch 2.
    redone = _history(3, val_every=2)
    redone[1]["train_loss"] = 0.5
    write_curves(run, redone[:2])
    write_curves(run, redone)
    files = list((tmp_path / "run" / TENSORBOARD_DIR).iterdir())
    assert [f.name for f in files] == [EVENT_FILE]
    scalars = read_scalars(files[0].read_bytes())
    assert scalars["loss/train"] == [(1, 2.0), (2, 0.5), (3, pytest.approx(1.4))]
    assert [s for s, _ in scalars["accuracy/val_mean_class"]] == [2]  # validated epochs only
    png = cv2.imread(str(tmp_path / "run" / CURVES_PNG))
    assert png.shape == (420, 1000, 3)


def test_confusion_chart_has_class_labels_a_colour_bar_and_its_normalisation():
    names = ["vault", "floor", "beam", "bars"]
    cm = np.array([[8, 2, 0, 0], [1, 9, 0, 0], [0, 0, 5, 5], [0, 0, 0, 0]])
    img, layout = confusion_image(cm, "tsm rgb set", names)
    assert layout["labelled"] == [0, 1, 2, 3]
    cell, top, left = layout["cell"], layout["top"], layout["left"]
    for i in range(4):  # each row's label: ink left of the matrix, at the row's height
        band = img[top + i * cell + 4:top + (i + 1) * cell - 4, :left - 2]
        assert (band < 100).any(), f"no label for row {i}"
    for p in range(4):  # each column's label: ink under the matrix, in the column
        band = img[top + 4 * cell + 4:top + 4 * cell + 60, left + p * cell + 4:left + (p + 1) * cell - 4]
        assert (band < 100).any(), f"no label for column {p}"
    # Rows normalised: row 2 splits 50/50, so its two cells are the same colour.
    cells = [img[top + 2 * cell + 2, left + p * cell + 2].tolist() for p in range(4)]
    assert cells[2] == cells[3] != cells[0]
    # A colour bar: yellow at the top (100 %), dark at the bottom.
    bar = img[top + 2:top + 4 * cell - 2, layout["bar_x"] + 8]
    assert int(bar[0].sum()) > int(bar[-1].sum()) + 200
    assert "normalised" in CONFUSION_NOTE
    # 530 classes still fit, with every n-th labelled.
    big, layout = confusion_image(np.eye(530, dtype=np.int64), "gym530", [f"c{i}" for i in range(530)])
    assert big.shape[0] < 1400 and layout["labelled"][:3] == [0, 5, 10] and layout["labelled"][-1] == 525


def test_many_classes_get_a_most_confused_table_and_levels_only_when_there_are_any(tmp_path):
    k, names = 25, [f"class {i}" for i in range(25)]
    labels = np.repeat(np.arange(k), 4)
    pred = labels.copy()
    pred[[0, 1, 2]] = 7  # class 0 -> 7 three times
    pred[4] = 9  # class 1 -> 9 once
    scores = np.eye(k, dtype=np.float32)[pred]
    _, cm = metrics_of(scores, labels, names)
    pairs = most_confused(cm, names)
    assert [(q["true"], q["predicted"], q["clips"]) for q in pairs] == [(0, 7, 3), (1, 9, 1)]
    assert pairs[0]["share"] == 0.75 and pairs[0]["true_name"] == "class 0"

    table = pa.table({"key": [f"k{i}" for i in range(len(labels))], "label": labels,
                      "scores": list(scores)})
    split = SplitLabels({f"k{i}": int(y) for i, y in enumerate(labels)}, tuple(names))
    out = str(tmp_path / "eval")
    m = write_report(out, table, split, {"model": "tsm", "modality": "rgb", "task": "gym99"})
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "levels" not in saved and "levels" not in m  # not an element task: no set/event level
    assert saved["most_confused"][0]["predicted_name"] == "class 7"
    said = []
    _say_confused(m, said.append)  # what evaluate prints under the run's metrics
    assert said[1:] == ["    0 class 0 -> 7 class 7: 3, 75%", "    1 class 1 -> 9 class 9: 1, 25%"]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "eval" / "confused_pairs.csv").read_text())))
    assert [(r["true_name"], r["predicted_name"], r["clips"]) for r in rows] == [
        ("class 0", "class 7", "3"), ("class 1", "class 9", "1")]
    # An element task's levels are there, filled.
    m, _ = metrics_of(scores, labels, names, {"set": tuple(i // 5 for i in range(k))})
    assert m["levels"]["set"]["top1"] == pytest.approx(96 / 100)


def test_gpus_per_worker_is_validated_and_reaches_the_scaling_config(tmp_path):
    from finegym_ray.train.engine import torch_trainer

    assert TrainConfig(gpus_per_worker=0.25).gpus_per_worker == 0.25
    for bad, match in ((0, "gpus_per_worker"), (1.5, "gpus_per_worker"), (float("nan"), "gpus_per_worker")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(gpus_per_worker=bad)
    with pytest.raises(ValueError, match="needs workers=1"):
        TrainConfig(gpus_per_worker=0.5, workers=2)
    trainer = torch_trainer(lambda _a: None, {}, name="x", runs=str(tmp_path), workers=1, cpus_per_worker=1.0,
                            use_gpu=True, gpus_per_worker=0.25, max_failures=0)
    assert trainer.scaling_config._resources_per_worker_not_none == {"CPU": 1.0, "GPU": 0.25}
    cpu_only = torch_trainer(lambda _a: None, {}, name="x", runs=str(tmp_path), workers=1, cpus_per_worker=1.0,
                             use_gpu=False, gpus_per_worker=0.25, max_failures=0)
    assert cpu_only.scaling_config._resources_per_worker_not_none == {"CPU": 1.0}


def test_submit_goes_to_its_address_over_the_environment_and_says_which(ray_cluster, monkeypatch, capsys):
    from ray.job_submission import JobSubmissionClient

    from finegym_ray.submit import submit

    dashboard = "http://" + ray_cluster.head_node.address_info["webui_url"]
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    jobs = JobSubmissionClient(dashboard)  # made before $RAY_ADDRESS is set, which Ray's client would take

    def submitted(address: str | None) -> str:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert submit("preprocess", address, ["--help"], wait=False) == 0
                break
            except RuntimeError as e:  # a head started moments ago: its job agent is not up yet
                if "No available agent" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(1)
        out = capsys.readouterr().out
        jobs.stop_job(out.split()[1].rstrip(":"))
        return out

    # $RAY_ADDRESS names a cluster where nothing listens: --address wins, and says so.
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1")
    out = submitted(dashboard)
    assert f"  address: {dashboard} (--address {dashboard})" in out and "127.0.0.1:1" not in out, out
    # Without --address, $RAY_ADDRESS names the cluster, and says so.
    monkeypatch.setenv("RAY_ADDRESS", dashboard)
    out = submitted(None)
    assert f"  address: {dashboard} ($RAY_ADDRESS {dashboard})" in out, out
    assert f"ray job logs --address {dashboard} --follow raysubmit_" in out


def test_hierarchy_consistent_predictions_go_event_then_set_then_element():
    from finegym_ray.train.evaluate import hierarchy_metrics

    # Classes 0, 1 in set 10 and 2 in set 11 (event 1); 3, 4, 5 in set 20 (event 2).
    set_of, event_of = (10, 10, 11, 20, 20, 20), (1, 1, 1, 2, 2, 2)
    scores = np.array([[0.25, 0.25, 0.10, 0.30, 0.05, 0.05],  # label 0: the best single class is in event 2
                       [0.05, 0.05, 0.10, 0.40, 0.20, 0.20],  # label 4: right event and set, wrong element
                       [0.40, 0.00, 0.30, 0.10, 0.10, 0.10]])  # label 2: event 1 right, set 10 wins
    labels = np.array([0, 4, 2])
    h = hierarchy_metrics(scores, labels, set_of, event_of)
    assert h["event"]["top1"] == 1.0 and h["set"]["top1"] == pytest.approx(2 / 3)
    assert h["element"]["top1"] == pytest.approx(1 / 3)  # only the first clip's element
    plain, _ = metrics_of(scores, labels, [f"c{i}" for i in range(6)], {"set": set_of, "event": event_of})
    assert plain["top1"] == 0 and plain["hierarchy"] == h
    assert plain["levels"]["event"]["top1"] == pytest.approx(2 / 3)  # the plain element predictions' events
