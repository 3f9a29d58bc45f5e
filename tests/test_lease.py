"""One writer per folder (finegym_ray/lease.py), locally and on the S3 test server."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from finegym_ray import storage
from finegym_ray.lease import LEASE_FILE, STALE_BEATS, LeaseHeld, writer_lease


@pytest.fixture(params=["local", "s3"])
def folder(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    return request.getfixturevalue("s3_prefix")


def test_create_exclusive_creates_once(folder):
    uri = storage.join(folder, "x.json")
    assert storage.create_exclusive(uri, b"first")
    assert not storage.create_exclusive(uri, b"second")
    assert storage.read_bytes(uri) == b"first"


def _refusal_in_another_thread(folder: str, what: str) -> LeaseHeld | None:
    """What writer_lease raises in a thread of its own: another job (a thread's own holds nest)."""
    raised = []

    def take() -> None:
        try:
            with writer_lease(folder, what=what):
                pass
        except LeaseHeld as e:
            raised.append(e)

    thread = threading.Thread(target=take)
    thread.start()
    thread.join()
    return raised[0] if raised else None


def test_a_second_writer_is_refused_with_the_holders_identity_and_the_way_out(folder):
    with writer_lease(folder, what="preprocess A") as mine:
        message = str(_refusal_in_another_thread(folder, "preprocess B"))
        assert f"pid {mine['pid']}" in message and "preprocess A" in message and "--break-lease" in message
        assert json.loads(storage.read_text(storage.join(folder, LEASE_FILE)))["token"] == mine["token"]
    assert not storage.exists(storage.join(folder, LEASE_FILE))  # released at the end


def test_the_lease_of_a_killed_process_on_this_host_is_taken_over(folder):
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from finegym_ray.lease import writer_lease
with writer_lease({folder!r}, what="killed job"):
    print("held", flush=True)
    time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LeaseHeld, match="killed job"):
        with writer_lease(folder, what="rerun"):
            pass
    holder.kill()
    holder.wait()
    said = []
    with writer_lease(folder, what="rerun", say=said.append):
        assert any("taking over" in m and "killed job" in m for m in said)


def test_break_lease_takes_a_live_lease_whose_holder_cannot_be_checked(folder):
    # A holder on another host that keeps beating: only the operator can say it is gone.
    with _beating_lease(folder, host="elsewhere", what="job on another node"):
        with pytest.raises(LeaseHeld, match="job on another node.*--break-lease"):
            with writer_lease(folder, what="rerun"):
                pass
    said = []  # its heartbeat is still fresh: without the operator's word the rerun would wait
    with writer_lease(folder, what="rerun", break_lease=True, say=said.append):
        assert any("breaking the lease" in m and "job on another node" in m for m in said)
        assert not any(m.startswith("waiting") for m in said)


def test_the_heartbeat_refreshes_the_lease(tmp_path):
    folder = str(tmp_path / "out")
    with writer_lease(folder, what="job", heartbeat_s=0.1) as mine:
        first = mine["heartbeat"]
        time.sleep(0.5)
        assert json.loads(storage.read_text(storage.join(folder, LEASE_FILE)))["heartbeat"] > first


def _gone_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@contextlib.contextmanager
def _beating_lease(folder: str, *, host: str, what: str, pid: int = 1, namespace: str = "another-boot:4026531836",
                   period_s: float = 0.5):
    """A lease whose holder runs where this process cannot see it (another host or
    container) and is alive: its heartbeat is refreshed every ``period_s`` / 5 seconds."""
    uri = storage.join(folder, LEASE_FILE)
    lease = {"token": "theirs", "user": "u", "host": host, "pid": pid, "process_start": 1, "namespace": namespace,
             "what": what, "started": time.time(), "heartbeat": time.time(), "heartbeat_s": period_s}
    storage.write_text(uri, json.dumps(lease))
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(period_s / 5):
            lease["heartbeat"] = time.time()
            storage.write_text(uri, json.dumps(lease))

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        yield lease
    finally:
        stop.set()
        beating.join()


