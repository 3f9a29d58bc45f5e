"""One writer at a time for an output folder (preprocessing output, a training run).

``FOLDER/lease.json`` names the job that writes there: owner (user, host, pid, the
process's start time and the process namespace it runs in), what it runs, when it
started, its last heartbeat and how often it beats. It is created with
:func:`storage.create_exclusive` (exclusive create locally, a conditional PUT on S3),
refreshed every ``heartbeat_s`` seconds while the job runs and deleted when it ends. A
second writer is refused with the holder's identity.

A lease is taken over without asking only when its holder is gone:

- at once, when the holder ran in this process namespace (same host name, boot and PID
  namespace) and its process no longer exists (a driver killed with ``kill -9``, then
  the same command again). A holder there whose process lives is refused, whatever its
  heartbeat says.
- anywhere else (another host; or another container, which may have the same host name
  but its own pids, so that a pid says nothing here) only its heartbeat can tell: the
  lease is taken over once its heartbeat is ``STALE_BEATS`` of its periods old. The new
  job waits for that, saying how long, and is refused as soon as the heartbeat moves
  (its holder is alive). So a RayJob applied again after its driver was killed, which
  runs on a new head pod, takes over within ``STALE_BEATS * HEARTBEAT_S`` seconds.

``--break-lease`` removes a lease at once (the operator's word that its job is gone).
Taking over is best effort against a third job that takes the same lease in the same
instant. A thread that holds a folder's lease may take it again inside (the demo holds
its store's around the preprocessing that writes there): the inner hold is the outer one.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator

from . import storage
from .errors import InputError

LEASE_FILE = "lease.json"
HEARTBEAT_S = 30.0
# A heartbeat this many of its holder's periods old is stale: a beat or two may come late
# (a slow disk, an S3 retry), four missed in a row mean the holder has stopped.
STALE_BEATS = 4
# Leases held by each thread of this process: .leases = {folder key: its record}. Per
# thread: a job nests its own holds, another thread is another job.
_HELD = threading.local()


class LeaseHeld(InputError):
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


def process_namespace() -> str:
    """Where this process's pids mean something: ``BOOT_ID:PID_NAMESPACE_INODE`` on Linux,
    "" elsewhere. Containers may share a host name (``docker --network host``, pods with a
    set hostname) but each has its own PID namespace, and a reboot reuses pids."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def _number(value: object) -> float | None:
    """A lease field as a finite number, None when it is not one (the file is data)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _pid_here(lease: dict) -> int | None:
    """The holder's pid when it can be checked from here (it ran on this host, in this boot
    and PID namespace), else None."""
    pid = _number(lease.get("pid"))
    if (lease.get("host") != socket.gethostname() or lease.get("namespace") != process_namespace()
            or pid is None or pid <= 0 or pid != int(pid)):
        return None
    return int(pid)


def _holder_is_gone(lease: dict) -> bool:
    """True when the holder's pid can be checked here and its process no longer exists
    (or its pid now belongs to a process started later)."""
    pid = _pid_here(lease)
    if pid is None:
        return False
    started = _process_start(pid)
    return started is None or started != lease.get("process_start")


def _stale_after_s(lease: dict) -> float:
    """Seconds after its last heartbeat at which ``lease`` is stale: STALE_BEATS of the
    period it records (at most HEARTBEAT_S, so that a damaged or planted lease cannot
    hold a folder for longer)."""
    period = _number(lease.get("heartbeat_s"))
    return STALE_BEATS * (min(period, HEARTBEAT_S) if period and period > 0 else HEARTBEAT_S)


def _describe(lease: dict, uri: str) -> str:
    beat, started = _number(lease.get("heartbeat")), _number(lease.get("started"))
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started is not None else "?"
    except (OverflowError, OSError, ValueError):  # a time no calendar holds
        since = "?"
    last = f"{time.time() - beat:.0f} s ago" if beat is not None else "unreadable"
    return (f"{lease.get('user')}@{lease.get('host')} pid {lease.get('pid')} ({lease.get('what')}), since "
            f"{since}, last heartbeat {last}; lease {uri}")


@contextlib.contextmanager
def writer_lease(folder: str, *, what: str, break_lease: bool = False, heartbeat_s: float = HEARTBEAT_S,
                 say: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Hold ``folder``'s lease for the ``with`` block; yields the lease record.

    Raises LeaseHeld, naming the holder and how to break the lease, when another job
    holds it; waits (up to ``STALE_BEATS`` of the holder's heartbeat periods, saying so)
    when only the holder's heartbeat can tell whether it is gone. ``break_lease`` removes
    a lease first (the operator's word that its job is gone). ``heartbeat_s``: seconds
    between this job's heartbeats. Inside a hold of the same folder by this thread it
    yields that hold's record and neither takes nor releases anything."""
    uri = storage.join(folder, LEASE_FILE)
    key = _folder_key(folder)
    held = _HELD.__dict__.setdefault("leases", {})
    if key in held:
        yield held[key]
        return
    pid = os.getpid()
    now = time.time()
    mine = {"token": uuid.uuid4().hex, "user": getpass.getuser(), "host": socket.gethostname(), "pid": pid,
            "process_start": _process_start(pid), "namespace": process_namespace(), "what": what,
            "started": now, "heartbeat": now, "heartbeat_s": heartbeat_s}
    if break_lease:
        theirs = _read(uri)
        if theirs and say:
            say(f"breaking the lease of {_describe(theirs, uri)}")
        storage.delete(uri)
    _acquire(uri, mine, say)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(uri, mine, heartbeat_s, stop, say), daemon=True,
                            name="finegym-lease-heartbeat")
    beat.start()
    held[key] = mine
    try:
        yield mine
    finally:
        del held[key]
        stop.set()
        beat.join()
        with contextlib.suppress(Exception):  # a lost or unreachable lease is not this job's error
            if _read(uri).get("token") == mine["token"]:
                storage.delete(uri)


