"""`finegym-ray study`: a bad study name or setting is refused before Ray starts."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args,msg", [(["nope"], "unknown study 'nope'"),
                                      (["order", "--preset", "syngym", "--set", "train.epochs=0"], "epochs")])
def test_bad_input_is_refused_before_ray_starts(args, msg):
    r = subprocess.run([sys.executable, "-m", "finegym_ray.cli", "study", *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 2 and msg in r.stderr, r.stderr
