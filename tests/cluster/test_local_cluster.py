"""A real multi-node Ray cluster on this machine (cluster/local.sh: a head without CPUs
and two worker nodes of one CPU each): jobs submitted through the Jobs API run on both
nodes, ``--s3-endpoint`` reaches every Ray worker of nodes started without any S3
endpoint in their environment, and a job survives losing a worker node."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finegym_ray import storage
from finegym_ray.cli.smoke import TRAIN as SMOKE_TRAIN
from tests.support.clips import row_digests, shards
from tests.support.cluster import running_cluster
from tests.support.output import assert_no_ray_internals, assert_progress_with_rate
from tests.support.processes import descendants, own_pids_with

# A head and two worker nodes of cluster/local.sh, and jobs submitted to them.
pytestmark = pytest.mark.cluster

STAGE_OPTIONS = ["--set", "short_side=64", "--set", "unit_seconds=4"]


ENDPOINT_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def _env_without_endpoint() -> dict[str, str]:
    # Credentials stay (a node's instance profile); only where S3 is goes missing.
    return {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS} | {"RAY_AUTH_MODE": "disabled"}


@pytest.fixture(scope="module")
def cluster(s3_server):
    """(state folder, Jobs API address) of a running head + 2 worker nodes, whose
    processes have the S3 test server's keys but do not know its endpoint."""
    with running_cluster("fgc-", "--workers", "2", env=_env_without_endpoint()) as state:
        yield state, (state / "dashboard").read_text().strip()


def submit(dashboard: str, tiny_gym: Path, out: Path, *extra: str, wait: bool = True) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "finegym_ray.cli", "submit", "preprocess", "--address", dashboard,
           *(["--wait"] if wait else []), "--", "--annotations", str(tiny_gym / "annotations"),
           "--videos", str(tiny_gym / "videos"), "--out", str(out), *STAGE_OPTIONS, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})


@pytest.fixture(scope="module")
def two_node_run(cluster, tiny_gym, tmp_path_factory) -> Path:
    _, dashboard = cluster
    out = tmp_path_factory.mktemp("two_nodes") / "out"
    proc = submit(dashboard, tiny_gym, out)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert "submitted raysubmit_" in output and "SUCCEEDED" in output
    # Every line once (the job's log is followed, not also echoed), Ray's own left out.
    lines = [line for line in output.splitlines() if line.startswith("[preprocess]")]
    assert lines and len(set(lines)) == len(lines), output[-3000:]
    assert_no_ray_internals(output)
    assert "INFO" not in output and "Running entrypoint" not in output, output[-3000:]
    assert_progress_with_rate(output, "preprocess")
    return out


def test_submitted_job_runs_units_on_both_worker_nodes(two_node_run):
    summary = json.loads((two_node_run / "summary.json").read_text())
    run = summary["runs"][-1]  # the job's own figures; the output's are in "output" and "totals"
    assert run["units"]["failed"] == 0 and run["units"]["done"] == run["units"]["planned"]
    assert summary["output"]["with_clips"] == summary["output"]["planned"] == run["units"]["planned"]
    assert len(run["units_per_node"]) == 2, run["units_per_node"]
    assert (two_node_run / "config.yaml").exists()  # the job saved its resolved config


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "finegym_ray.cli", *args], env=_env_without_endpoint(),
                          capture_output=True, text=True, timeout=400)


# Before the test that stops a worker node. Three CLI runs, each a driver joining the cluster.
@pytest.mark.e2e
def test_train_and_evaluate_on_s3_with_workers_started_without_the_endpoint(cluster, s3_server, s3_prefix,
                                                                            tiny_gym):
    state, _ = cluster
    raylets = [p for p in own_pids_with("worker_1")
               if "raylet" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    assert len(raylets) == 1, raylets
    node_env = Path(f"/proc/{raylets[0]}/environ").read_bytes().split(b"\0")
    assert not [v for v in node_env if v.split(b"=", 1)[0].decode() in ENDPOINT_VARS], "the premise: no endpoint"

    endpoint = ["--address", (state / "address").read_text().strip(), "--s3-endpoint", s3_server.endpoint_url]
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


def test_job_survives_losing_a_worker_node(cluster, two_node_run, tiny_gym, tmp_path):
    state, dashboard = cluster
    out = tmp_path / "out"
    proc = submit(dashboard, tiny_gym, out)
    deadline = time.monotonic() + 300
    while not ((out / "clips").exists() and shards(str(out))):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.05)
    # The node is its raylet (which names its custom resource) and everything under it.
    raylets = [p for p in own_pids_with("worker_1")
               if "raylet" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    assert len(raylets) == 1, raylets
    victims = [raylets[0], *descendants(raylets[0])]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-3000:]
    assert row_digests(pq.read_table(out / "clips")) == row_digests(pq.read_table(two_node_run / "clips"))


def test_a_failed_job_says_why_with_its_last_lines_and_where_its_log_is(cluster, tmp_path):
    _, dashboard = cluster
    cmd = [sys.executable, "-m", "finegym_ray.cli", "submit", "preprocess", "--address", dashboard, "--wait", "--",
           "--annotations", str(tmp_path / "no_such_folder"), "--videos", str(tmp_path), "--out", str(tmp_path / "out")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ADDRESS": "127.0.0.1:1"})
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    job_id = r.stdout.split()[1].rstrip(":")
    assert f"  address: {dashboard} (--address {dashboard})" in r.stdout  # not $RAY_ADDRESS's
    tail = r.stdout[r.stdout.index(f"job {job_id}: FAILED"):].splitlines()
    assert tail[1] == "  reason: Job entrypoint command failed with exit code 2", r.stdout[-3000:]
    # The job's own one-line error, followed above the status.
    assert any(line.startswith("finegym-ray: error: ") for line in r.stdout.splitlines()), r.stdout[-3000:]
    assert tail[-1].startswith(f"  full log: ray job logs --address {dashboard} {job_id} (the file "
                               f"job-driver-{job_id}.log"), r.stdout[-3000:]
