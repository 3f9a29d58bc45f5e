"""``finegym-ray runs URI``: the training runs under a runs folder (local or s3://), one
row each: name, model, input, task, epochs done / planned, best and last validation
accuracy, the validation clips they are on of the split's labelled keys, and a state.
Sweep folders are walked too: each Tune trial is a run at SWEEP/trials/ID. No Ray and
no torch: it reads config.yaml, the lease and the newest complete checkpoint's
meta.json (through ``checkpoint.py``), never a state.pt.

States:

- ``finished``: the newest complete checkpoint is the last planned epoch's;
- ``running``: a live job holds the lease of the run or of a folder above it (a sweep);
- ``failed``: the last training of the run raised (``failed.json``, written by
  :func:`record_failure` when Ray Train gave up after ``max_failures``, or the job
  failed otherwise), or a lease is left by a job that is gone: its process no longer
  exists on this host, or, for another host, no heartbeat for ``STALE_S`` seconds (a
  driver killed with ``kill -9``, a lost node);
- ``partial``: none of these: stopped (Ctrl-C, an ASHA-stopped trial) or never
  checkpointed; the same training command resumes it;
- ``unreadable``: its files are not what training writes (a config.yaml that is not
  valid YAML or too large, a checkpoint history that is not a list of epoch records, a
  lease of another shape): its row says what, and every other run still shows.

A run's files are read within bounds (``config.parse_yaml``, ``dataset.jsonfile``):
they may come from others, in a shared bucket.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from .. import storage
from ..config import MAX_YAML_BYTES, parse_yaml
from ..dataset.jsonfile import parse_json, read_json_text
from ..errors import InputError
from ..lease import HEARTBEAT_S, LEASE_FILE, lease_holder_state
from . import checkpoint as checkpoints

FAILED_FILE = "failed.json"
UNREADABLE = "unreadable"
MAX_FAILURE_BYTES = 64 << 10  # failed.json holds one line of an error
# What a run's files of an unexpected shape raise on the way to its row: that run's row
# says so instead of a traceback that hides every other run.
_BAD_RUN_ERRORS = (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError)
_CHECKPOINT_DIR = re.compile(rf"{checkpoints.PREFIX}\d{{4,}}")
# A lease from another host whose heartbeat is this old (seconds) counts as left behind:
# ten missed beats. It may still be a stalled job; `runs` only reports, never breaks it.
STALE_S = 10 * HEARTBEAT_S


def record_failure(run: str, error: BaseException, *, what: str = "train") -> None:
    """Leave ``RUN/failed.json`` (the error's type and first line, when) for ``runs``.
    Best effort: the error being raised matters more than this record of it."""
    first = (str(error).strip().splitlines() or [""])[0][:500]
    record = {"what": what, "error": type(error).__name__, "message": first, "time": time.time()}
    try:
        storage.write_text(storage.join(run, FAILED_FILE), json.dumps(record, indent=1) + "\n")
    except Exception:  # noqa: BLE001 - see the docstring
        pass


def clear_failure(run: str) -> None:
    """Remove the failure record when training starts again."""
    storage.delete(storage.join(run, FAILED_FILE))


@dataclass
class RunRow:
    """One run as ``runs`` reports it; accuracies are fractions, None where unknown."""

    name: str  # path below the listed folder
    uri: str
    model: str | None
    input: str | None  # modality
    task: str | None
    epochs_done: int
    epochs_planned: int | None
    best_epoch: int | None  # 1-based, by validation mean class accuracy
    best_mean_class: float | None
    best_top1: float | None
    last_epoch: int | None  # 1-based, the last validated epoch
    last_mean_class: float | None
    last_top1: float | None
    state: str
    note: str = ""
    # The validation clips the accuracies are on, of the split's labelled keys (some may
    # have no clip: a missing video, a failed unit); None for a run that recorded neither.
    val_clips: int | None = None
    val_labelled: int | None = None


def _run_folders(root: str, uris: list[str]) -> tuple[list[str], set[str]]:
    """(run folders, folders holding a lease) among the object URIs below ``root``, as
    paths relative to it ('' for ``root`` itself). A run folder holds config.yaml or
    checkpoint folders; the config.yaml inside a checkpoint is not a run's."""
    base = root.rstrip("/")
    runs, leased = set(), set()
    for uri in uris:
        rel = uri[len(base) + 1:] if uri.startswith(base + "/") else ""
        parent, _, name = rel.rpartition("/")
        if name == LEASE_FILE:
            leased.add(parent)
        if name == "config.yaml" and not _CHECKPOINT_DIR.fullmatch(parent.rpartition("/")[2]):
            runs.add(parent)
        elif name == checkpoints.MANIFEST and _CHECKPOINT_DIR.fullmatch(parent.rpartition("/")[2]):
            runs.add(parent.rpartition("/")[0])
    return sorted(runs), leased


def _lease_of(rel: str, leased: set[str]) -> list[str]:
    """The leased folders at ``rel`` and above it, nearest first."""
    parts = rel.split("/") if rel else []
    chain = ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]
    return [c for c in chain if c in leased]


