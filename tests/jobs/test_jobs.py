"""Every job entry point imports, and answers --help through the CLI it wraps."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.output import assert_no_ray_internals, assert_progress_with_rate

JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.py"))


def test_there_are_job_entry_points():
    assert {p.stem for p in JOBS} >= {"demo", "preprocess", "train", "evaluate"}


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.stem)
def test_job_module_imports_and_explains_itself(path):
    spec = importlib.util.spec_from_file_location(f"job_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the __main__ guard keeps it from running
    assert module.__doc__ and "ray job submit" in module.__doc__
    r = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--smoke-test" in r.stdout, r.stderr


@pytest.mark.e2e
def test_evaluate_smoke_test_trains_and_evaluates_a_tiny_run(ray_cluster):
    job = Path(__file__).resolve().parents[2] / "jobs" / "evaluate.py"
    r = subprocess.run([sys.executable, str(job), "--smoke-test", "--address", ray_cluster.address],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "[train] epoch 1/1" in r.stdout and "mean class" in r.stdout and "tsm_rgb_subaction_event" in r.stdout
    assert_no_ray_internals(r.stdout + r.stderr)  # its Ray Train workers' and Ray Data's lines stay in Ray's logs
    assert_progress_with_rate(r.stdout, "train")
