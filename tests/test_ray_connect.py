"""A Ray started by finegym_ray keeps idle worker processes; a user's own setting wins."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from finegym_ray.runtime.connect import IDLE_WORKER_ENV, IDLE_WORKER_MS

CODE = """
import os, ray
from finegym_ray.runtime.connect import init_ray
# "local": a Ray of its own, whatever else runs on this machine (the tests' cluster).
init_ray("local", num_cpus=1, include_dashboard=False, log_to_driver=False)
# Worker processes inherit the raylet's environment: what it was started with.
print(ray.get(ray.remote(lambda: os.environ.get({env!r})).remote()))
"""


@pytest.mark.parametrize("preset", [None, "2500"])
@pytest.mark.cluster
def test_a_local_ray_keeps_idle_workers_unless_told_otherwise(preset):
    env = {k: v for k, v in os.environ.items() if k not in (IDLE_WORKER_ENV, "RAY_ADDRESS")}
    if preset:
        env[IDLE_WORKER_ENV] = preset
    r = subprocess.run([sys.executable, "-c", CODE.format(env=IDLE_WORKER_ENV)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == (preset or str(IDLE_WORKER_MS))
    # Ray's start is said, with its time: it can take 5-25 s without a word otherwise.
    said = r.stdout.splitlines()
    assert said[0] == "[ray] starting a local Ray on this machine"
    assert re.fullmatch(r"\[ray\] ready in \d+\.\d s: 1 node, 1 CPU, 0 GPU, .* GiB object store", said[1]), said


JOB_CODE = """
import json, os, ray
from finegym_ray.runtime.connect import init_ray
from finegym_ray.storage import use_endpoint
# What Ray's job manager hands a submitted driver: the job's runtime env, here one that
# names another endpoint (the submitter's environment) than the job's own --s3-endpoint.
os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps(
    {"runtime_env": {"env_vars": {"AWS_ENDPOINT_URL": "http://stale:1", "AWS_DEFAULT_REGION": "eu-west-3"}}})
