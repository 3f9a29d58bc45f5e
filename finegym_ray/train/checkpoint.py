"""A run's checkpoints: the one module that writes, finds, verifies, loads and prunes
``RUN/epoch_NNNN/`` (local folder or s3://). No Ray here: the worker loop, resume,
evaluation and (later) Tune trials all come through these functions.

    RUN/epoch_NNNN/     NNNN: the epochs done when it was written, as the log counts
                        them (epoch_0001 holds the state after the first epoch)
        state.pt        model, optimizer, scheduler, epoch, RNG states: tensors and
                        plain Python values only, so ``torch.load(weights_only=True)``
                        reads it and a checkpoint from a shared bucket cannot run code
        config.yaml     the resolved TrainConfig
        meta.json       epoch, class names, data settings hash, metrics of every epoch
        manifest.json   written last: format, epoch, size and sha256 of each file above

A checkpoint is complete when its manifest exists and every file it lists is there with
that size and hash. The manifest goes last, and an earlier manifest is removed before a
folder is rewritten, so a writer killed at any point leaves a folder that is not taken
for complete. Readers take the newest complete checkpoint and say which newer folders
they passed over and why.

Epochs are counted from 1 wherever a person reads them (folder names, logs, tables);
inside the files (``epoch`` in state.pt, meta.json, each history entry and the
manifest) an epoch is still its 0-based index, so ``epoch_0001`` holds epoch 0.
A manifest of another format is refused (CheckpointFormatError), never skipped: its
folders would be misnumbered, and training on past them would hide the run's epochs.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import storage
from ..dataset.errors import FormatError
from ..dataset.jsonfile import parse_json
from ..errors import InputError

FORMAT = 2  # the manifest's format: folder numbers count the epochs done
PREFIX = "epoch_"
MANIFEST = "manifest.json"
FILES = ("state.pt", "config.yaml", "meta.json")
_DIR_RE = re.compile(r"epoch_(\d{4,})")
# meta.json holds the class names and some hundred bytes per epoch, config.yaml and the
# manifest a page: a file far past that is refused before it is read whole.
MAX_TEXT_BYTES = 16 << 20


class CheckpointError(InputError):
    """A checkpoint that is incomplete, corrupt or holds something other than plain state."""


class UnsafeCheckpointError(CheckpointError):
    """A state.pt that would need arbitrary Python objects (code) to load."""


class CheckpointFormatError(InputError):
    """A checkpoint of another format than FORMAT (another finegym-ray wrote it). Not a
    CheckpointError, so that no reader passes over it to an older folder."""


def dir_name(epoch: int) -> str:
    """Folder name of the checkpoint written after ``epoch`` (0-based): the number of
    epochs done, ``epoch_0001`` after the first."""
    return f"{PREFIX}{epoch + 1:04d}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(run: str, epoch: int, *, state: dict, config_yaml: str, meta: dict) -> str:
    """Write the checkpoint of ``epoch`` under ``run``; returns its URI.

    ``state``: tensors and plain values (see :func:`rng_state` for the RNG part).
    ``meta`` gets ``epoch`` and ``format`` added.
    """
    import torch

    uri = storage.join(run, dir_name(epoch))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    blobs = {"state.pt": buffer.getvalue(), "config.yaml": config_yaml.encode(),
             "meta.json": (json.dumps({**meta, "epoch": epoch, "format": FORMAT}, indent=1) + "\n").encode()}
    # A manifest left from an earlier write of this epoch must not vouch for new files.
    storage.delete(storage.join(uri, MANIFEST))
    for name, data in blobs.items():
        storage.write_bytes(storage.join(uri, name), data)
    manifest = {"format": FORMAT, "epoch": epoch,
                "files": {name: {"bytes": len(data), "sha256": _sha256(data)} for name, data in blobs.items()}}
    storage.write_text(storage.join(uri, MANIFEST), json.dumps(manifest, indent=1) + "\n")
    return uri


@dataclass(frozen=True)
class Found:
    """A checkpoint folder seen in a listing: its epoch, URI and the files present."""

    epoch: int
    uri: str
    names: frozenset[str]


def listing(run: str) -> list[Found]:
    """Every ``epoch_NNNN/`` folder under ``run``, oldest first, complete or not."""
    base = run.rstrip("/")
    names: dict[str, set[str]] = {}
    for uri in storage.list_uris(base):
        head, _, tail = uri[len(base) + 1:].partition("/")
        if _DIR_RE.fullmatch(head) and tail and "/" not in tail:
            names.setdefault(head, set()).add(tail)
    return sorted((Found(_folder_epoch(d), storage.join(run, d), frozenset(n)) for d, n in names.items()),
                  key=lambda f: f.epoch)


def _folder_epoch(name: str) -> int:
    """The 0-based epoch a folder named ``name`` holds."""
    return int(name[len(PREFIX):]) - 1


def _manifest(found: Found) -> dict:
    if MANIFEST not in found.names:
        raise CheckpointError(f"{found.uri}: no {MANIFEST} (the write did not finish)")
    try:
        manifest = json.loads(storage.read_text(storage.join(found.uri, MANIFEST), max_bytes=MAX_TEXT_BYTES))
        files, version = manifest["files"], manifest.get("format")
        if isinstance(version, int) and version != FORMAT:
            raise CheckpointFormatError(f"{found.uri}: checkpoint format {version}, this finegym-ray reads "
                                        f"{FORMAT} (made by another version): train the run again under another "
                                        f"name")
        if version != FORMAT or manifest.get("epoch") != found.epoch or set(files) != set(FILES):
            raise InputError("unexpected format, epoch or file list")
    except CheckpointFormatError:
        raise
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{found.uri}: unreadable {MANIFEST} ({e})") from None
    missing = sorted(set(files) - found.names)
    if missing:
        raise CheckpointError(f"{found.uri}: {', '.join(missing)} missing")
    return manifest


def _read_verified(found: Found, manifest: dict, name: str, *, max_bytes: int | None = None) -> bytes:
    try:
        data = storage.read_bytes(storage.join(found.uri, name), max_bytes=max_bytes)
    except ValueError as e:  # more than max_bytes; the message names the file
        raise CheckpointError(str(e)) from None
    want = manifest["files"][name]
    if len(data) != want["bytes"] or _sha256(data) != want["sha256"]:
        raise CheckpointError(f"{found.uri}: {name} is {len(data)} bytes and does not match its manifest "
                              f"({want['bytes']} bytes)")
    return data


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: URI, epoch, its meta.json and config.yaml contents."""

    uri: str
    epoch: int
    meta: dict
    config_yaml: str
    manifest: dict

    @property
    def identity(self) -> str:
        """SHA-256 of the manifest (which holds the size and hash of every file): the
        same checkpoint, byte for byte, has the same identity, wherever it is read."""
        return _sha256(json.dumps(self.manifest, sort_keys=True).encode())

    def load_state(self) -> dict:
        """state.pt, verified against the manifest and loaded with ``weights_only=True``
        on CPU. Raises CheckpointError when it does not match or holds objects other
        than tensors and plain values (UnsafeCheckpointError: it is never unpickled with
        arbitrary globals)."""
        import torch

        data = _read_verified(Found(self.epoch, self.uri, frozenset(FILES)), self.manifest, "state.pt")
        try:
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(f"{self.uri}/state.pt refused: it holds objects other than tensors and plain "
                                        f"values, which could run code when loaded{_named_global(e)}") from None


