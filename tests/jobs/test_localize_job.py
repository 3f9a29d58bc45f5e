"""jobs/localize.py --smoke-test: train a tiny detector on toy features, evaluate it, on
the session's Ray cluster (as a job joins its cluster)."""

import subprocess
import sys
from pathlib import Path

import pytest

from finegym_ray.submit import stages


def test_localize_is_a_submittable_stage():
    assert "localize" in stages()


@pytest.mark.e2e
def test_localize_smoke_test_trains_and_evaluates(ray_cluster):
    job = Path(__file__).resolve().parents[2] / "jobs" / "localize.py"
    r = subprocess.run([sys.executable, str(job), "evaluate", "--smoke-test", "--address", ray_cluster.address],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "[localize] epoch 3/3" in r.stdout
    head = next(line for line in r.stdout.splitlines() if line.startswith("tIoU"))
    assert head.split() == ["tIoU", "0.50", "0.60", "0.70", "0.80", "0.90", "Avg"]
    assert "metrics.json" in r.stdout and "timeline.png" in r.stdout
