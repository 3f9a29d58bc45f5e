"""The README's main command, as a user runs it (a real local Ray, small settings)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tests.test_output import assert_no_ray_internals, assert_progress_with_rate, assert_some_ray_internals


def test_demo_runs_then_reuses_its_synthetic_data(tmp_path):
    tiny_training = ["epochs=1", "base_width=8", "segments=2", "crop=32", "test_short=32", "input_width=48"]
    cmd = [sys.executable, "-m", "finegym_ray.cli", "demo", "--out", str(tmp_path / "d"), "--videos", "2",
           "--set", "width=192", "--set", "height=108", *[a for o in tiny_training for a in ("--train-set", o)]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "[synth] 2/2 videos" in r.stdout and "unmatched split keys: 0" in r.stdout
    manifest = tmp_path / "d" / "store" / "manifest"
    assert str(manifest) in r.stdout
    rows = pq.read_table(manifest / "subactions.parquet").num_rows
    assert rows > 0
    clips = pq.read_table(tmp_path / "d" / "store" / "clips")
    assert clips.num_rows == rows and "units: " in r.stdout and f"clips: {rows} written" in r.stdout
    # Trained one epoch, evaluated, printed the metrics table.
    run = tmp_path / "d" / "store" / "runs" / "tsm_flow_set"
    assert (run / "epoch_0001" / "state.pt").exists() and (run / "eval" / "metrics.json").exists()
    assert "mean class" in r.stdout and "tsm_flow_set" in r.stdout
    # The project's lines only: one line of settings (all of them in demo.yaml), progress
    # with rates, no Ray internals.
    assert_no_ray_internals(r.stdout + r.stderr)
    settings = [line for line in r.stdout.splitlines() if line.startswith("[demo] synth videos=2")]
    assert len(settings) == 1 and f"all settings in {tmp_path / 'd' / 'store' / 'demo.yaml'}" in settings[0]
    assert_progress_with_rate(r.stdout, "preprocess") and assert_progress_with_rate(r.stdout, "train")
    assert re.search(r"^\[ray\] cluster: 1 node\(s\), \d+ CPUs", r.stdout, re.M) and "[manifest] summary:\n" in r.stdout

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" in again.stdout and "[synth] 1/2" not in again.stdout
    assert pq.read_table(manifest / "subactions.parquet").num_rows == rows
    assert "0 done" in again.stdout and pq.read_table(tmp_path / "d" / "store" / "clips").num_rows == rows
    assert "has trained all 1 epochs" in again.stdout and not (run / "epoch_0002").exists()


def _demo_cli(tmp_path, store, *extra: str) -> list[str]:
    return [sys.executable, "-m", "finegym_ray.cli", "demo", "--smoke-test", "--no-train", "--out",
            str(tmp_path / "d"), "--store", str(store), *extra]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_demo_refuses_a_store_it_did_not_make_and_touches_nothing(tmp_path):
    store = tmp_path / "store"
    for name in ("clips/real-unit.parquet", "runs/x/epoch_0049/state.pt"):
        (store / name).parent.mkdir(parents=True, exist_ok=True)
        (store / name).write_bytes(b"the user's own data")
    before = _tree(store)
    r = subprocess.run(_demo_cli(tmp_path, store), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and str(store) in errors[0] and "not made by the demo" in errors[0], r.stderr
    assert _tree(store) == before


def test_changed_settings_replace_only_what_the_demo_made(tmp_path):
    store = tmp_path / "store"
    first = subprocess.run(_demo_cli(tmp_path, store), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    # The demo's run (as a training would leave it) and a user's own run beside it.
    for name in ("runs/tsm_flow_set/epoch_0001/state.pt", "runs/mine/epoch_0003/state.pt"):
        (store / name).parent.mkdir(parents=True, exist_ok=True)
        (store / name).write_bytes(b"weights")
    marker = yaml.safe_load((store / "demo.yaml").read_text())
    marker["runs"] = ["tsm_flow_set"]
    (store / "demo.yaml").write_text(yaml.safe_dump(marker))
    mine = _tree(store / "runs" / "mine")

    # A bad preprocessing setting of the demo: one line naming it, before anything runs.
    bad = subprocess.run(_demo_cli(tmp_path, store, "--preprocess-set", "short_sid=64"), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "short_sid" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, \
        bad.stderr
    again = subprocess.run(_demo_cli(tmp_path, store, "--set", "noise=3", "--preprocess-set", "jpeg_quality=85",
                                     "--verbose"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert_some_ray_internals(again.stdout + again.stderr)  # --verbose: Ray prints as it does
    said = [line for line in again.stdout.splitlines() if "settings changed" in line]
    assert len(said) == 1 and "noise 2.0 -> 3.0" in said[0] and "tsm_flow_set" in said[0], again.stdout[-3000:]
    assert "jpeg_quality" in said[0]  # the demo's preprocessing settings take --preprocess-set
    assert json.loads((store / "preprocess.json").read_text())["settings"]["jpeg_quality"] == 85
    assert _tree(store / "runs" / "mine") == mine
    assert not list((store / "runs").glob("tsm_flow_set/**/*.pt"))
    assert pq.read_table(store / "clips").num_rows > 0  # cut again from the new videos
    assert yaml.safe_load((store / "demo.yaml").read_text())["synth"]["noise"] == 3.0


def test_the_cluster_is_described_in_words():
    from finegym_ray.demo import describe_cluster

    line = describe_cluster({"CPU": 2.0, "node:192.0.2.2": 1.0, "node:__internal_head__": 1.0,
                             "memory": 16 * 2**30, "object_store_memory": 7.5 * 2**30})
    assert line == "cluster: 1 node(s), 2 CPUs, 0 GPUs, 16.0 GiB memory, 7.5 GiB object store"
