"""The import job on Ray Data: the sub-actions that mmaction2 users already hold
(trimmed videos or rawframes, ``mmaction2.py``) -> the preprocessed store's clip shards.

    manifest ── plan units as preprocessing does ── list the source once
        ── per unit and key: its file or folder, or why not (none there, frames
           missing, frame counts that disagree) ── skip units whose shard holds the
           keys importable now (its footer's fingerprint)
        └─ Ray Data: ImportUnits (stages.py): read, resize, flow, JPEG ─
           OUT/clips/<unit>.parquet, OUT/errors/<unit>.json
        └─ driver: an error record per item named by no key, progress, OUT/summary.json

The output is a store as preprocessing writes it, so training, evaluation and
extraction read it as one. Its settings record holds the clips' ``origin`` (which
layout, which flow), hashed with the other settings: preprocessing into it, or
importing the other layout, is refused. A unit's fingerprint covers the keys it
imports, so a key whose file appears later is imported by the next run (its unit again).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import ray

from .. import progress, storage, store
from ..config import to_yaml
from ..dataset.coverage import Coverage, format_coverage
from ..dataset.manifest import build_manifest_from, write_manifest
from ..errors import InputError
from ..lease import writer_lease
from ..video_job import NO_VIDEO, rows_as_done, worker_runtime_env, write_error_record, write_summary
from .config import PreprocessConfig, settings_record
from .mmaction2 import (
    UNKNOWN_ITEM,
    Found,
    find_items,
    import_config,
    origin,
    plan_sources,
    unknown_record_name,
)
from .pipeline import (
    ABANDONED_TEMP_S,
    check_settings,
    existing_units,
    output_coverage,
    output_state,
    output_totals,
    plan,
    record_settings,
    unit_figures,
    verify_shards,
    wall_time_line,
)
from .stages import Pools, map_import_stage, unit_record
from .units import WorkUnit


def run_import(config: PreprocessConfig, annotations: str, layout: str, source: str, out: str, *,
               break_lease: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Import every sub-action of ``annotations`` that ``source`` holds in mmaction2's
    ``layout`` (``mmaction2.SUBACTIONS`` or ``RAWFRAMES``) and ``out`` does not yet;
    returns this run's summary with the whole output's state (``output``, ``totals``,
    ``keys``, ``coverage``), as ``out/summary.json`` holds it. Starts a local Ray unless
    one is initialised or reachable. One job writes to ``out`` at a time (``lease.py``).
    InputError, before anything is written, for settings an import cannot honour
    (``mmaction2.import_config``), a source without items of the layout and an output
    made otherwise."""
    t_start = time.time()
    config = import_config(config, layout)
    manifest = build_manifest_from(annotations)
    units = plan(config, manifest)
    found = find_items(layout, source, {w.key for u in units for w in u.windows})
    from ..capacity import StallWatchdog, check_capacity, preprocess_needs

    if units and ray.is_initialized():
        check_capacity(preprocess_needs(config, Pools(workers=1)), what="import-mmaction2")
    watchdog = StallWatchdog("import-mmaction2", say=say)

    def ticking(message: str) -> None:
        watchdog.progress()
        say(message)

    with writer_lease(out, what=f"import-mmaction2 --out {out}", break_lease=break_lease, say=say), watchdog:
        return _import(config, manifest, units, layout, source, found, out, ticking, t_start)


def _import(config: PreprocessConfig, manifest, units: list[WorkUnit], layout: str, source: str, found: Found,
            out: str, say: Callable[[str], None], t_start: float) -> dict[str, Any]:
    record = settings_record(config, origin(config, layout))
    planned = {u.unit_id for u in units}
    check_settings(record, out)  # every refusal before the first write
    existing = existing_units(out)
    stale = sorted(existing - planned)
    if stale:
        raise InputError(f"{store.clips_dir(out)} holds {len(stale)} shard(s) that the current plan does not make "
                         f"(other annotations or unit_seconds?), e.g. {stale[0]}; import into another --out")
    record_settings(record, out)
    storage.write_text(store.config_uri(out), to_yaml(config))
    write_manifest(manifest, store.manifest_dir(out))
    storage.remove_abandoned_temp_files(store.clips_dir(out), older_than_s=ABANDONED_TEMP_S)
    _record_unknown_items(out, found)

    sources = {u.unit_id: plan_sources(u.windows, found, layout, source, config) for u in units}
    importing = [WorkUnit(u.unit_id, u.video_id, tuple(w for w in u.windows if w.key in sources[u.unit_id][0]))
                 for u in units]
    on_disk: dict[str, dict] = {}
    done, redo = verify_shards(out, [u for u in importing if u.unit_id in existing], record["hash"], totals=on_disk)
    for reason, ids in sorted(redo.items()):
        say(f"importing {len(ids)} unit(s) again whose shard is {reason}, e.g. {ids[0]}")
    todo = [u for u in importing if u.unit_id not in done]
    idle = [u for u in todo if not u.windows]
    for u in idle:  # nothing of it to import: say why per key, and drop what an earlier source gave
        write_error_record(out, u.unit_id, scope="windows", reason="none of its sub-actions can be imported",
                           windows=sources[u.unit_id][1], **unit_record(u.unit_id, u.video_id, source))
        if u.unit_id in existing:
            storage.delete(store.shard_uri(out, u.unit_id))
    runnable = [u for u in todo if u.windows]
    say(f"{len(units)} units planned ({sum(len(u.windows) for u in units)} sub-actions); {len(found.items)} of them "
        f"under {source}: {len(units) - len(todo)} units already done, {len(idle)} with nothing to import, "
        f"{len(runnable)} to import")

    by_id = {u.unit_id: u for u in units}
    results = _import_on_ray(config, layout, source, runnable, by_id, sources, record["hash"], out, say) \
        if runnable else []
    summary = _run_figures(record, source, len(units), len(todo), len(idle), results, len(found.unknown),
                           time.time() - t_start)
    summary["output"] = output_state(out, planned)
    on_disk.update({r["unit_id"]: {"clips": r["clips"], "frames": r["frames"], "video_seconds": r["video_seconds"]}
                    for r in results if r["status"] == "done"})
    summary["totals"] = output_totals(out, units, on_disk)
    summary["coverage"], summary["missing_clips"] = output_coverage(config, manifest, units, out)
    missing = summary["missing_clips"]
    absent = missing.get(NO_VIDEO, 0)
    summary["keys"] = {"planned": summary["totals"]["clips_planned"],
                       "imported": summary["totals"]["clips_planned"] - sum(missing.values()),
                       "failed": sum(missing.values()) - absent, "not_present": absent}
    whole = ("config_hash", "origin", "output", "totals", "keys", "coverage", "missing_clips")
    write_summary(out, {k: summary[k] for k in whole}, {k: v for k, v in summary.items() if k not in whole[1:]},
                  finished_at=time.time())
    return summary


