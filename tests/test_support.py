"""The shared test helpers that decide what a test may touch: which processes are this
session's (the only ones a test may signal) and which of the caller's settings the tests
must not see."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

from tests.support.env import isolated_environ
from tests.support.processes import SESSION_ENV, descendants, own_pids_with

SLEEP = "import time; time.sleep(120)"


def _orphan(title: str, env: dict[str, str]) -> int:
    """pid of a sleeping process whose command line holds ``title``, started through a
    shell that exits at once: its parent chain no longer leads to this process, as with
    the Ray processes that ``ray start`` leaves running, or another user's."""
    r = subprocess.run(["sh", "-c", '"$0" -c "$1" "$2" >/dev/null 2>&1 & echo $!', sys.executable, SLEEP, title],
                       env=env, capture_output=True, text=True, timeout=30, check=True)
    return int(r.stdout)


@contextlib.contextmanager
def _stopped_afterwards(pids: list[int]) -> Iterator[list[int]]:
    """``pids`` for the block, each SIGKILLed after it (only these: they were started here)."""
    try:
        yield pids
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _wait_until(condition, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_process_of_the_same_title_outside_this_session_is_never_picked():
    title = f"ray::RayTrainWorker-{uuid.uuid4().hex}"
    stranger_env = {k: v for k, v in os.environ.items() if k != SESSION_ENV}
    child = subprocess.Popen([sys.executable, "-c", SLEEP, title], env=stranger_env)
    with _stopped_afterwards([_orphan(title, stranger_env), _orphan(title, dict(os.environ)), child.pid]) as pids:
        stranger, marked_orphan, _ = pids
        found = own_pids_with(title)
        # The stranger runs the same command line; only where it came from differs.
        assert stranger not in found, found
        # A child, even one whose environment lost the mark (a Ray worker may write its
        # title over it), and an orphan that carries the mark are this session's.
        assert child.pid in found and marked_orphan in found, (found, pids)
    child.wait()


def test_without_a_session_mark_only_this_process_tree_counts(monkeypatch):
    title = f"finegym-test-{uuid.uuid4().hex}"
    monkeypatch.delenv(SESSION_ENV)
    child = subprocess.Popen([sys.executable, "-c", SLEEP, title])
    with _stopped_afterwards([_orphan(title, dict(os.environ)), child.pid]) as (orphan, _):
        assert _wait_until(lambda: child.pid in own_pids_with(title))
        assert orphan not in own_pids_with(title)
    child.wait()


def test_descendants_are_found_through_every_generation():
    shell = subprocess.Popen(["sh", "-c", f'"$0" -c "{SLEEP}" & wait', sys.executable])
    with _stopped_afterwards([shell.pid]):
        assert _wait_until(lambda: len(descendants(shell.pid)) == 1)
        grandchild = descendants(shell.pid)[0]
        assert {shell.pid, grandchild} <= set(descendants(os.getpid()))
        os.kill(grandchild, signal.SIGKILL)
    shell.wait()


def test_the_callers_ray_s3_and_package_settings_are_hidden_then_restored(monkeypatch):
    caller = {"RAY_ADDRESS": "127.0.0.1:1", "RAY_NAMESPACE": "theirs", "AWS_PROFILE": "prod",
              "AWS_ENDPOINT_URL_S3": "http://their-bucket:9000", "FINEGYM_RAY_CAPACITY_CHECK": "0"}
    for name, value in caller.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("UNRELATED", "kept")
    with isolated_environ(EXTRA="set"):
        assert not set(caller) & set(os.environ)
        assert os.environ["UNRELATED"] == "kept" and os.environ["EXTRA"] == "set"
        os.environ["RAY_ADDRESS"] = "set by a test"
    assert {name: os.environ.get(name) for name in caller} == caller
    assert "EXTRA" not in os.environ

