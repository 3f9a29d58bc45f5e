"""Tune's restorable state in a sweep folder, signed by the machine that wrote it.

Ray Tune keeps a sweep's state as pickles in its folder (``tuner.pkl``, the
``experiment_state-*.json`` whose trials hold cloudpickled fields, the searcher's and
callbacks' ``*-state-*`` files) and unpickles them when the sweep is restored, which
runs whatever code they name. A sweep folder may sit on a bucket that others can write
to, so the sweep's driver hands Tune a filesystem (:class:`SignedTuneState`) that

- signs every state file Tune writes, before the file reaches the folder: its bytes go
  into ``FOLDER/tune_state.signed`` with an HMAC-SHA256 under a key that never leaves
  the user's machine (:func:`state_key`). So whatever the folder holds after a
  ``kill -9`` of the driver was signed first;
- serves Tune's reads of state files from the verified bytes of that file, held in
  memory, never from the folder: Ray reads exactly what was verified, however the folder
  changes meanwhile, and a state file that was never signed does not exist for it;
- hides every trial's ``error.pkl`` (a pickled exception that Tune reads back for an
  errored trial): Tune then takes the error's text from ``error.txt``;
- hides the sweep's ``lease.json`` and drops Tune's writes of it: on restore Tune copies
  every top-level ``*.json`` of its folder into its staging folder and uploads that copy
  at each save, which would put a dead driver's lease over the live one.

Before a sweep starts or resumes, :meth:`SignedTuneState.open` checks the folder: each
state file there must be a version this key signed, or the sweep is refused (one line,
ValueError) with nothing read. A version signed but not yet uploaded when the driver
was killed, and the one before it, both count as signed.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import os
import posixpath
import secrets
import threading
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from .. import storage
from ..errors import InputError
from ..lease import LEASE_FILE
from ..runtime.internals import tune_experiment_state_pattern, tune_state_patterns

KEY_ENV = "FINEGYM_RAY_STATE_KEY"
MIN_KEY_CHARS = 32
SNAPSHOT = "tune_state.signed"
# The snapshot is read whole; a larger one was not written by a sweep (bytes).
MAX_SNAPSHOT_BYTES = 1 << 30
ERROR_PICKLE = "error.pkl"


def key_path() -> str:
    """Where the signing key lives when ``FINEGYM_RAY_STATE_KEY`` is not set."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "finegym-ray", "state.key")


def state_key() -> tuple[bytes, str]:
    """The key that signs sweep state, and where it came from (for messages).

    ``FINEGYM_RAY_STATE_KEY`` when set (for drivers on clusters: give it as a secret);
    else the key file (:func:`key_path`), made with 32 random bytes on first use,
    readable by its owner only. Raises ValueError for a short key or a key file that
    others may read or write."""
    value = os.environ.get(KEY_ENV)
    if value is not None:
        if len(value) < MIN_KEY_CHARS:
            raise InputError(f"{KEY_ENV} holds {len(value)} characters: give at least {MIN_KEY_CHARS} random "
                             f"ones, e.g. the output of: python -c 'import secrets; print(secrets.token_hex(32))'")
        return value.encode(), KEY_ENV
    path = key_path()
    if not os.path.exists(path):
        _create_key_file(path)
    return _read_key_file(path), path


def _create_key_file(path: str) -> None:
    # Written whole under a temporary name, then linked into place: another driver
    # starting at the same moment either makes the file or finds it complete.
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def _read_key_file(path: str) -> bytes:
    status = os.stat(path)
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise InputError(f"{path}: the key that signs sweep state must be its owner's alone, but it has mode "
                         f"{status.st_mode & 0o777:o} and owner uid {status.st_uid}: chmod 600 it, as this user")
    with open(path, "rb") as f:
        key = f.read().strip()
    if len(key) < MIN_KEY_CHARS:
        raise InputError(f"{path}: the key that signs sweep state holds {len(key)} characters, fewer than "
                         f"{MIN_KEY_CHARS}: delete it (a new one is made), then sweeps it signed cannot resume")
    return key