def _record_unknown_items(out: str, found: Found) -> None:
    """An error record per item of the source named by no sub-action key; the records
    of such items that are gone since are removed."""
    names = {unknown_record_name(name): name for name in found.unknown}
    for uri in storage.list_uris(store.errors_dir(out), suffix=store.ERROR_SUFFIX):
        name = uri.rsplit("/", 1)[-1][: -len(store.ERROR_SUFFIX)]
        if name.startswith(UNKNOWN_ITEM) and name not in names:
            storage.delete(uri)
    for record_name, name in sorted(names.items()):
        uri, reason = found.unknown[name]
        write_error_record(out, record_name, scope="name", reason=reason, item=name, uri=uri)


def _import_on_ray(config: PreprocessConfig, layout: str, source: str, units: list[WorkUnit],
                   planned: dict[str, WorkUnit], sources: dict[str, tuple[dict, list]], settings_hash: str, out: str,
                   say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Import ``units`` (each with the windows it imports; ``planned``: every unit as
    planned, by id) on an actor pool; their result rows as they finish."""
    items = [{"unit_id": u.unit_id, "video_id": u.video_id, "video_uri": source,
              "windows": json.dumps([asdict(w) for w in planned[u.unit_id].windows]),
              "sources": json.dumps(sources[u.unit_id][0]), "failed": json.dumps(sources[u.unit_id][1]),
              "fingerprint": u.fingerprint(settings_hash)} for u in units]
    ds, workers = map_import_stage(ray.data.from_items(items, override_num_blocks=len(items)), config, out, layout,
                                   len(units), worker_runtime_env())
    say(f"importing on {workers} actor(s)")
    results, failed, t0 = [], 0, time.time()
    for row in rows_as_done(ds):
        results.append(row)
        failed += row["status"] != "done"
        say(f"{progress.rate_eta(len(results), len(units), time.time() - t0, 'units')} ({failed} failed)")
        if row["status"] != "done" and not row["recorded"]:
            u = planned[row["unit_id"]]
            write_error_record(out, u.unit_id, scope=row["scope"], reason=row["reason"],
                               keys=[w.key for w in u.windows], **unit_record(u.unit_id, u.video_id, source))
    return results


def _run_figures(record: dict, source: str, planned: int, todo: int, idle: int, results: list[dict[str, Any]],
                 unknown: int, wall_s: float) -> dict[str, Any]:
    """This run's own figures (``summary.json``'s ``runs``)."""
    done = [r for r in results if r["status"] == "done"]
    return {"config_hash": record["hash"], "origin": record["settings"]["origin"], "source": source,
            "units": {"planned": planned, "skipped": planned - todo, "done": len(done),
                      "failed": len(results) - len(done), "nothing_to_import": idle},
            "clips": {"written": sum(r["clips"] for r in done)}, "unknown_items": unknown,
            **unit_figures(results, wall_s)}


def format_import_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    u, k = summary["units"], summary["keys"]
    return (f"{summary['origin']}\n"
            f"units: {u['done']} imported, {u['skipped']} skipped (already done), {u['failed']} failed, "
            f"{u['nothing_to_import']} with nothing to import, of {u['planned']}\n"
            f"sub-actions: {k['imported']:,} imported, {k['failed']:,} failed, {k['not_present']:,} not present "
            f"under {summary['source']}, of {k['planned']:,} annotated"
            + (f"; {summary['unknown_items']} item(s) there named by no sub-action key" if summary["unknown_items"]
               else "") + "\n"
            + wall_time_line(summary) + "\n"
            "labelled keys with a clip on disk, per task and split:\n"
            + format_coverage([Coverage.from_record(r) for r in summary["coverage"]], present="imported"))
