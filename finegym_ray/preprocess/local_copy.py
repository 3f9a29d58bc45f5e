"""A node-local copy of a remote video, fetched once per node however many workers ask.

Decoders seek in files; over S3 every seek would be a ranged GET. A worker therefore
asks for a local path: a local URI is returned as is; an ``s3://`` object is downloaded
into a cache folder shared by the node's workers of one user. When the cache would pass
its size cap, the least recently used videos are removed first (a worker that still has
one open keeps reading it: POSIX unlinks only the name).

What makes a cached copy trustworthy:

- Each copy is named by the object's URI, ETag and size, and every call asks the
  server for them (one HEAD), so a video uploaded again (after a truncated upload, say)
  is fetched anew instead of being served from the old copy.
- The folder is this user's own: created 0700, and refused when it is a link, belongs
  to another user or others may write to it, so nobody else can plant or swap a video
  in it. The default folder (``cache_dir`` None) is ``finegym_ray_videos-<uid>`` in the
  temp folder (``$TMPDIR``, else /tmp); when another user already holds that name, the
  first free or own of ``-1`` ... ``-9`` after it, so all of this user's workers on the
  node still meet in one folder.
- Workers asking for the same video wait for the one download behind a file lock
  (``.locks/`` in the folder), but only ``lock_timeout_s`` seconds: then they give up
  with an error naming the video and the lock.

No ray here: the pipeline decides where the cache lives.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator

from .. import storage

log = logging.getLogger(__name__)

# Seconds a worker waits for another worker's download of the same video. Ten minutes
# fetch a 1-2 GB FineGym video at a few MB/s; a longer wait means a stuck download.
LOCK_TIMEOUT_S = 600.0
DEFAULT_NAME = "finegym_ray_videos"
DEFAULT_ALTERNATIVES = 9  # other names tried when another user holds the default one
LOCKS = ".locks"
# A cached copy: 16 hex digits of the URI's hash, then ETag, size and the file name.
_ENTRY = re.compile(r"^[0-9a-f]{16}-")


class CacheFolderError(OSError):
    """A cache folder this user cannot trust: a link, another user's, or writable by others."""


def local_copy(uri: str, cache_dir: str | None, max_bytes: int, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> str:
    """Local path of ``uri``: the path itself for local files, else a cached download of
    the object's current version.

    ``cache_dir``: the cache folder (None: this user's default, see the module
    docstring); ``max_bytes``: its size cap in bytes (a single larger video is still
    fetched); ``lock_timeout_s``: seconds to wait for another worker's download of the
    same video. Raises FileNotFoundError if the object does not exist,
    CacheFolderError for an untrusted folder, TimeoutError when the wait runs out and
    StorageError when the object changed while it was being fetched.
    """
    loc = storage.parse_uri(uri)
    if not loc.is_s3:
        return loc.key
    folder = default_folder() if cache_dir is None else private_folder(cache_dir)
    info = storage.object_info(uri)
    digest = hashlib.sha1(loc.uri.encode()).hexdigest()[:16]
    path = os.path.join(folder, _entry_name(digest, info, os.path.basename(loc.key)))
    with _locked(os.path.join(private_folder(os.path.join(folder, LOCKS)), f"{digest}.lock"), lock_timeout_s, uri):
        if _holds(path, info.size):
            os.utime(path)  # most recently used
            return path
        storage.download_file(uri, path)  # atomic: a killed download leaves no file at ``path``
        _check_unchanged(uri, path, info)
        _evict(folder, keep=path, max_bytes=max_bytes)
    return path


def default_folder() -> str:
    """This user's default cache folder on this node (see the module docstring)."""
    base = os.path.join(tempfile.gettempdir(), f"{DEFAULT_NAME}-{os.geteuid()}")
    refusals = []
    for candidate in [base, *(f"{base}-{n}" for n in range(1, DEFAULT_ALTERNATIVES + 1))]:
        try:
            return private_folder(candidate)
        except CacheFolderError as e:
            log.warning("not using %s", e)
            refusals.append(str(e))
    raise CacheFolderError(f"no private video cache folder of {base} and the {DEFAULT_ALTERNATIVES} names after it "
                           f"could be had ({refusals[0]}); set cache_dir to a folder of your own")


def private_folder(path: str) -> str:
    """``path`` made absolute, created 0700 if missing (its parents as usual); raises CacheFolderError
    when it is a link or not a folder, belongs to another user or others may write to it."""
    path = os.path.abspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    problem = None
    if not stat.S_ISDIR(st.st_mode):
        problem = "a link or file, not a folder"
    elif st.st_uid != os.geteuid():
        problem = f"owned by uid {st.st_uid}, not this user ({os.geteuid()})"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"others may write to it (mode {stat.S_IMODE(st.st_mode):o})"
    if problem:
        raise CacheFolderError(f"video cache folder {path}: {problem}, so another user could put videos there")
    return path


def _entry_name(digest: str, info: storage.ObjectInfo, name: str) -> str:
    """File name of a cached copy of this version of the object; without an ETag (a
    server that sends none), the time of its last write stands in."""
    version = re.sub(r"[^0-9A-Za-z]", "", info.etag or "")[:64] or f"t{int(info.mtime * 1e6)}"
    return f"{digest}-{version}-{info.size}-{name[-100:]}"


def _holds(path: str, size: int) -> bool:
    """Whether ``path`` is a whole copy of ``size`` bytes."""
    try:
        return os.stat(path).st_size == size
    except FileNotFoundError:
        return False


def _check_unchanged(uri: str, path: str, info: storage.ObjectInfo) -> None:
    """Remove the fresh copy ``path`` and raise StorageError unless ``uri`` is still the
    version ``info`` describes and the copy has its size: the copy is named for it."""
    now = storage.object_info(uri)
    if now.etag == info.etag and now.size == info.size and _holds(path, info.size):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    raise storage.StorageError(f"{uri} changed while it was being fetched (now {now.size} bytes, ETag {now.etag}); "
                               "it is fetched again on the next try")


@contextlib.contextmanager
def _locked(lock_path: str, timeout_s: float, uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path``, waiting at most ``timeout_s`` seconds."""
    with open(lock_path, "a") as lock:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"waited {timeout_s:g} s for another process fetching {uri} (it holds "
                                       f"{lock_path}); giving up: that download looks stuck") from None
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
        yield  # released when the file closes


def _evict(cache_dir: str, keep: str, max_bytes: int) -> None:
    """Remove least recently used videos, never ``keep``, until the cache fits
    ``max_bytes``; files this module did not name are never touched."""
    entries = []
    for name in os.listdir(cache_dir):
        if not _ENTRY.match(name):  # the locks, in-flight downloads, anything else
            continue
        full = os.path.join(cache_dir, name)
        try:
            st = os.stat(full)
        except FileNotFoundError:
            continue
        entries.append((st.st_mtime, st.st_size, full))
    used = sum(e[1] for e in entries)
    for _, size, full in sorted(entries):
        if used <= max_bytes:
            break
        if full == keep:
            continue
        try:
            os.unlink(full)
        except FileNotFoundError:
            pass
        used -= size
