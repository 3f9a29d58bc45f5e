"""cluster/local.sh as the cluster tests run it: a real head and worker nodes on this
machine, in a state folder of their own, stopped and checked at the end."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import own_pids, own_pids_with

ROOT = Path(__file__).resolve().parents[2]


def local_sh(state: Path, *args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    """``bash cluster/local.sh ARGS`` with ``env`` and the cluster's state in ``state``."""
    return subprocess.run(["bash", str(ROOT / "cluster" / "local.sh"), *args],
                          env={**env, "FINEGYM_RAY_CLUSTER_DIR": str(state)}, capture_output=True, text=True,
                          timeout=timeout)


@contextlib.contextmanager
def running_cluster(prefix: str, *up_args: str, env: dict[str, str]) -> Iterator[Path]:
    """``local.sh up UP_ARGS`` for the ``with`` block, then ``down``; yields the state
    folder (``dashboard`` and ``address`` files in it). A short path under /tmp: Ray's
    unix sockets live below it and may not pass 107 bytes.

    Checked on the way: when ``up`` returns, Ray's status counts every node; ``down``
    leaves none of the processes that ``up`` started (the Ray Client server among them,
    which names neither the state folder nor a parent that does)."""
    state = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    before = own_pids()
    up = local_sh(state, "up", *up_args, env=env)
    started: dict[int, bytes] = {}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        started = _command_lines(own_pids() - before)
        workers = int(up_args[up_args.index("--workers") + 1]) if "--workers" in up_args else 2
        assert active_nodes(state) == workers + 1, up.stdout
        yield state
    finally:
        down = local_sh(state, "down", env=env)
        assert down.returncode == 0, down.stderr
        assert not own_pids_with(str(state / "tmp")), "local.sh down left processes running"
        left = {pid: line for pid, line in _command_lines(set(started)).items() if line == started[pid]}
        assert not left, f"local.sh down left processes that up started: {left}"
        shutil.rmtree(state, ignore_errors=True)


def active_nodes(state: Path) -> int:
    """How many nodes Ray's autoscaler report (what ``ray status`` shows) counts active
    on the cluster in ``state``, read through its dashboard."""
    dashboard = (state / "dashboard").read_text().strip()
    token = state / "auth_token"
    headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}
    request = urllib.request.Request(f"{dashboard}/api/cluster_status", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:
        return len(json.load(reply)["data"]["clusterStatus"]["autoscalerReport"]["activeNodes"])


def _command_lines(pids: set[int]) -> dict[int, bytes]:
    """pid -> command line of those of ``pids`` still alive."""
    found = {}
    for pid in pids:
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
    return found
