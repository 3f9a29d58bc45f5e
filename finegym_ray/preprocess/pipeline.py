"""The preprocessing job on Ray Data: annotations + raw videos -> clip shards.

    manifest ── plan units (driver) ── skip units whose shard exists
        └─ Ray Data: from_items(units) ─ the cut stages (stages.py, actor pools):
             CutUnits: local copy of the video (once per node) ─ cut_unit ─
             write OUT/clips/<unit>.parquet atomically (or OUT/errors/<unit>.json);
             with tvl1: DecodeUnits (CPU) ─ FlowUnits (GPU where there are GPUs) ─ write
        └─ driver: progress, OUT/summary.json

Output folder (local or s3://):
    preprocess.json       settings that determine the shards, and their hash
    config.yaml           every setting of the last run
    manifest/             the manifest of the annotations (training joins labels from it)
    clips/<unit>.parquet  one row per clip (columns: clips.clip_schema)
    errors/<unit>.json    why a unit, or some of its windows, failed
    summary.json          the whole output (units with clips, clips, frames, seconds) and
                          each run's own figures (counts, wall time, nodes) in ``runs``

Actors write their own shards, rather than returning rows to a Ray Data writer, so
that JPEG bytes never pass through the object store to a writer and each shard is named
by its unit: a rerun skips exactly the units whose shard exists, and a retried unit
(killed worker) rewrites the same file atomically, never a duplicate.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import ray

from .. import progress, storage, store
from ..config import to_yaml
from ..dataset.manifest import build_manifest_from, write_manifest
from ..errors import InputError
from ..lease import writer_lease
from ..store import error_uri, shard_uri
from ..video.files import require_videos
from ..video_job import (
    NO_RECORD,
    no_video_reason,
    rows_as_done,
    why_missing,
    worker_runtime_env,
    write_error_record,
    write_summary,
)
from .clips import shard_footer
from .config import PreprocessConfig, config_hash, settings_record
from .stages import map_cut_stages, unit_record
from .units import WorkUnit, event_windows, merge_windows, plan_units, subaction_windows

# A shard write takes seconds; a temp file this old belongs to a writer that was killed,
# not to one still writing (another job on the same output, say).
ABANDONED_TEMP_S = 600.0


def plan(config: PreprocessConfig, manifest) -> list[WorkUnit]:
    """Work units for the clips ``config`` asks for, largest first."""
    parts = []
    if config.subactions:
        parts.append(subaction_windows(manifest.subactions))
    if config.events:
        parts.append(event_windows(manifest.events))
    return plan_units(merge_windows(*parts), seconds_per_unit=config.unit_seconds)


def check_settings(ours: dict[str, Any], out: str) -> None:
    """Refuse (InputError) to add shards made with other settings to an existing output;
    ``ours``: the settings record of this job's clips (``config.settings_record``).
    Writes nothing."""
    try:
        theirs = json.loads(storage.read_text(store.settings_uri(out)))
    except FileNotFoundError:
        return
    if theirs.get("hash") != ours["hash"]:
        # Keys of either side: an output made before a setting was renamed or folded
        # into another (dis_preset into flow) names both.
        recorded = theirs.get("settings") or {}
        changed = sorted(k for k in set(ours["settings"]) | set(recorded)
                         if recorded.get(k) != ours["settings"].get(k))
        if not changed:
            raise InputError(f"{out} holds clips made by another finegym-ray version: the same settings, hashed "
                             f"another way (hash {theirs.get('hash')} vs {ours['hash']}), and its shards' "
                             f"fingerprints with it; preprocess into another --out")
        raise InputError(f"{out} holds clips made with other settings (changed: {', '.join(changed)}; "
                         f"hash {theirs.get('hash')} vs {ours['hash']}); use another --out or the same settings")


def record_settings(ours: dict[str, Any], out: str) -> None:
    """Record the settings record ``ours`` in ``out`` unless it records them already."""
    # Create-only; settings found were checked before (check_settings), but a writer
    # that broke this job's lease may have recorded its own since.
    if not storage.create_exclusive(store.settings_uri(out), json.dumps(ours, indent=1).encode()):
        check_settings(ours, out)


def existing_units(out: str) -> set[str]:
    """The ids of the units that have a shard under ``out`` (complete or not)."""
    return {uri.rsplit("/", 1)[-1][: -len(".parquet")]
            for uri in storage.list_uris(store.clips_dir(out), suffix=".parquet")}


def verify_shards(out: str, units: list[WorkUnit], settings_hash: str, *, threads: int = 16,
                  totals: dict[str, dict] | None = None) -> tuple[set[str], dict[str, list[str]]]:
    """Which of ``units`` (each with a shard under ``out``/clips) are done: their shard's
    footer is readable and holds the unit's fingerprint. Returns (done unit ids, reason
    -> unit ids to cut again). Reads footers only, ``threads`` at a time (S3 latency).
    ``totals``, when given, receives each done unit's footer totals."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    fs, root = storage.pyarrow_filesystem(out)

    def check(unit: WorkUnit) -> str | None:
        shard_uri(out, unit.unit_id)  # refuses an id that would name a path elsewhere
        path = store.shard_path(root, unit.unit_id)
        try:
            found, unit_totals = shard_footer(fs, path)
        except (OSError, pa.ArrowInvalid):
            return "unreadable (not complete Parquet)"
        if found != unit.fingerprint(settings_hash):
            return "made for other windows or settings" if found else "without a fingerprint (an older version)"
        if unit_totals is None:
            return "without totals (an older version)"
        if totals is not None:
            totals[unit.unit_id] = unit_totals
        return None

    done, redo = set(), {}
    with ThreadPoolExecutor(max(1, min(threads, len(units)))) as pool:
        for unit, reason in zip(units, pool.map(check, units)):
            if reason is None:
                done.add(unit.unit_id)
            else:
                redo.setdefault(reason, []).append(unit.unit_id)
    return done, redo


