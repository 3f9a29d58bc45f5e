"""``--s3-endpoint`` reaches every Ray worker: a cluster whose nodes were started without
any S3 endpoint in their environment preprocesses to, trains from and checkpoints to the
S3 test server, and evaluates from it, told only by the driver's flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from finegym_ray import storage
from finegym_ray.cli.smoke import TRAIN as SMOKE_TRAIN
from tests.support.cluster import running_cluster
from tests.support.processes import own_pids_with

# A head and a worker node of cluster/local.sh.
pytestmark = pytest.mark.cluster

ENDPOINT_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def _env_without_endpoint() -> dict[str, str]:
    # Credentials stay (a node's instance profile); only where S3 is goes missing.
    return {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS} | {"RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def bare_cluster(s3_server):
    """GCS address of a head (0 CPUs) + one worker node (2 CPUs) whose processes do not
    know the S3 endpoint; all work runs on the worker node."""
    with running_cluster("fge-", "--workers", "1", "--worker-cpus", "2", env=_env_without_endpoint()) as state:
        yield (state / "address").read_text().strip()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finegym_ray.cli", *args], env=_env_without_endpoint(),
                          capture_output=True, text=True, timeout=400)


# Three CLI runs (each a driver joining the cluster) plus the cluster: 1.5-4 min on 2 cores.
@pytest.mark.e2e
def test_train_and_evaluate_on_s3_with_workers_started_without_the_endpoint(bare_cluster, s3_server, s3_prefix,
                                                                            tiny_gym):
    raylets = [p for p in own_pids_with("worker_1")
               if "raylet" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    assert len(raylets) == 1, raylets
    node_env = Path(f"/proc/{raylets[0]}/environ").read_bytes().split(b"\0")
    assert not [v for v in node_env if v.split(b"=", 1)[0].decode() in ENDPOINT_VARS], "the premise: no endpoint"

    endpoint = ["--address", bare_cluster, "--s3-endpoint", s3_server.endpoint_url]
    store, runs = storage.join(s3_prefix, "store"), storage.join(s3_prefix, "runs")
    r = _cli("preprocess", *endpoint, "--annotations", str(tiny_gym / "annotations"),
             "--videos", str(tiny_gym / "videos"), "--out", store,
             "--set", "short_side=64", "--set", "unit_seconds=8", "--set", "flow=none")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    train_set = [a for o in [*SMOKE_TRAIN, "workers=1", "cpus_per_worker=1"] for a in ("--set", o)]
    r = _cli("train", *endpoint, "--data", store, "--runs", runs, "--name", "bare", *train_set)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # A Ray Train worker's line reaches the driver once, however many nodes share this host.
    lines = [line for line in r.stdout.splitlines() if line.startswith("[train] ")]
    assert any(line.startswith("[train] epoch 1/1") for line in lines), r.stdout[-3000:]
    assert len(set(lines)) == len(lines), r.stdout[-3000:]
    run = storage.join(runs, "bare")
    assert storage.exists(storage.join(run, "epoch_0001", "state.pt"))
    assert storage.exists(storage.join(run, "epoch_0001", "meta.json"))

    r = _cli("evaluate", *endpoint, "--run", run)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert storage.exists(storage.join(run, "eval", "metrics.json"))
