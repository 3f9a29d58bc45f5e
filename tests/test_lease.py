"""One writer per folder (finegym_ray/lease.py), locally and on the S3 test server."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from finegym_ray import storage
from finegym_ray.lease import LEASE_FILE, LeaseHeld, writer_lease


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


def test_a_second_writer_is_refused_with_the_holders_identity_and_the_way_out(folder):
    with writer_lease(folder, what="preprocess A") as mine:
        with pytest.raises(LeaseHeld) as refused:
            with writer_lease(folder, what="preprocess B"):
                pass
        message = str(refused.value)
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


def test_break_lease_takes_a_lease_whose_holder_cannot_be_checked(folder):
    # A holder on another host: only the operator can say it is gone.
    storage.write_text(storage.join(folder, LEASE_FILE), json.dumps(
        {"token": "t", "user": "u", "host": "elsewhere", "pid": 1, "what": "job on another node",
         "started": time.time() - 3600, "heartbeat": time.time() - 3000}))
    with pytest.raises(LeaseHeld, match="last heartbeat 3000 s ago"):
        with writer_lease(folder, what="rerun"):
            pass
    said = []
    with writer_lease(folder, what="rerun", break_lease=True, say=said.append):
        assert any("breaking the lease" in m and "job on another node" in m for m in said)


def test_the_heartbeat_refreshes_the_lease(tmp_path):
    folder = str(tmp_path / "out")
    with writer_lease(folder, what="job", heartbeat_s=0.1) as mine:
        first = mine["heartbeat"]
        time.sleep(0.5)
        assert json.loads(storage.read_text(storage.join(folder, LEASE_FILE)))["heartbeat"] > first