def _named_global(e: pickle.UnpicklingError) -> str:
    """`` (it names io.open)``: the Python object a refused pickle asked for, '' when
    PyTorch's message names none. Only that: the rest of PyTorch's message advises
    loading the file with weights_only=False, which would run its code."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    return f" (it names {match.group(1)})" if match else ""


def _read_text(found: Found, manifest: dict, name: str) -> str:
    """The verified text file ``name`` of ``found``, at most MAX_TEXT_BYTES bytes of
    UTF-8; CheckpointError naming it otherwise."""
    data = _read_verified(found, manifest, name, max_bytes=MAX_TEXT_BYTES)
    try:
        return data.decode()
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{storage.join(found.uri, name)}: not UTF-8 text (at byte {e.start})") from None


def _read_meta(found: Found, manifest: dict) -> dict:
    """meta.json of ``found``: a JSON object within parse_json's bounds (no integer past
    64 bits), else CheckpointError naming it."""
    uri = storage.join(found.uri, "meta.json")
    try:
        meta = parse_json(_read_text(found, manifest, "meta.json"), uri)
    except FormatError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{uri}: not a JSON object")
    return meta


def _open(found: Found) -> Checkpoint:
    manifest = _manifest(found)
    meta = _read_meta(found, manifest)
    return Checkpoint(found.uri, manifest["epoch"], meta, _read_text(found, manifest, "config.yaml"), manifest)


def find_latest(run: str, *, say: Callable[[str], None] | None = None,
                verify_state: bool = False) -> Checkpoint | None:
    """The newest complete checkpoint of ``run``, or None when it has none.

    Newer folders that are incomplete or corrupt are passed over, and ``say`` is told
    which and why; one of another format is refused (CheckpointFormatError).
    ``verify_state`` also reads state.pt and checks its hash (a reader that loads it
    anyway, such as :func:`load_latest`, need not)."""
    for found in reversed(listing(run)):
        try:
            checkpoint = _open(found)
            if verify_state:
                _read_verified(found, checkpoint.manifest, "state.pt")
            return checkpoint
        except CheckpointError as e:
            if say:
                say(f"skipping {e}")
    return None


def run_of(uri: str) -> str:
    """The run folder holding the checkpoint at ``uri``."""
    return uri.rstrip("/").rsplit("/", 1)[0]


def open_at(uri: str, *, verify_state: bool = False) -> Checkpoint | None:
    """The checkpoint whose folder is ``uri`` (``RUN/epoch_NNNN``), verified; None when
    ``uri`` is not a checkpoint folder of its run. Raises CheckpointError when it is one
    but incomplete or corrupt."""
    uri = uri.rstrip("/")
    match = _DIR_RE.fullmatch(uri.rsplit("/", 1)[-1])
    if match is None or "/" not in uri:
        return None
    names = {u[len(uri) + 1:] for u in storage.list_uris(uri)}
    if not names:
        return None
    found = Found(_folder_epoch(match.group(0)), uri, frozenset(n for n in names if "/" not in n))
    checkpoint = _open(found)
    if verify_state:
        _read_verified(found, checkpoint.manifest, "state.pt")
    return checkpoint


def open_checkpoint(uri: str) -> Checkpoint:
    """The checkpoint ``uri`` names, verified (state.pt is not read): a run folder's
    newest complete checkpoint, or the checkpoint folder itself when ``uri`` is one of a
    run's ``epoch_NNNN`` folders (``run_of`` gives its run). Raises FileNotFoundError
    when there is no such run, folder or complete checkpoint, and CheckpointError when
    the folder named is incomplete or corrupt; each message starts with ``uri``."""
    uri = uri.rstrip("/")
    head, _, tail = uri.rpartition("/")
    # Any epoch_<digits> names a checkpoint folder, so that a wrong number is told as one.
    if re.fullmatch(rf"{PREFIX}\d+", tail):
        found = [f for f in listing(head) if f.uri.rstrip("/") == uri]
        if not found:
            raise FileNotFoundError(f"{uri}: no such checkpoint folder")
        return _open(found[0])
    checkpoint = find_latest(uri)
    if checkpoint is None:
        if not storage.list_uris(uri):
            raise FileNotFoundError(f"{uri}: no such run (a run is RUNS/NAME as train printed it, "
                                    "or one of its epoch_NNNN folders)")
        raise FileNotFoundError(f"{uri}: no complete checkpoint (train the run first)")
    return checkpoint


def find_best(run: str, *, metric: str = "val_mean_class", say: Callable[[str], None] | None = None,
              verify_state: bool = False) -> Checkpoint | None:
    """The complete checkpoint of ``run`` whose epoch has the highest ``metric`` (the
    newest of equals) in the newest checkpoint's history; the newest checkpoint when no
    epoch recorded the metric (no validation during training: ``say`` hears so). When
    the best epoch's checkpoint is gone (pruned with keep_best off), the best of those
    still there, and ``say`` hears that too. None when the run has no checkpoint."""
    latest = find_latest(run, say=say, verify_state=verify_state)
    if latest is None:
        return None
    scored = {m["epoch"]: m[metric] for m in latest.meta.get("history", []) if m.get(metric) is not None}
    if not scored:
        if say:
            say(f"{run}: no epoch recorded {metric} (no validation during training): taking the newest checkpoint")
        return latest
    best_epoch = max(scored, key=lambda e: (scored[e], e))
    for found in sorted((f for f in listing(run) if f.epoch in scored), key=lambda f: (scored[f.epoch], f.epoch),
                        reverse=True):
        try:
            checkpoint = _open(found)
            if verify_state:
                _read_verified(found, checkpoint.manifest, "state.pt")
        except CheckpointError as e:
            if say:
                say(f"skipping {e}")
            continue
        if found.epoch != best_epoch and say:
            say(f"{run}: the best epoch by {metric} ({best_epoch + 1}) has no complete checkpoint; taking the best "
                f"one there is, {found.uri}")
        return checkpoint
    return latest


def select(uri: str, which: str = "last", *, say: Callable[[str], None] | None = None,
           verify_state: bool = False) -> Checkpoint | None:
    """The checkpoint ``uri`` names: ``uri`` itself when it is a checkpoint folder
    (``which`` is then ignored), else the run's ``last`` (newest complete) or ``best``
    (highest validation mean class accuracy) checkpoint. None when there is none."""
    if which not in ("last", "best"):
        raise InputError(f"checkpoint must be best or last, got {which!r}")
    named = open_at(uri, verify_state=verify_state)
    if named is not None:
        return named
    if which == "best":
        return find_best(uri, say=say, verify_state=verify_state)
    return find_latest(uri, say=say, verify_state=verify_state)


def load_latest(run: str, *, say: Callable[[str], None] | None = None) -> tuple[Checkpoint, dict] | None:
    """(checkpoint, its loaded state) of the newest checkpoint that is complete and whose
    state verifies, falling back to older ones (and saying so); None when there is none.
    A state refused as unsafe stops the search (UnsafeCheckpointError): someone wrote
    it on purpose, and training on from an older checkpoint would hide that."""
    for found in reversed(listing(run)):
        try:
            checkpoint = _open(found)
            return checkpoint, checkpoint.load_state()
        except UnsafeCheckpointError:
            raise
        except CheckpointError as e:
            if say:
                say(f"skipping {e}")
    return None


def restore(resumed: tuple[Checkpoint, dict] | None, *, model, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Load what :func:`load_latest` returned into a training's model, optimizer and
    scheduler (on their device already: an optimizer state goes to its parameters'
    device) and restore the RNG states. Returns (the next epoch, 0-based; the history so
    far); (0, []) when ``resumed`` is None."""
    if resumed is None:
        return 0, []
    found, state = resumed
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return found.epoch + 1, found.meta["history"]


