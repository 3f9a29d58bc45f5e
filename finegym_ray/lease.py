"""One writer at a time for an output folder (preprocessing output, a training run).

``FOLDER/lease.json`` names the job that writes there: owner (user, host, pid and the
process's start time), what it runs, when it started and its last heartbeat. It is
created with :func:`storage.create_exclusive` (exclusive create locally, a conditional
PUT on S3), refreshed every ``heartbeat_s`` seconds while the job runs and deleted when
it ends. A second writer is refused with the holder's identity.

A lease is taken over without asking only when its holder is provably gone: a process
on this host that no longer exists (a driver killed with ``kill -9``, then the same
command again). Anything else, however old its heartbeat, is the operator's call:
``--break-lease`` removes it, since a job whose heartbeat stopped may only be stalled
on a slow disk and still write. Taking over is best effort against a third job that
breaks the same lease in the same instant.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterator

from . import storage

LEASE_FILE = "lease.json"
HEARTBEAT_S = 30.0


class LeaseHeld(ValueError):
    """Another job holds the folder's lease."""


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None if it does not
    exist. Elsewhere 0 for any live process: only a pid's existence is checked."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # Fields after the command name, which may hold spaces: starttime is field 22.
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except FileNotFoundError:
        if os.path.isdir("/proc"):
            return None
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


def _holder_is_gone(lease: dict) -> bool:
    """True when the holder ran on this host and its process no longer exists (or its
    pid now belongs to a process started later)."""
    if lease.get("host") != socket.gethostname():
        return False
    started = _process_start(int(lease.get("pid", -1)))
    return started is None or started != lease.get("process_start")


def _describe(lease: dict, uri: str) -> str:
    age = time.time() - float(lease.get("heartbeat", 0))
    return (f"{lease.get('user')}@{lease.get('host')} pid {lease.get('pid')} ({lease.get('what')}), since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(lease.get('started', 0))))}, "
            f"last heartbeat {age:.0f} s ago; lease {uri}")


@contextlib.contextmanager
def writer_lease(folder: str, *, what: str, break_lease: bool = False, heartbeat_s: float = HEARTBEAT_S,
                 say: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Hold ``folder``'s lease for the ``with`` block; yields the lease record.

    Raises LeaseHeld, naming the holder and how to break the lease, when another job
    holds it. ``break_lease`` removes a lease first (the operator's word that its job is
    gone)."""
    uri = storage.join(folder, LEASE_FILE)
    pid = os.getpid()
    now = time.time()
    mine = {"token": uuid.uuid4().hex, "user": getpass.getuser(), "host": socket.gethostname(), "pid": pid,
            "process_start": _process_start(pid), "what": what, "started": now, "heartbeat": now}
    if break_lease:
        with contextlib.suppress(FileNotFoundError):
            if say:
                say(f"breaking the lease of {_describe(json.loads(storage.read_text(uri)), uri)}")
        storage.delete(uri)
    _acquire(uri, mine, say)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(uri, mine, heartbeat_s, stop, say), daemon=True,
                            name="finegym-lease-heartbeat")
    beat.start()
    try:
        yield mine
    finally:
        stop.set()
        beat.join()
        with contextlib.suppress(Exception):  # a lost or unreachable lease is not this job's error
            if _read(uri).get("token") == mine["token"]:
                storage.delete(uri)


def _read(uri: str) -> dict:
    try:
        return json.loads(storage.read_text(uri))
    except FileNotFoundError:
        return {}
    except ValueError:  # half a file from a store without atomic writes: nobody's
        return {}


def _acquire(uri: str, mine: dict, say: Callable[[str], None] | None) -> None:
    data = json.dumps(mine, indent=1).encode()
    for _ in range(3):
        if storage.create_exclusive(uri, data):
            break
        theirs = _read(uri)
        if theirs.get("token") == mine["token"]:  # our own create, answered late and retried
            break
        if theirs and not _holder_is_gone(theirs):
            raise LeaseHeld(f"{uri.rsplit('/', 1)[0]} is being written by another job: {_describe(theirs, uri)}. "
                            f"If that job is no longer running, run again with --break-lease")
        if theirs and say:
            say(f"taking over the lease of a job that is gone: {_describe(theirs, uri)}")
        storage.delete(uri)
    else:
        raise LeaseHeld(f"could not take the lease {uri}: other jobs keep taking it")
    # A server that ignored the create condition would have let both writes through: the
    # one read back is the one that counts.
    if _read(uri).get("token") != mine["token"]:
        raise LeaseHeld(f"{uri}: another job took the lease at the same moment ({_describe(_read(uri), uri)})")


def _heartbeat(uri: str, mine: dict, every_s: float, stop: threading.Event,
               say: Callable[[str], None] | None) -> None:
    while not stop.wait(every_s):
        try:
            if _read(uri).get("token") != mine["token"]:
                if say:
                    say(f"warning: the lease {uri} was broken or taken by another job; this job keeps writing")
                return
            mine["heartbeat"] = time.time()
            storage.write_text(uri, json.dumps(mine, indent=1))
        except Exception as e:  # noqa: BLE001 - a storage hiccup must not stop the job; the next beat retries
            if say:
                say(f"warning: lease heartbeat failed ({type(e).__name__}: {e})")


def lease_holder_state(uri: str) -> tuple[str, dict]:
    """("none", {}) without a lease at ``uri``, else ("gone" or "live", the lease record):
    gone when its holder ran on this host and its process no longer exists. How old a
    live holder's heartbeat may be is the reader's call (``record["heartbeat"]``, seconds
    since the epoch)."""
    record = _read(uri)
    if not record:
        return "none", {}
    return ("gone" if _holder_is_gone(record) else "live"), record
