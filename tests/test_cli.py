"""The CLI as a user runs it: real processes, exit codes, messages."""

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

DATA = Path(__file__).parent / "dataset" / "data"


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "finegym_ray.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


def manifest_args(out, split=DATA / "gym4_train_element.txt"):
    return ["manifest", "--annotations", DATA / "annotations.json", "--categories", DATA / "gym4_categories.txt",
            "--sets", DATA / "set_categories.txt", "--splits", split, DATA / "gym4_val_element.txt", "--out", out]


def test_manifest_command(tmp_path):
    r = cli(*manifest_args(tmp_path / "m"))
    assert r.returncode == 0, r.stderr
    assert "sub-actions 4 (4 labelled)" in r.stdout
    assert "3 split keys do not match" in r.stdout
    assert "per split: train 2, val 2" in r.stdout
    assert str(tmp_path / "m" / "subactions.parquet") in r.stdout
    assert pq.read_table(tmp_path / "m" / "events.parquet").num_rows == 4


@pytest.mark.parametrize("content, expect", [
    ("A0xAXXysHUo_E_002184_002237_A_0035_0036 99\n", "gym4_train_element.txt:1: label 99 out of range"),
    ("A0xAXXysHUo_E_002184_002237_A_0035_0036 1\nnot-a-key 1\n", "gym4_train_element.txt:2: not a FineGym instance key"),
])
def test_bad_split_exits_2_with_one_line(tmp_path, content, expect):
    bad = tmp_path / "gym4_train_element.txt"
    bad.write_text(content)
    r = cli(*manifest_args(tmp_path / "m", split=bad))
    assert r.returncode == 2
    assert expect in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_malformed_json_and_missing_file(tmp_path):
    bad = tmp_path / "ann.json"
    bad.write_text('{"v": {\n"E_000001_000002": [}}')
    args = manifest_args(tmp_path / "m")
    args[2] = bad
    r = cli(*args)
    assert r.returncode == 2 and f"{bad}:2: malformed JSON" in r.stderr and "Traceback" not in r.stderr
    args[2] = tmp_path / "nope.json"
    r = cli(*args)
    assert r.returncode == 2 and "nope.json" in r.stderr and "Traceback" not in r.stderr


def test_help_explains_every_command():
    r = cli("--help")
    assert r.returncode == 0
    for name, option in (("demo", "--out"), ("synth", "--out"), ("manifest", "--out"), ("preprocess", "--out"),
                         ("train", "--runs"), ("evaluate", "--fuse"), ("submit", "--wait")):
        assert name in r.stdout
        sub = cli(name, "--help")
        assert sub.returncode == 0 and option in sub.stdout


def test_bad_training_settings_exit_2_naming_the_field(tmp_path):
    r = cli("train", "--data", tmp_path, "--set", "model=resnet")
    assert r.returncode == 2 and "model must be one of" in r.stderr and "Traceback" not in r.stderr
    r = cli("evaluate", "--run", tmp_path / "nothing")
    assert r.returncode == 2 and "no checkpoint" in r.stderr


def test_bad_override_exits_2(tmp_path):
    r = cli("synth", "--out", tmp_path, "--set", "vidoes=3")
    assert r.returncode == 2 and "unknown key 'vidoes'" in r.stderr