def prune(run: str, *, keep_last: int, keep_best: bool, metric: str = "val_mean_class") -> list[str]:
    """Delete checkpoints of ``run`` that resume and evaluation would no longer take,
    keeping the newest ``keep_last`` (0: keep all) that verify as :func:`load_latest`
    verifies them (every file, state.pt included, against its manifest) and, with
    ``keep_best``, the one :func:`find_best` would take. A damaged checkpoint never
    counts towards those kept. Only folders older than the newest verified one are
    deleted: newer ones (damaged, or without a manifest because their write did not
    finish) are rewritten when their epoch comes round again, and folders without a
    manifest are left alone wherever they are. Nothing is deleted when no checkpoint
    verifies. Reads the state of each kept checkpoint (for a ResNet-50, about 200 MB
    each). Returns the deleted checkpoint URIs."""
    if keep_last <= 0:
        return []
    with_manifest = []  # oldest first
    for found in listing(run):
        try:
            _manifest(found)
        except CheckpointError:
            continue
        with_manifest.append(found)
    kept: list[tuple[int, Checkpoint]] = []  # (index in with_manifest, checkpoint), newest first
    for index in range(len(with_manifest) - 1, -1, -1):
        checkpoint = _verified(with_manifest[index])
        if checkpoint is not None:
            kept.append((index, checkpoint))
            if len(kept) == keep_last:
                break
    if not kept:
        return []
    keep = {index for index, _ in kept}
    if keep_best:
        keep |= _best_verified(with_manifest, kept[0][1].meta.get("history", []), metric)
    deleted = []
    for index, found in enumerate(with_manifest[:kept[0][0]]):
        if index in keep:
            continue
        # The manifest first: a prune cut short leaves an incomplete folder, never a
        # "complete" one with files gone.
        for name in [MANIFEST, *sorted(found.names - {MANIFEST})]:
            storage.delete(storage.join(found.uri, name))
        storage.remove_empty_folder(found.uri)
        deleted.append(found.uri)
    return deleted


def _verified(found: Found) -> Checkpoint | None:
    """The checkpoint in ``found`` when every file matches its manifest, else None."""
    try:
        checkpoint = _open(found)
        _read_verified(found, checkpoint.manifest, "state.pt")
    except CheckpointError:
        return None
    return checkpoint


def _best_verified(with_manifest: list[Found], history: list[dict], metric: str) -> set[int]:
    """{index in ``with_manifest``} of the checkpoint with the highest ``metric`` in
    ``history`` (the newest of equals) among those that verify; empty when none does."""
    scored = {m["epoch"]: m[metric] for m in history if m.get(metric) is not None}
    candidates = sorted((i for i, found in enumerate(with_manifest) if found.epoch in scored),
                        key=lambda i: (scored[with_manifest[i].epoch], with_manifest[i].epoch), reverse=True)
    for index in candidates:
        if _verified(with_manifest[index]) is not None:
            return {index}
    return set()


def rng_state() -> dict:
    """This process's RNG states (torch, CUDA, numpy, Python) as tensors and plain values."""
    import torch

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
