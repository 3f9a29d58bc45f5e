"""What the two jobs over videos share: preprocessing (``preprocess/``: videos -> clip
shards) and feature extraction (``localize/extract.py``: videos -> feature files).

Both read their videos through ``video/files.py`` (``require_videos``) and
``video/stream.py`` (frames and flow), run Ray Data actor pools fed one item (a unit, a
video) at a time, and leave the same kinds of record in their output folder:

    OUT/errors/<item>.json   what failed, at which ``scope``, and why (``reason``),
                             written only when something failed (``write_error_record``;
                             read back by ``why_missing``)
    OUT/summary.json         what the output holds, and ``runs``: every run's own
                             figures, oldest first (``write_summary``)

and mark their files with a hash of the settings that made them (``settings_hash``), so
that a rerun skips what is done and refuses to mix in files made with other settings.
No Ray import here: the callers pass Ray's objects in.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import storage
from .store import ERROR_SUFFIX, error_uri, errors_dir, summary_uri

# Why something a job was to make is not in its output, as ``why_missing`` tells it.
NO_VIDEO = "no video"  # the video file (an import's video or frame folder) was not there
FAILED_UNIT = "failed unit"  # its work item failed as a whole (an unreadable video, a crashed worker, ...)
FAILED_WINDOW = "failed window"  # its own window failed; the rest of its unit was cut
NO_RECORD = "no error record"  # not made and no record says why (a job not run, or not finished, on it)
_NO_VIDEO_FILE = "no video file"
_NO_FRAME_FOLDER = "no frame folder"


def settings_hash(settings: dict[str, Any]) -> str:
    """A short, stable hash (16 hex digits) of a JSON-able settings dict, key order ignored."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def failure_reason(e: Exception, uri: str) -> str:
    """Why one item's video (or input file at ``uri``) could not be used, in one line,
    from what reading it raised."""
    from .video.decode import VideoError

    if isinstance(e, VideoError):
        return e.reason
    if isinstance(e, FileNotFoundError):
        return f"not found: {uri}"
    return f"unexpected {type(e).__name__}: {e}"


def no_video_reason(video_id: str, videos: str) -> str:
    """The ``reason`` of the error record of an item whose video file is not under ``videos``."""
    return f"{_NO_VIDEO_FILE} {video_id}.* under {videos}"


def no_frames_reason(key: str, frames: str) -> str:
    """The ``reason`` of a clip whose folder of frames (an import's) is not under ``frames``."""
    return f"{_NO_FRAME_FOLDER} {key}/ under {frames}"


def _says_absent(reason: object) -> bool:
    return isinstance(reason, str) and reason.startswith((_NO_VIDEO_FILE, _NO_FRAME_FOLDER))


def write_error_record(out: str, name: str, *, scope: str, reason: str, **item: Any) -> None:
    """Write ``OUT/errors/<name>.json``: the item (the job's own names for it: unit and
    video, or level and id), the ``scope`` that failed (video, windows, storage, worker,
    flow, pipeline) and why."""
    storage.write_text(error_uri(out, name), json.dumps({**item, "scope": scope, "reason": reason}, indent=1))


