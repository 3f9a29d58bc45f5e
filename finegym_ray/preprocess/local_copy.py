"""A node-local copy of a remote video, fetched once per node however many workers ask.

Decoders seek in files; over S3 every seek would be a ranged GET. A worker therefore
asks for a local path: a local URI is returned as is; an ``s3://`` object is downloaded
into a cache folder shared by the node's workers. A file lock makes concurrent workers
wait for the one download instead of repeating it. When the cache would pass its size
cap, the least recently used videos are removed first (a worker that still has one open
keeps reading it: POSIX unlinks only the name).

No ray here: the pipeline decides where the cache lives.
"""

from __future__ import annotations

import fcntl
import hashlib
import os

from .. import storage


def local_copy(uri: str, cache_dir: str, max_bytes: int) -> str:
    """Local path of ``uri``: the path itself for local files, else a cached download.

    ``max_bytes``: size cap of ``cache_dir`` in bytes (a single larger video is still
    fetched). Raises FileNotFoundError if the object does not exist.
    """
    loc = storage.parse_uri(uri)
    if not loc.is_s3:
        return loc.key
    os.makedirs(cache_dir, exist_ok=True)
    digest = hashlib.sha1(loc.uri.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"{digest}-{os.path.basename(loc.key)}")
    with open(os.path.join(cache_dir, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one download per node; released when the file closes
        if os.path.exists(path):
            os.utime(path)  # most recently used
            return path
        storage.download_file(uri, path)  # atomic: a killed download leaves no file at ``path``
        _evict(cache_dir, keep=path, max_bytes=max_bytes)
    return path


def _evict(cache_dir: str, keep: str, max_bytes: int) -> None:
    """Remove least recently used videos, never ``keep``, until the cache fits ``max_bytes``."""
    entries = []
    for name in os.listdir(cache_dir):
        if name.startswith("."):  # the lock and in-flight downloads
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

