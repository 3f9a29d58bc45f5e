"""The processes this test session started, found by pid, never by a title alone: another
user's Ray on the same host runs processes of the same titles (``ray::RayTrainWorker``,
``raylet``), and a test must never signal those.

A process is this session's when it descends from the pytest process, or when its
environment carries the session's mark, or when it descends from one that does. The mark
(``SESSION_ENV``, a fresh value per session, set before any test starts anything) is
inherited by every process the tests start, also by the Ray processes that ``ray start``
leaves running after it exits, whose parent chain then ends at init. Ray's worker
processes may write their title over their environment's memory; their raylet, which
they descend from, carries the mark.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

SESSION_ENV = "FINEGYM_TEST_SESSION"


def new_session_mark() -> str:
    """A value for ``SESSION_ENV`` that no other session has."""
    return uuid.uuid4().hex


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (zombies left out: they are already dead)."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            state, ppid = Path("/proc", entry, "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue
        if state != "Z":
            parents[int(entry)] = int(ppid)
    return parents


def _descendants_in(parents: dict[int, int], roots: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, their children, ...)."""
    return sorted(_descendants_in(_parents(), {pid}))


def _carries_mark(pid: int, mark: bytes) -> bool:
    try:
        return mark in Path("/proc", str(pid), "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's
        return False


def own_pids() -> set[int]:
    """The live processes this session started (see the module's docstring), this
    process left out."""
    parents = _parents()
    roots = {os.getpid()}
    value = os.environ.get(SESSION_ENV)
    if value:
        mark = f"{SESSION_ENV}={value}".encode()
        roots |= {pid for pid in parents if _carries_mark(pid, mark)}
    return (roots | _descendants_in(parents, roots)) - {os.getpid()}


def own_pids_with(text: str) -> list[int]:
    """This session's live processes whose command line (Ray sets actors' titles there)
    holds ``text``."""
    found = []
    for pid in sorted(own_pids()):
        try:
            if text in Path("/proc", str(pid), "cmdline").read_bytes().decode(errors="replace"):
                found.append(pid)
        except OSError:
            continue
    return found


def own_pids_with_env(name: str, value: str) -> list[int]:
    """This session's live processes whose environment sets ``name`` to ``value``: all
    that a ``ray start`` run with that setting left, also those whose command line does
    not name it (Ray's client server)."""
    entry = f"{name}={value}".encode()
    return [pid for pid in sorted(own_pids()) if _carries_mark(pid, entry)]
