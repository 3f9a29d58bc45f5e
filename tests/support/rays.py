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