class _Passthrough(pafs.FileSystemHandler):
    """A pyarrow filesystem handler that hands every call to ``fs``."""

    def __init__(self, fs: pafs.FileSystem):
        self.fs = fs

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Passthrough) and self.fs.equals(other.fs)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def get_type_name(self) -> str:
        return self.fs.type_name

    def normalize_path(self, path: str) -> str:
        return self.fs.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        self.fs.delete_dir_contents("/", accept_root_dir=True)

    def delete_file(self, path: str) -> None:
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.fs.open_input_stream(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: dict | None) -> pa.NativeFile:
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path: str, metadata: dict | None) -> pa.NativeFile:
        return self.fs.open_append_stream(path, metadata=metadata)


class SignedTuneState(_Passthrough):
    """The filesystem to give Tune for the sweep at ``folder`` (see the module's text).

    Pickled (Tune pickles its storage into its state and into every trial), it becomes a
    plain passthrough of the folder's filesystem: neither the key nor the state travels.
    """

    def __init__(self, fs: pafs.FileSystem, path: str, folder: str, *, sweep: str, key: bytes, key_source: str,
                 files: dict[str, bytes], accepted: dict[str, set[str]]):
        super().__init__(fs)
        self.path, self.folder, self.sweep = posixpath.normpath(path), folder, sweep
        self._key, self._key_source = key, key_source
        self._files, self._accepted = files, accepted
        self._patterns = tune_state_patterns()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, folder: str, *, sweep: str) -> SignedTuneState:
        """The signed state of the sweep named ``sweep`` at ``folder`` (none yet for a
        new sweep). Raises ValueError, naming the file, when the signature does not
        match or the folder holds a state file this key did not sign."""
        key, source = state_key()
        fs, path = storage.pyarrow_filesystem(folder)
        files, accepted = _read_snapshot(folder, sweep, key, source)
        state = cls(fs, path, folder, sweep=sweep, key=key, key_source=source, files=files, accepted=accepted)
        state._check_folder()
        return state

    @property
    def filesystem(self) -> pafs.FileSystem:
        return pafs.PyFileSystem(self)

    def holds_experiment_state(self) -> bool:
        """Whether a signed Tune experiment state is there to restore from."""
        return any(fnmatch.fnmatchcase(name, tune_experiment_state_pattern()) for name in self._files)

    def __reduce__(self):
        return _Passthrough, (self.fs,)

    # Copies of Tune's storage in this process must keep signing what they write.
    def __copy__(self) -> SignedTuneState:
        return self

    def __deepcopy__(self, memo: dict) -> SignedTuneState:
        return self

    # ------------------------------------------------------------------ the folder

    def _check_folder(self) -> None:
        for info in self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True)):
            name = self._state_name(info.path)
            if name is None or info.type != pafs.FileType.File:
                continue
            uri = storage.join(self.folder, name)
            if name not in self._accepted:
                raise InputError(f"{uri} is Tune state that this machine's key ({self._key_source}) never signed, "
                                 f"and restoring it could run any code: delete {self.folder} or use another sweep "
                                 f"name (or run with the key that signed it)")
            if self._digest_of(info.path) not in self._accepted[name]:
                raise InputError(f"{uri} was changed after this machine's sweep signed it, and restoring it could "
                                 f"run any code: delete {self.folder} or use another sweep name")

    def _digest_of(self, path: str) -> str:
        digest = hashlib.sha256()
        with self.fs.open_input_stream(path) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        return digest.hexdigest()

    def _state_name(self, path: str) -> str | None:
        """The file's name if ``path`` is a state file of this sweep's folder."""
        parent, name = posixpath.split(posixpath.normpath(path))
        if parent == self.path and any(fnmatch.fnmatchcase(name, p) for p in self._patterns):
            return name
        return None

    def _hidden(self, path: str) -> bool:
        """Whether Tune must not see ``path``: a state file that was never signed, a
        trial's pickled error, or the sweep's lease."""
        name = self._state_name(path)
        return ((name is not None and name not in self._files) or posixpath.basename(path) == ERROR_PICKLE
                or self._is_lease(path))

    def _is_lease(self, path: str) -> bool:
        return posixpath.normpath(path) == posixpath.join(self.path, LEASE_FILE)

    # ------------------------------------------------------------------ Tune's reads

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self._info(path, info) for path, info in zip(paths, self.fs.get_file_info(paths))]

    def _info(self, path: str, info: pafs.FileInfo) -> pafs.FileInfo:
        if self._hidden(path):
            return pafs.FileInfo(path, pafs.FileType.NotFound)
        name = self._state_name(path)
        if name is not None:
            return pafs.FileInfo(path, pafs.FileType.File, size=len(self._files[name]))
        return info

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        infos = [info for info in self.fs.get_file_info(selector)
                 if self._state_name(info.path) is None and not self._hidden(info.path)]
        base = posixpath.normpath(selector.base_dir)
        if base == self.path or (selector.recursive and self.path.startswith(base.rstrip("/") + "/")):
            # Signed files that the folder lacks (not uploaded yet when the driver died) too.
            infos += [pafs.FileInfo(posixpath.join(self.path, name), pafs.FileType.File, size=len(data))
                      for name, data in self._files.items()]
        return infos

    def open_input_stream(self, path: str) -> pa.NativeFile:
        signed = self._signed(path)
        return self.fs.open_input_stream(path) if signed is None else signed

    def open_input_file(self, path: str) -> pa.NativeFile:
        signed = self._signed(path)
        return self.fs.open_input_file(path) if signed is None else signed

    def _signed(self, path: str) -> pa.NativeFile | None:
        """The signed bytes of a state file, None for other files."""
        if self._hidden(path):
            raise FileNotFoundError(path)
        name = self._state_name(path)
        return None if name is None else pa.BufferReader(self._files[name])

    # ------------------------------------------------------------------ Tune's writes

    def open_output_stream(self, path: str, metadata: dict | None) -> pa.NativeFile:
        if self._is_lease(path):
            return pa.PythonFile(_OnClose(lambda data: None), mode="w")
        name = self._state_name(path)
        if name is None:
            return self.fs.open_output_stream(path, metadata=metadata)
        return pa.PythonFile(_OnClose(lambda data: self._sign_then_write(name, data)), mode="w")

    def _sign_then_write(self, name: str, data: bytes) -> None:
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            # Tune uploads every state file at each save, most of them unchanged.
            if self._files.get(name) != data:
                self._files[name] = data
                # Until the upload below is done the folder still holds the version before.
                self._accepted.setdefault(name, set()).add(digest)
                self._write_snapshot()
        storage.write_bytes(storage.join(self.folder, name), data)
        with self._lock:
            self._accepted[name] = {digest}

    def _write_snapshot(self) -> None:
        payload = json.dumps({"sweep": self.sweep,
                              "files": {n: base64.b64encode(d).decode() for n, d in sorted(self._files.items())},
                              "accepted": {n: sorted(d) for n, d in sorted(self._accepted.items())}}).encode()
        storage.write_bytes(storage.join(self.folder, SNAPSHOT), _signature(self._key, payload) + b"\n" + payload)


