"""cluster/local.sh as the cluster tests run it: a real head and worker nodes on this
machine, in a state folder of their own, stopped and checked at the end."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.processes import own_pids_with

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
    unix sockets live below it and may not pass 107 bytes."""
    state = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    up = local_sh(state, "up", *up_args, env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield state
    finally:
        down = local_sh(state, "down", env=env)
        assert down.returncode == 0, down.stderr
        assert not own_pids_with(str(state / "tmp")), "local.sh down left processes running"
        shutil.rmtree(state, ignore_errors=True)