def test_a_live_lease_from_another_pid_namespace_with_the_same_host_name_is_not_taken_over(folder):
    """Containers with one host name but their own pids (docker --network host, pods with
    a set hostname): the holder's pid does not exist here, yet its heartbeat is fresh."""
    with _beating_lease(folder, host=socket.gethostname(), pid=_gone_pid(), what="preprocess in container A"):
        t0 = time.monotonic()
        with pytest.raises(LeaseHeld, match="container A"):
            with writer_lease(folder, what="preprocess in container B"):
                pass
        assert time.monotonic() - t0 < STALE_BEATS * 0.5  # refused at a heartbeat, before it could be stale
        assert json.loads(storage.read_text(storage.join(folder, LEASE_FILE)))["token"] == "theirs"


def test_a_killed_driver_on_another_pod_is_taken_over_once_its_heartbeat_is_stale(folder):
    """A RayJob applied again after its driver was killed runs on a new head pod: it waits
    until the dead driver's heartbeat is older than a few heartbeat periods, saying how
    long, then takes the lease over."""
    period = 0.5
    storage.write_text(storage.join(folder, LEASE_FILE), json.dumps(
        {"token": "dead", "user": "u", "host": "finegym-train-head-old", "pid": 7, "process_start": 1,
         "namespace": "old-pod", "what": "train killed", "started": time.time(), "heartbeat": time.time(),
         "heartbeat_s": period}))
    said = []
    t0 = time.monotonic()
    with writer_lease(folder, what="train again", say=said.append) as mine:
        waited = time.monotonic() - t0
        assert json.loads(storage.read_text(storage.join(folder, LEASE_FILE)))["token"] == mine["token"]
    assert STALE_BEATS * period * 0.8 <= waited < STALE_BEATS * period + 3
    (waiting,) = [m for m in said if m.startswith("waiting")]
    assert f"up to {STALE_BEATS * period:.0f} s" in waiting and "train killed" in waiting
    assert any("taking over" in m and "train killed" in m for m in said)


def test_a_long_stale_lease_from_anywhere_is_taken_over_at_once(folder):
    storage.write_text(storage.join(folder, LEASE_FILE), json.dumps(
        {"token": "t", "user": "u", "host": "elsewhere", "pid": 1, "what": "job on another node",
         "started": time.time() - 3600, "heartbeat": time.time() - 3000}))
    said = []
    t0 = time.monotonic()
    with writer_lease(folder, what="rerun", say=said.append):
        taken_s = time.monotonic() - t0
        assert taken_s < 5
    # The heartbeat's age as the lease read it: 3000 s and the seconds the take-over took.
    (took,) = [m for m in said if "taking over" in m]
    age = int(re.search(r"last heartbeat (\d+) s ago", took).group(1))
    assert 3000 <= age <= 3000 + taken_s + 1, took
    assert not any(m.startswith("waiting") for m in said)


def test_a_lease_with_damaged_fields_is_nobodys(tmp_path):
    folder = str(tmp_path / "out")
    storage.write_text(storage.join(folder, LEASE_FILE), json.dumps(
        {"token": "t", "host": socket.gethostname(), "pid": "x", "heartbeat": "soon", "heartbeat_s": "y"}))
    with writer_lease(folder, what="rerun") as mine:
        assert json.loads(storage.read_text(storage.join(folder, LEASE_FILE)))["token"] == mine["token"]


def test_the_holder_may_take_its_own_lease_again_inside(tmp_path):
    """The demo holds its store's lease around preprocessing, which takes it too."""
    folder = str(tmp_path / "out")
    with writer_lease(folder, what="demo") as outer:
        with writer_lease(folder + "/", what="preprocess") as inner:
            assert inner is outer
        assert json.loads(storage.read_text(storage.join(folder, LEASE_FILE)))["token"] == outer["token"]
    assert not storage.exists(storage.join(folder, LEASE_FILE))