def _config(text: str, where: str) -> dict:
    """The settings ``runs`` shows from a config.yaml's ``text`` ({} when it is not a
    mapping: another stage's); ValueError naming ``where`` when it cannot be read."""
    try:
        raw = parse_yaml(text)
    except (yaml.YAMLError, RecursionError) as e:
        raise InputError(f"{where}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(raw, dict):
        return {}
    for key in ("model", "modality", "task"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise InputError(f"{where}: {key} is a {type(raw[key]).__name__}, not a name")
    return raw


def _run_config(uri: str) -> dict:
    where = storage.join(uri, "config.yaml")
    try:
        return _config(storage.read_text(where, max_bytes=MAX_YAML_BYTES), where)
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise InputError(f"{where}: not a YAML file (not UTF-8 text)") from None


def _fraction(value: Any) -> float | None:
    """``value`` when it is an accuracy (a number from 0 to 1), else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1  # NaN fails too
    return float(value) if ok else None


def _validated_epochs(meta: Any, where: str) -> list[dict]:
    """The epochs of a checkpoint's history (meta.json at ``where``) that have a
    validation accuracy and an epoch number; ValueError when the history is not a list
    of epoch records."""
    history = meta.get("history", []) if isinstance(meta, dict) else None
    if not isinstance(history, list) or not all(isinstance(m, dict) for m in history):
        raise InputError(f"{where}: its history is not a list of epoch records")
    return [m for m in history if _fraction(m.get("val_mean_class")) is not None
            and isinstance(m.get("epoch"), int) and not isinstance(m["epoch"], bool) and m["epoch"] >= 0]


def describe_run(root: str, rel: str, leased: set[str], *, now: float | None = None) -> RunRow:
    """The row of the run at ``root``/``rel``; ValueError (and the others of
    ``_BAD_RUN_ERRORS``) for files of another shape than training writes."""
    uri = storage.join(root, rel) if rel else root
    config = _run_config(uri)
    skipped: list[str] = []
    latest = checkpoints.find_latest(uri, say=skipped.append)
    validated = _validated_epochs(latest.meta, f"{latest.uri}/meta.json") if latest else []
    if latest and not config:  # config.yaml lost: the checkpoint keeps its own copy
        config = _config(latest.config_yaml, f"{latest.uri}/config.yaml")
    planned = config.get("epochs")
    done = latest.epoch + 1 if latest else 0
    best = max(validated, key=lambda m: (_fraction(m["val_mean_class"]), m["epoch"])) if validated else None
    last = validated[-1] if validated else None
    state, note = _state(root, rel, leased, done=done, planned=planned, now=now)
    val_clips, val_labelled = _val_coverage(latest.meta if latest else None)
    if skipped and not note:
        note = f"{len(skipped)} incomplete checkpoint folder(s) passed over"
    # A detector's run (localize/): its detector as the model, feature sequences as input.
    detector = "model" not in config and config.get("detector")
    return RunRow(name=_row_name(rel, uri), uri=uri, model=config.get("model") or detector or None,
                  input=config.get("modality") or ("feat" if detector else None), task=config.get("task"),
                  epochs_done=done,
                  epochs_planned=planned if isinstance(planned, int) else None,
                  best_epoch=best["epoch"] + 1 if best else None,
                  best_mean_class=_fraction(best["val_mean_class"]) if best else None,
                  best_top1=_fraction(best.get("val_top1")) if best else None,
                  last_epoch=last["epoch"] + 1 if last else None,
                  last_mean_class=_fraction(last["val_mean_class"]) if last else None,
                  last_top1=_fraction(last.get("val_top1")) if last else None, state=state, note=note,
                  val_clips=val_clips, val_labelled=val_labelled)


def _val_coverage(meta: Any) -> tuple[int | None, int | None]:
    """(validation clips, labelled validation keys) that a checkpoint's meta.json records
    (``run.split_coverage``); (None, None) where it records no such counts."""
    val = meta.get("coverage", {}).get("val") if isinstance(meta, dict) and isinstance(meta.get("coverage"),
                                                                                       dict) else None
    counts = [val.get(k) if isinstance(val, dict) else None for k in ("clips", "labelled")]
    if all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return counts[0], counts[1]
    return None, None


def _unreadable_row(root: str, rel: str, error: BaseException) -> RunRow:
    """The row of a run whose files could not be read: ``error`` in one line (our own
    refusals, ValueErrors, name the file; anything else also names its type)."""
    uri = storage.join(root, rel) if rel else root
    why = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
    return RunRow(name=_row_name(rel, uri), uri=uri, model=None, input=None, task=None, epochs_done=0,
                  epochs_planned=None, best_epoch=None, best_mean_class=None, best_top1=None, last_epoch=None,
                  last_mean_class=None, last_top1=None, state=UNREADABLE, note=_one_line(why))


def _row_name(rel: str, uri: str) -> str:
    """A run's name in the table: its path below the listed folder, or the folder's own name."""
    return rel or uri.rstrip("/").rsplit("/", 1)[-1]


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _state(root: str, rel: str, leased: set[str], *, done: int, planned, now: float | None) -> tuple[str, str]:
    now = time.time() if now is None else now
    finished = isinstance(planned, int) and done >= planned
    for folder in _lease_of(rel, leased):
        lease_uri = storage.join(root, folder, LEASE_FILE) if folder else storage.join(root, LEASE_FILE)
        state, record = lease_holder_state(lease_uri)
        who = f"{record.get('what', '?')}, pid {record.get('pid', '?')} on {record.get('host', '?')}"
        age = now - float(record.get("heartbeat", 0))
        if state == "gone" or (state == "live" and age > STALE_S):
            why = "is gone" if state == "gone" else f"sent no heartbeat for {age:.0f} s"
            note = f"its job ({who}) {why} and left its lease {lease_uri}"
            return ("finished", note) if finished else ("failed", note)
        if state == "live" and not finished:
            return "running", who
    if finished:
        return "finished", ""
    failed_uri = storage.join(root, rel, FAILED_FILE) if rel else storage.join(root, FAILED_FILE)
    try:
        failure = parse_json(read_json_text(failed_uri, max_bytes=MAX_FAILURE_BYTES), failed_uri)
    except (FileNotFoundError, ValueError):  # half a file from a store without atomic writes: no record
        failure = None
    if isinstance(failure, dict):
        return "failed", _one_line(f"{failure.get('error')}: {failure.get('message')}")
    return "partial", ""


def list_runs(root: str, *, now: float | None = None) -> list[RunRow]:
    """Every run below ``root`` (itself included, when it is a run), by name. Raises
    FileNotFoundError when ``root`` holds nothing."""
    uris = storage.list_uris(root)
    if not uris:
        raise FileNotFoundError(f"{root}: no such runs folder (nothing there)")
    folders, leased = _run_folders(root, uris)
    rows = []
    for rel in folders:
        try:
            rows.append(describe_run(root, rel, leased, now=now))
        except _BAD_RUN_ERRORS as e:
            rows.append(_unreadable_row(root, rel, e))
    # A config.yaml without checkpoints may be another stage's (preprocessing writes one).
    return [r for r in rows if r.epochs_done or r.model is not None or r.state == UNREADABLE]


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def format_runs(rows: list[RunRow]) -> str:
    """The table ``runs`` prints: accuracies in percent, epochs 1-based, the validation
    clips they are on of the labelled ones (``val clips``: ``7063/8521``); a note under a
    run that is failed, running or unreadable says why."""
    width = max([len(r.name) for r in rows] + [3])
    head = (f"{'run':<{width}}  {'model':<14} {'input':<5} {'task':<15} {'epochs':>7}  "
            f"{'best mean':>9} {'top-1':>6} {'epoch':>5}  {'last mean':>9} {'top-1':>6}  {'val clips':>11}  state")
    lines = [head]
    for r in rows:
        epochs = f"{r.epochs_done}/{r.epochs_planned if r.epochs_planned is not None else '?'}"
        clips = f"{r.val_clips}/{r.val_labelled}" if r.val_clips is not None else "-"
        lines.append(f"{r.name:<{width}}  {(r.model or '?'):<14} {(r.input or '?'):<5} {(r.task or '?'):<15} "
                     f"{epochs:>7}  {_pct(r.best_mean_class):>9} {_pct(r.best_top1):>6} "
                     f"{(r.best_epoch or '-'):>5}  {_pct(r.last_mean_class):>9} {_pct(r.last_top1):>6}  "
                     f"{clips:>11}  {r.state}")
        if r.note and r.state in ("failed", "running", UNREADABLE):
            lines.append(f"{'':<{width}}    {r.note}")
    return "\n".join(lines)


def run(root: str, *, as_json: bool = False, say: Callable[[str], None] = print) -> int:
    """The ``runs`` command: print the table (or a JSON array, an object per run); exit code 0."""
    rows = list_runs(root)
    if as_json:
        say(json.dumps([asdict(r) for r in rows], indent=1))
        return 0
    if not rows:
        say(f"{root}: no training runs (a run folder holds config.yaml or epoch_NNNN/)")
        return 0
    say(format_runs(rows))
    counts = {s: sum(r.state == s for r in rows) for s in ("finished", "running", "partial", "failed", UNREADABLE)}
    say(f"{len(rows)} runs under {root}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0