def _folder_key(folder: str) -> str:
    """One spelling per folder: S3 URIs as given, local paths absolute."""
    loc = storage.parse_uri(folder)
    return loc.uri.rstrip("/") if loc.is_s3 else os.path.abspath(loc.key)


def _read(uri: str) -> dict:
    try:
        record = json.loads(storage.read_text(uri))
    except FileNotFoundError:
        return {}
    except ValueError:  # half a file from a store without atomic writes: nobody's
        return {}
    return record if isinstance(record, dict) else {}


def _acquire(uri: str, mine: dict, say: Callable[[str], None] | None) -> None:
    data = json.dumps(mine, indent=1).encode()
    folder = uri.rsplit("/", 1)[0]
    watched: tuple | None = None  # (token, heartbeat) of a holder that only its heartbeat can show gone
    deadline = 0.0  # time.monotonic() at which its heartbeat is stale
    takeovers = 0
    while not storage.create_exclusive(uri, data):
        theirs = _read(uri)
        if theirs.get("token") == mine["token"]:  # our own create, answered late and retried
            break
        beat = _number(theirs.get("heartbeat"))
        refused = LeaseHeld(f"{folder} is being written by another job: {_describe(theirs, uri)}. "
                            f"If that job is no longer running, run again with --break-lease")
        if not theirs or beat is None:
            why = "that nobody holds (damaged)"
        elif _pid_here(theirs) is not None:
            if not _holder_is_gone(theirs):
                raise refused
            why = "of a job that is gone"
        else:
            if watched is None:  # the clocks of two hosts agree well enough for a bound of minutes
                watched = (theirs.get("token"), beat)
                wait_s = max(0.0, _stale_after_s(theirs) - max(0.0, time.time() - beat))
                deadline = time.monotonic() + wait_s
                if wait_s and say:
                    say(f"waiting up to {wait_s:.0f} s for the lease of {_describe(theirs, uri)}: it runs on "
                        f"another host or in another container, where only its heartbeat can show that it is "
                        f"gone; with no heartbeat by then the lease is taken over (--break-lease: now)")
            elif (theirs.get("token"), beat) != watched:
                raise refused  # its heartbeat moved: it lives
            left = deadline - time.monotonic()
            if left > 0:
                time.sleep(min(left, _stale_after_s(theirs) / STALE_BEATS / 4))
                continue
            why = "whose heartbeat has stopped"
        takeovers += 1
        if takeovers > 3:
            raise LeaseHeld(f"could not take the lease {uri}: other jobs keep taking it")
        if theirs and say:
            say(f"taking over the lease {why}: {_describe(theirs, uri)}")
        storage.delete(uri)
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
    gone when its holder ran in this process namespace (same host, boot and PID
    namespace) and its process no longer exists. How old a live holder's heartbeat may
    be is the reader's call (``record["heartbeat"]``, seconds since the epoch)."""
    record = _read(uri)
    if not record:
        return "none", {}
    return ("gone" if _holder_is_gone(record) else "live"), record