def output_state(out: str, planned: set[str]) -> dict[str, int]:
    """The output's state over the whole plan, whatever this run did: planned units,
    units whose shard exists, units without one, units with an error record."""
    with_clips = existing_units(out) & planned
    errors = {uri.rsplit("/", 1)[-1][: -len(".json")]
              for uri in storage.list_uris(store.errors_dir(out), suffix=".json")} & planned
    return {"planned": len(planned), "with_clips": len(with_clips), "without_clips": len(planned - with_clips),
            "with_errors": len(errors)}


def run_preprocess(config: PreprocessConfig, annotations: str, videos: str, out: str, *, prune: bool = False,
                   break_lease: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Cut every planned clip not yet in ``out``; returns this run's summary, with
    ``output`` and ``totals``: the whole output's state (``out/summary.json`` holds those
    and every run's figures, ``write_summary``). Starts a local Ray unless one is
    initialised or reachable.

    annotations: a FineGym annotation folder or JSON (local or s3://). videos: folder of
    ``<video_id>.mp4`` files (local or s3://). prune: delete shards and error records of
    units the current plan no longer has (otherwise they make this a ValueError).
    One job writes to ``out`` at a time (``lease.py``): another one is refused with
    LeaseHeld, and ``break_lease`` removes a lease whose job is gone.
    """
    t_start = time.time()
    manifest = build_manifest_from(annotations)
    video_uris = require_videos(videos)  # before anything is written
    from ..capacity import StallWatchdog, check_capacity, preprocess_needs
    from .stages import pool_sizes

    units = len(plan(config, manifest))
    if units and ray.is_initialized():  # else Ray Data starts a local Ray, which pool_sizes fits
        check_capacity(preprocess_needs(config, pool_sizes(config, ray.cluster_resources(), units)),
                       what="preprocess")
    # Every line it says (a unit done) is progress; the watchdog's own are not.
    watchdog = StallWatchdog("preprocess", say=say)

    def ticking(message: str) -> None:
        watchdog.progress()
        say(message)

    with writer_lease(out, what=f"preprocess --out {out}", break_lease=break_lease, say=say), watchdog:
        return _preprocess(config, manifest, videos, video_uris, out, prune, ticking, t_start)


def _preprocess(config: PreprocessConfig, manifest, videos: str, video_uris: dict[str, str], out: str, prune: bool,
                say: Callable[[str], None], t_start: float) -> dict[str, Any]:
    units = plan(config, manifest)
    planned = {u.unit_id for u in units}
    # Every refusal before the first write: a refused run leaves the output as it was
    # (its manifest above all, which training reads).
    check_settings(settings_record(config), out)
    existing = existing_units(out)
    stale = sorted(existing - planned)
    if stale and not prune:
        raise InputError(f"{out}/{store.CLIPS} holds {len(stale)} shard(s) that the current plan does not make "
                         f"(annotations or unit_seconds changed?), e.g. {stale[0]}; pass --prune to delete them")
    record_settings(settings_record(config), out)
    storage.write_text(store.config_uri(out), to_yaml(config))  # the full settings of this run
    write_manifest(manifest, store.manifest_dir(out))
    removed = storage.remove_abandoned_temp_files(store.clips_dir(out), older_than_s=ABANDONED_TEMP_S)
    if removed:
        say(f"removed {len(removed)} temporary file(s) left by a killed writer")
    if stale:
        for unit_id in stale:
            storage.delete(shard_uri(out, unit_id))
            storage.delete(error_uri(out, unit_id))
        say(f"pruned {len(stale)} shard(s) of an earlier plan")
    settings = config_hash(config)
    on_disk: dict[str, dict] = {}
    existing, redo = verify_shards(out, [u for u in units if u.unit_id in existing], settings, totals=on_disk)
    for reason, ids in sorted(redo.items()):
        say(f"cutting {len(ids)} unit(s) again whose shard is {reason}, e.g. {ids[0]}")
    todo = [u for u in units if u.unit_id not in existing]
    missing = [u for u in todo if u.video_id not in video_uris]
    for u in missing:
        write_error_record(out, u.unit_id, scope="video", reason=no_video_reason(u.video_id, videos),
                           keys=[w.key for w in u.windows], **unit_record(u.unit_id, u.video_id, None))
    runnable = [u for u in todo if u.video_id in video_uris]
    say(f"{len(units)} units planned ({sum(len(u.windows) for u in units)} clips, "
        f"{sum(u.seconds for u in units):.0f} s of video): {len(units) - len(todo)} already done, "
        f"{len(missing)} without a video file, {len(runnable)} to cut")

    results = _cut_on_ray(config, runnable, video_uris, out, say) if runnable else []
    summary = _summary(config, units, todo, missing, results, time.time() - t_start)
    summary["recut"] = {reason: len(ids) for reason, ids in sorted(redo.items())}
    summary["output"] = output_state(out, planned)
    on_disk.update({r["unit_id"]: {"clips": r["clips"], "frames": r["frames"], "video_seconds": r["video_seconds"]}
                    for r in results if r["status"] == "done"})
    summary["totals"] = output_totals(out, units, on_disk)
    summary["coverage"], summary["missing_clips"] = output_coverage(config, manifest, units, out)
    whole = ("config_hash", "output", "totals", "coverage", "missing_clips")
    write_summary(out, {k: summary[k] for k in whole}, {k: v for k, v in summary.items() if k not in whole[1:]},
                  finished_at=time.time())
    return summary


def output_coverage(config: PreprocessConfig, manifest, units: list[WorkUnit],
                    out: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """What the clips on disk cover, whichever runs cut them: per task and split, the
    labelled keys with a clip (``dataset.coverage``; the event task where routines are
    cut, the others where sub-actions are), as records; and the planned clips without
    one by cause (``video_job.why_missing``). A unit's clips are its windows when its
    shard exists, less the windows its error record names (failed, or without a file
    to import)."""
    from ..dataset.coverage import COVERAGE_TASKS, coverage

    why = why_missing(out)
    with_clips = existing_units(out)
    planned = {w.key for u in units for w in u.windows}
    cut = {w.key for u in units if u.unit_id in with_clips for w in u.windows if w.key not in why}
    tasks = [t for t in COVERAGE_TASKS if (config.events if t == "event" else config.subactions)]
    rows = [r.record() for r in coverage(manifest, keys=cut, tasks=tasks)]
    return rows, dict(sorted(Counter(why.get(k, NO_RECORD) for k in planned - cut).items()))


def output_totals(out: str, units: list[WorkUnit], known: dict[str, dict]) -> dict[str, Any]:
    """What the output holds over the whole plan, whichever runs cut it: units with
    clips, clips, frames and seconds of clips on disk, and clips planned. ``known``: unit
    id -> its totals (from verified shard footers or this run's results); a shard not in
    it (one the next run cuts again) counts as a unit with clips and nothing more."""
    present = existing_units(out) & {u.unit_id for u in units}
    totals = {"clips": 0, "frames": 0, "video_seconds": 0.0}
    for unit_id in sorted(present & set(known)):
        for k in totals:
            totals[k] += known[unit_id][k]
    return {"units_planned": len(units), "units_with_clips": len(present),
            "clips_planned": sum(len(u.windows) for u in units), "clips": totals["clips"],
            "frames": totals["frames"], "video_seconds": round(totals["video_seconds"], 3)}


def _cut_on_ray(config: PreprocessConfig, units: list[WorkUnit], video_uris: dict[str, str], out: str,
                say: Callable[[str], None]) -> list[dict[str, Any]]:
    settings = config_hash(config)
    items = [{"unit_id": u.unit_id, "video_id": u.video_id, "video_uri": video_uris[u.video_id],
              "windows": json.dumps([asdict(w) for w in u.windows]), "fingerprint": u.fingerprint(settings)}
             for u in units]
    ds, pools = map_cut_stages(ray.data.from_items(items, override_num_blocks=len(items)), config, out, len(units),
                               _with_test_faults(worker_runtime_env()))
    if pools.flow_workers:
        say(f"flow {config.flow.method}: {pools.workers} decoding actor(s), {pools.flow_workers} flow actor(s) "
            + (f"with {pools.flow_gpus:g} GPU each" if pools.flow_gpus else "on CPUs"))
    results, failed, t0 = [], 0, time.time()
    for row in rows_as_done(ds):
        results.append(row)
        failed += row["status"] != "done"
        # The rate counts from the start of the stage (actors starting included), so the
        # ETA errs long early on.
        say(f"{progress.rate_eta(len(results), len(units), time.time() - t0, 'units')} ({failed} failed)")
        if row["status"] != "done" and not row["recorded"]:
            _record_here(out, row, units, video_uris, say)
    return results


def _record_here(out: str, row: dict[str, Any], units: list[WorkUnit], video_uris: dict[str, str],
                 say: Callable[[str], None]) -> None:
    """Write the error record a worker could not write (its storage writes failed)."""
    unit = next(u for u in units if u.unit_id == row["unit_id"])
    try:
        write_error_record(out, unit.unit_id, scope=row["scope"], reason=row["reason"],
                           keys=[w.key for w in unit.windows],
                           **unit_record(unit.unit_id, unit.video_id, video_uris.get(unit.video_id)))
    except Exception as e:  # noqa: BLE001 - the summary still counts it
        say(f"could not record the failure of {unit.unit_id} ({row['reason']}): {type(e).__name__}: {e}")


def _with_test_faults(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    if not os.environ.get("FINEGYM_RAY_TEST_CRASH_UNIT"):
        return runtime_env
    env = dict((runtime_env or {}).get("env_vars", {}),
               FINEGYM_RAY_TEST_CRASH_UNIT=os.environ["FINEGYM_RAY_TEST_CRASH_UNIT"])
    return {**(runtime_env or {}), "env_vars": env}


def _summary(config: PreprocessConfig, units: list[WorkUnit], todo: list[WorkUnit], missing: list[WorkUnit],
             results: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    done = [r for r in results if r["status"] == "done"]
    return {
        "config_hash": config_hash(config),
        "units": {"planned": len(units), "skipped": len(units) - len(todo), "done": len(done),
                  "failed": len(results) - len(done) + len(missing)},
        "clips": {"written": sum(r["clips"] for r in done), "failed": sum(r["failed_clips"] for r in results)
                  + sum(len(u.windows) for u in missing)},
        **unit_figures(results, wall_s),
    }


def unit_figures(results: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
    """The figures every unit job's summary has: frames and seconds of video of the units
    done, the run's wall seconds, worker seconds per stage, and units per node."""
    done = [r for r in results if r["status"] == "done"]
    stage: Counter = Counter()
    for r in done:
        stage.update(json.loads(r["stage_seconds"]))
    return {"frames": sum(r["frames"] for r in done),
            "video_seconds": round(sum(r["video_seconds"] for r in done), 3),
            "wall_s": round(wall_s, 3),
            "stage_seconds": {k: round(v, 3) for k, v in sorted(stage.items())},
            "units_per_node": dict(Counter(r["node_id"] for r in results))}


def wall_time_line(summary: dict[str, Any]) -> str:
    """The summary's line of wall time, nodes and worker seconds per stage."""
    stages = ", ".join(f"{k} {v:.1f}" for k, v in summary["stage_seconds"].items())
    return (f"wall time {summary['wall_s']:.1f} s on {len(summary['units_per_node'])} node(s); "
            f"worker seconds by stage: {stages or '-'}")


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    u, c = summary["units"], summary["clips"]
    return (f"units: {u['done']} done, {u['skipped']} skipped (already done), {u['failed']} failed "
            f"of {u['planned']}\n"
            f"clips: {c['written']} written, {c['failed']} failed; {summary['frames']} frames, "
            f"{summary['video_seconds']:.1f} s of video\n"
            + wall_time_line(summary)
            + (f"\noutput: {summary['output']['with_clips']} of {summary['output']['planned']} units have clips, "
               f"{summary['output']['with_errors']} have error records" if "output" in summary else "")
            + (f"; {summary['totals']['clips']} of {summary['totals']['clips_planned']} planned clips on disk, "
               f"{summary['totals']['frames']} frames, {summary['totals']['video_seconds']:.1f} s"
               if "totals" in summary else "")
            + (_format_coverage(summary) if "coverage" in summary else ""))


def _format_coverage(summary: dict[str, Any]) -> str:
    """The lines of what the clips on disk cover (``output_coverage``)."""
    from ..dataset.coverage import Coverage, format_coverage

    missing = summary.get("missing_clips") or {}
    return ("\nlabelled keys with a clip on disk, per task and split:\n"
            + format_coverage([Coverage.from_record(r) for r in summary["coverage"]], present="cut")
            + ("\nplanned clips without one: " + ", ".join(f"{n:,} {why}" for why, n in missing.items())
               + " (the output's errors/ say why)" if missing else ""))