def why_missing(out: str, threads: int = 16) -> dict[str, str]:
    """What the error records in ``OUT/errors/`` say is missing from ``OUT``, and why:
    name -> ``NO_VIDEO``, ``FAILED_UNIT`` or ``FAILED_WINDOW``. A record names what it
    covers by ``keys`` (a preprocessing unit: its clip keys), ``windows`` (a unit's
    failed windows, by ``key``; ``NO_VIDEO`` those an import found no file for) or
    ``group`` (a feature extraction item: its sequence id). A name that no record
    covers is missing for ``NO_RECORD``, if at all. A record that cannot be read or is
    not of this shape is passed over: the records explain, they decide nothing. Reads
    ``threads`` records at a time (S3 latency)."""
    from .dataset.jsonfile import parse_json, read_json_text

    def read(uri: str) -> Any:
        try:
            return parse_json(read_json_text(uri, max_bytes=16 << 20), uri)
        except (OSError, ValueError):
            return None

    uris = storage.list_uris(errors_dir(out), suffix=ERROR_SUFFIX)
    with ThreadPoolExecutor(max(1, min(threads, len(uris)))) as pool:
        records = [r for r in pool.map(read, uris) if isinstance(r, dict)]
    why: dict[str, str] = {}
    for record in records:
        reason = record.get("reason")
        whole = NO_VIDEO if record.get("scope") == "video" and _says_absent(reason) else FAILED_UNIT
        names = record.get("keys") if isinstance(record.get("keys"), list) else [record.get("group")]
        why.update({n: whole for n in names if isinstance(n, str)})
        for window in record.get("windows") if isinstance(record.get("windows"), list) else ():
            if isinstance(window, dict) and isinstance(window.get("key"), str):
                why[window["key"]] = NO_VIDEO if _says_absent(window.get("reason")) else FAILED_WINDOW
    return why


def write_summary(out: str, whole: dict[str, Any], run: dict[str, Any], *, finished_at: float) -> dict[str, Any]:
    """Write ``OUT/summary.json``: ``whole`` (what the output holds, whichever runs made
    it) and ``runs``, every run's own figures oldest first, ``run`` (finished at
    ``finished_at``, seconds since the epoch) last. Returns it."""
    uri = summary_uri(out)
    try:
        before = json.loads(storage.read_text(uri))
    except (FileNotFoundError, ValueError):
        before = {}
    history = before.get("runs") if isinstance(before, dict) and isinstance(before.get("runs"), list) else []
    this_run = {**run, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished_at))}
    summary = {**whole, "runs": [*history, this_run]}
    storage.write_text(uri, json.dumps(summary, indent=1) + "\n")
    return summary


def worker_runtime_env() -> dict[str, Any] | None:
    """The runtime env of a job's actors: where S3 is (``--s3-endpoint`` sets it in this
    process only). Credentials are not passed: workers get them from their own
    environment or instance profile, and nothing secret goes into a runtime env that
    Ray logs."""
    env = storage.worker_env()
    return {"env_vars": env} if env else None


def rows_as_done(ds) -> Iterator[dict[str, Any]]:
    """The rows of Ray Dataset ``ds`` as plain dicts, each block's as soon as it is
    produced (``iter_rows`` holds a block back until the next one is ready, which put
    progress a whole item behind the work)."""
    for table in ds.iter_batches(batch_size=None, prefetch_batches=0, batch_format="pyarrow"):
        yield from table.to_pylist()


def actor_pools(cpus: float, gpus: float, items: int, *, cpus_each: float, first: int = 0, second: int = 0,
                gpus_each: float = 1.0, cpus_beside_gpu: float = 0.0, second_on_cpus: int = 1,
                cpus_each_second: float = 1.0) -> tuple[int, int]:
    """(first-stage actors, second-stage actors) of a two-stage job on a cluster with
    ``cpus`` CPUs and ``gpus`` GPUs, for ``items`` work items: decoding actors of
    ``cpus_each`` CPUs first, then the heavy stage (flow, a backbone).

    ``first``, ``second``: counts asked for (0: decided here). With GPUs: a second-stage
    actor per ``gpus_each`` GPUs, each leaving ``cpus_beside_gpu`` CPUs for its own
    Python work, and the rest of the CPUs decoding. Without: ``second_on_cpus``
    second-stage actors of ``cpus_each_second`` CPUs and the rest of the CPUs decoding.
    Never more actors in a stage than items, and at least one in each."""
    if gpus > 0:
        second = second or max(int(gpus // gpus_each), 1)
        spare = cpus - second * cpus_beside_gpu
    else:
        second = second or second_on_cpus
        spare = cpus - second * cpus_each_second
    first = first or max(int(spare // cpus_each), 1)
    return max(min(first, items), 1), max(min(second, items), 1)