os.environ["AWS_DEFAULT_REGION"] = "eu-west-3"
use_endpoint("http://chosen:9000")
init_ray("local", num_cpus=1, include_dashboard=False, log_to_driver=False)
names = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION")
print(json.dumps(ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in names}).remote())))
print("override left set:", os.environ.get("RAY_OVERRIDE_JOB_RUNTIME_ENV"))
"""


@pytest.mark.cluster
def test_workers_get_the_drivers_endpoint_even_inside_a_job_that_named_another():
    """A submitted job's driver that was given --s3-endpoint hands that endpoint to its
    workers: it beats the job's runtime env, and the same region is not refused as a
    conflict (Ray rejects a driver env var the job also sets, unless told to override)."""
    import json

    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "RAY_OVERRIDE_JOB_RUNTIME_ENV")}
    r = subprocess.run([sys.executable, "-c", JOB_CODE], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert json.loads(lines[-2]) == {"AWS_ENDPOINT_URL": "http://chosen:9000", "AWS_ENDPOINT_URL_S3": "http://chosen:9000",
                                     "AWS_DEFAULT_REGION": "eu-west-3"}
    assert lines[-1] == "override left set: None"  # the switch was for this ray.init only


@pytest.mark.cluster
def test_a_dead_cluster_recorded_on_the_machine_does_not_hang_init():
    # Ray's temp dir of its own (short: Ray's socket paths must fit 107 characters).
    root = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    os.makedirs(os.path.join(root, "ray"))
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with open(os.path.join(root, "ray", "ray_current_cluster"), "w") as f:
        f.write(f"127.0.0.1:{dead}")  # what a cluster killed without `ray stop` leaves
    code = ("import ray\nfrom finegym_ray.runtime.connect import init_ray\n"
            "init_ray(None, num_cpus=1, include_dashboard=False, log_to_driver=False)\n"
            "print(ray.get(ray.remote(lambda: 'ran').remote()))\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = root
    try:
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("init_ray waited for the dead cluster")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "ran"
    assert f"127.0.0.1:{dead}) is not running" in r.stderr


JOIN_CODE = """
import os, ray
from finegym_ray.runtime.connect import init_ray
init_ray({address!r}, log_to_driver=False)
print(ray.get(ray.remote(lambda: os.environ.get("RAY_ADDRESS")).remote()))
ray.shutdown()
os.environ["RAY_ADDRESS"] = {address!r}
init_ray(None, log_to_driver=False)
"""


def test_workers_of_a_joined_cluster_find_that_cluster_with_other_rays_on_the_host(ray_cluster):
    """Ray Train's placement group cleaner (the actor that frees a trial's CPUs when
    ASHA stops it) finds its cluster by auto-detection, which on a host with several
    Rays picks the newest one: then a stopped trial keeps its CPUs and the next trial
    waits forever. Workers must be told their cluster's address. --address wins over
    $RAY_ADDRESS, and which of them named the cluster is said."""
    elsewhere = "127.0.0.1:1"  # nothing listens there
    env = {**os.environ, "RAY_ADDRESS": elsewhere}
    r = subprocess.run([sys.executable, "-c", JOIN_CODE.format(address=ray_cluster.address)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    said = r.stdout.splitlines()
    assert said[2] == ray_cluster.address, said
    assert said[0] == (f"[ray] joining the Ray cluster at {ray_cluster.address} (--address {ray_cluster.address}; "
                       f"$RAY_ADDRESS {elsewhere} not used)"), said
    assert re.fullmatch(r"\[ray\] ready in \d+\.\d s: 1 node, 2 CPU, 0 GPU, .* GiB object store", said[1]), said
    assert said[3] == f"[ray] joining the Ray cluster at {ray_cluster.address} ($RAY_ADDRESS {ray_cluster.address})"


RAYLET_CODE = """
import time, ray
from ray._private.utils import push_error_to_driver
from finegym_ray.runtime.connect import init_ray
from finegym_ray.runtime.internals import session_logs_dir
init_ray({address!r})
# What a raylet pushes to the drivers, as its worker pool does when many workers start.
worker = ray._private.worker.global_worker
push_error_to_driver(worker, "worker_pool_large", "WARNING: 8 PYTHON worker processes have been started (test)",
                     job_id=worker.current_job_id)
time.sleep(3)  # the driver's error thread prints it within a second
print("logs", session_logs_dir())
"""


def test_what_a_raylet_pushes_to_a_driver_that_joined_stays_in_rays_log(ray_cluster, tmp_path):
    r = subprocess.run([sys.executable, "-c", RAYLET_CODE.format(address=ray_cluster.address)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "PYTHON worker processes" not in r.stdout + r.stderr
    logs = r.stdout.split("logs ")[-1].strip()
    with open(os.path.join(logs, "finegym_ray_driver.log")) as f:
        assert "(raylet) WARNING: 8 PYTHON worker processes have been started (test)" in f.read()


def test_an_address_ray_cannot_join_is_one_line_that_says_what_to_give():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    r = subprocess.run([sys.executable, "-m", "finegym_ray.cli", "train", "--smoke-test", "--address", "nohost"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("finegym-ray: error: --address nohost: ") and "give --address HOST:PORT" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_cluster_is_described_in_words():
    from finegym_ray.runtime.connect import describe_resources

    line = describe_resources({"CPU": 2.0, "node:192.0.2.2": 1.0, "node:__internal_head__": 1.0,
                               "memory": 16 * 2**30, "object_store_memory": 7.5 * 2**30})
    assert line == "1 node, 2 CPU, 0 GPU, 16.0 GiB memory, 7.5 GiB object store"
    two = describe_resources({"CPU": 8.0, "GPU": 2.0, "node:a": 1.0, "node:b": 1.0})
    assert two.startswith("2 nodes, 8 CPU, 2 GPU"), two