class _OnClose:
    """A write-only file object that collects what is written and hands it to
    ``on_close`` when closed (``pa.PythonFile`` makes it a pyarrow stream)."""

    def __init__(self, on_close):
        self.on_close, self.parts, self.closed = on_close, [], False

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.on_close(b"".join(self.parts))


def _signature(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).hexdigest().encode()


def _read_snapshot(folder: str, sweep: str, key: bytes, source: str) -> tuple[dict[str, bytes], dict[str, set[str]]]:
    """The signed files of ``folder``'s snapshot and the digests their copies in the
    folder may have; empty when there is no snapshot. Raises ValueError when its
    signature does not match or it was signed for another sweep."""
    uri = storage.join(folder, SNAPSHOT)
    try:
        blob = storage.read_bytes(uri, max_bytes=MAX_SNAPSHOT_BYTES)
    except FileNotFoundError:
        return {}, {}
    tag, _, payload = blob.partition(b"\n")
    if not hmac.compare_digest(tag, _signature(key, payload)):
        raise InputError(f"{uri}: its signature does not match this machine's key ({source}): it was changed, or "
                         f"signed with another key: run with the key that signed it ({KEY_ENV}), or delete "
                         f"{folder} or use another sweep name")
    state: dict[str, Any] = json.loads(payload)
    if state["sweep"] != sweep:
        raise InputError(f"{uri} was signed for sweep {state['sweep']!r}, not {sweep!r}: delete {folder} or use "
                         f"another sweep name")
    files = {name: base64.b64decode(data) for name, data in state["files"].items()}
    return files, {name: set(digests) for name, digests in state["accepted"].items()}

