"""Rays that a test starts on this host beside the session's cluster: another user's Ray
(a notebook's ``ray.init()``) and drivers that start a Ray of their own.

Each runs in a process group of its own, so that a test stops exactly the processes it
started (Ray's processes stay in their driver's group); never ``ray stop``, which stops
every Ray on the host.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# What a notebook does: ray.init() with nothing else, then the kernel idles.
NOTEBOOK = """
import time, ray
ray.init(num_cpus=1, include_dashboard=False, configure_logging=False, log_to_driver=False)
print("ready", flush=True)
time.sleep(3600)
"""


def own_temp_env() -> tuple[dict[str, str], str]:
    """This environment without RAY_ADDRESS and with a Ray temp dir of its own, where no
    cluster is recorded (a new ``ray.init()`` starts a Ray instead of joining one), and
    that folder. Short, under /tmp: Ray's socket paths must fit 107 characters."""
    root = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = root
    return env, root


def stop_group(proc: subprocess.Popen, grace_s: float = 20) -> tuple[str, str]:
    """SIGTERM to ``proc`` (a driver's ray.shutdown stops its Ray), then SIGKILL to
    whatever of its process group is left (gcs_server can outlive a SIGTERM by 20 s);
    the rest of its stdout and stderr."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, err = proc.communicate(timeout=grace_s)
    except subprocess.TimeoutExpired:
        out = err = None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if out is None:
        out, err = proc.communicate()
    return out or "", err or ""


@contextlib.contextmanager
def notebook_ray(timeout_s: float = 300) -> Iterator[None]:
    """A Ray of 1 CPU started by another Python process's ``ray.init()``, as a
    notebook's, running until the block ends."""
    env, root = own_temp_env()
    err = Path(root) / "notebook.err"  # a file: a full pipe nobody reads would stop the process
    with err.open("w") as err_file:
        proc = subprocess.Popen([sys.executable, "-c", NOTEBOOK], env=env, stdout=subprocess.PIPE, stderr=err_file,
                                text=True, start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready or proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the notebook's Ray did not start in {timeout_s} s: {err.read_text()[-2000:]}")
        yield
    finally:
        stop_group(proc)
        shutil.rmtree(root, ignore_errors=True)


def run_driver(args: list[str], *, timeout_s: float, cwd: str | None = None) -> subprocess.CompletedProcess:
    """``args`` run as a driver that starts a Ray of its own (a Ray temp dir of its own,
    no RAY_ADDRESS); stopped with its Ray after ``timeout_s`` seconds, then
    subprocess.TimeoutExpired is raised."""
    env, root = own_temp_env()
    proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        out, err = stop_group(proc)
        raise subprocess.TimeoutExpired(args, timeout_s, out, err) from None
    finally:
        stop_group(proc)  # what its Ray left running
        shutil.rmtree(root, ignore_errors=True)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def free_placement_groups_of_ended_jobs(address: str, timeout_s: float = 30) -> list[str]:
    """Remove the placement groups that a driver killed outright left on the cluster at
    ``address`` (this process connected to it); returns their ids. Ray 2.60 now and then
    keeps one of them (Ray Train's worker group of a trial or run under way at the
    SIGKILL) CREATED after the job and every actor of it are dead, holding its CPUs: the
    session's later tests would wait for those forever. Ray is given ``timeout_s``
    seconds to remove them itself first."""
    import time

    import ray
    from ray.util.placement_group import PlacementGroup
    from ray.util.state import list_jobs, list_placement_groups

    deadline = time.monotonic() + timeout_s
    while True:
        running = {j.job_id for j in list_jobs(address=address, limit=10000) if str(j.status).endswith("RUNNING")}
        left = [p.placement_group_id for p in list_placement_groups(address=address, limit=10000,
                                                                    filters=[("state", "=", "CREATED")])
                if p.creator_job_id not in running]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    for pg_id in left:
        ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(pg_id)))
    return left
