"""The README's main command, as a user runs it (a real local Ray, small settings)."""

import subprocess
import sys

import pyarrow.parquet as pq


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
    assert (run / "epoch_0000" / "state.pt").exists() and (run / "eval" / "metrics.json").exists()
    assert "mean class" in r.stdout and "tsm_flow_set" in r.stdout

    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing" in again.stdout and "[synth] 1/2" not in again.stdout
    assert pq.read_table(manifest / "subactions.parquet").num_rows == rows
    assert "0 done" in again.stdout and pq.read_table(tmp_path / "d" / "store" / "clips").num_rows == rows
    assert "has trained all 1 epochs" in again.stdout and not (run / "epoch_0001").exists()
