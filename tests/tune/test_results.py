"""Sweep results: ranking, the text table, and the files write_results leaves."""

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from finegym_ray.config import load_config
from finegym_ray.storage import read_parquet
from finegym_ray.train.config import TrainConfig
from finegym_ray.tune.config import SweepConfig, TrialResources, trial_config
from finegym_ray.tune.results import TrialRecord, best_trial_id, format_table, results_table, write_results

SPACE = {"lr": {"loguniform": [1e-4, 0.1]}, "model": {"choice": ["tsn", "tsm", "trn"]},
         "blocks": {"grid": [None, [1, 1, 1, 1]]}}


def _epoch(epoch, val=None, loss=1.0):
    m = {"epoch": epoch, "train_loss": loss, "train_top1": 0.3, "train_mean_class": 0.2, "epoch_s": 1.5}
    if val is not None:
        m.update(val_mean_class=val, val_top1=val + 0.05, val_loss=2.0 - val)
    return m


def _trials():
    return [
        TrialRecord("c", "runs/c", {"lr": 0.1, "model": "tsm", "blocks": None}, "finished",
                    [_epoch(0), _epoch(1)]),  # never validated
        TrialRecord("a", "runs/a", {"lr": 0.01, "model": "tsm", "blocks": [1, 1, 1, 1]}, "finished",
                    # A restart re-reported epoch 1: its newest report (0.5) is the one kept.
                    [_epoch(0, 0.3), _epoch(1, 0.1), _epoch(1, 0.5), _epoch(2, 0.45)]),
        TrialRecord("d", "runs/d", {"lr": 0.003, "model": "trn", "blocks": None}, "errored",
                    [_epoch(0, 0.9)], error="CUDA out of memory"),
        TrialRecord("b", "runs/b", {"lr": 0.001, "model": "tsn", "blocks": None}, "stopped",
                    [_epoch(0, 0.2)]),
        TrialRecord("e", "runs/e", {"lr": 0.02, "model": "tsn", "blocks": None}, "running", [_epoch(0, 0.4)]),
    ]


def test_table_ranks_clean_trials_then_errored_then_those_without_the_metric():
    table = results_table(_trials(), metric="val_mean_class", mode="max", params=list(SPACE))
    rows = {r["trial_id"]: r for r in table.to_pylist()}
    assert table.column("trial_id").to_pylist() == ["a", "e", "b", "d", "c"]
    assert table.column_names == ["trial_id", "status", "lr", "model", "blocks", "best_val_mean_class", "best_epoch",
                                  "last_val_mean_class", "epochs_run", "stopped", "train_s", "run"]
    a = rows["a"]
    # The second epoch (index 1), counted from 1 as people read it.
    assert (a["best_val_mean_class"], a["best_epoch"], a["last_val_mean_class"]) == (0.5, 2, 0.45)
    assert (a["epochs_run"], a["train_s"], a["blocks"]) == (3, 4.5, "[1, 1, 1, 1]")
    assert [rows[t]["stopped"] for t in "abcde"] == [False, True, False, False, False]
    assert rows["c"]["best_val_mean_class"] is None and rows["c"]["best_epoch"] is None and rows["c"]["epochs_run"] == 2
    assert best_trial_id(table, metric="val_mean_class") == "a"


def test_min_mode_and_a_table_with_no_metric_at_all():
    table = results_table(_trials(), metric="val_loss", mode="min", params=["lr"])
    assert table.column("trial_id").to_pylist()[:3] == ["a", "e", "b"]  # lowest loss = highest accuracy here
    table = results_table([_trials()[0]], metric="val_top1", mode="max", params=["lr"])
    assert best_trial_id(table, metric="val_top1") is None and table.column("best_val_top1").null_count == 1


def test_format_table_marks_the_best_and_formats_by_metric():
    text = format_table(results_table(_trials(), metric="val_mean_class", mode="max", params=["lr", "model"]),
                        metric="val_mean_class")
    lines = text.splitlines()
    assert len(lines) == 6 and len({len(line) for line in lines}) == 1  # aligned: the last column is right-aligned
    assert lines[1].startswith("* a ") and "50.0%" in lines[1] and "45.0%" in lines[1]
    assert not any(line.startswith("*") for line in lines[2:])
    assert lines[0].index("best_val_mean_class") > lines[0].index("model")
    assert "-" in lines[-1].split()  # c has no value
    loss = format_table(results_table(_trials(), metric="val_loss", mode="min", params=[]), metric="val_loss")
    assert "1.500" in loss.splitlines()[1]


@pytest.fixture
def written(tmp_path):
    base = TrainConfig(epochs=3, runs=str(tmp_path / "runs"), name="ignored")
    sweep = SweepConfig(name="s1", space=SPACE, resources=TrialResources(workers=2, cpus_per_worker=2.0))
    out = str(tmp_path / "sweeps" / "s1")
    return write_results(out, _trials(), sweep=sweep, base=base), base, sweep


def test_csv_holds_the_parquet_table(written):
    uris, _, _ = written
    parquet = read_parquet(uris["results"]).to_pandas()
    csv = pd.read_csv(uris["csv"])
    assert list(csv.columns) == list(parquet.columns)
    pd.testing.assert_frame_equal(csv, parquet, check_dtype=False)


def test_best_yaml_trains_the_best_trial_as_a_new_run(written):
    uris, base, sweep = written
    best = load_config(TrainConfig, uris["best_config"])
    trial = trial_config(base, _trials()[1].params, runs="sweeps/s1/trials", name="a", resources=sweep.resources)
    assert best == replace(trial, name="s1_best", runs=base.runs)
    assert (best.lr, best.blocks, best.workers, best.use_gpu) == (0.01, [1, 1, 1, 1], 2, False)


def test_one_decodable_plot_per_param(written):
    uris, _, _ = written
    assert [Path(p).name for p in uris["plots"]] == ["lr.png", "model.png", "blocks.png"]
    for uri in uris["plots"]:
        img = cv2.imdecode(np.frombuffer(Path(uri).read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (420, 640, 3)
        assert (img < 128).any(axis=2).mean() > 0.005  # something is drawn beyond the white page


def test_no_best_yaml_and_no_plots_without_the_metric(tmp_path):
    uris = write_results(str(tmp_path), [_trials()[0], _trials()[2]], sweep=SweepConfig(name="s", space=SPACE),
                         base=TrainConfig())
    assert uris["best_config"] is None and uris["plots"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.parquet"]


def test_unknown_status_is_refused():
    with pytest.raises(ValueError, match="status must be one of"):
        TrialRecord("x", "runs/x", {}, "done", [])
