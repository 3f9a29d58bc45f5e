"""A Ray started by finegym_ray keeps idle worker processes; a user's own setting wins."""

import os
import subprocess
import sys

import pytest

from finegym_ray.ray_connect import IDLE_WORKER_ENV, IDLE_WORKER_MS

CODE = """
import os, ray
from finegym_ray.ray_connect import init_ray
# "local": a Ray of its own, whatever else runs on this machine (the tests' cluster).
init_ray("local", num_cpus=1, include_dashboard=False, log_to_driver=False)
# Worker processes inherit the raylet's environment: what it was started with.
print(ray.get(ray.remote(lambda: os.environ.get({env!r})).remote()))
"""


@pytest.mark.parametrize("preset", [None, "2500"])
def test_a_local_ray_keeps_idle_workers_unless_told_otherwise(preset):
    env = {k: v for k, v in os.environ.items() if k not in (IDLE_WORKER_ENV, "RAY_ADDRESS")}
    if preset:
        env[IDLE_WORKER_ENV] = preset
    r = subprocess.run([sys.executable, "-c", CODE.format(env=IDLE_WORKER_ENV)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == (preset or str(IDLE_WORKER_MS))
