"""Feature extraction for localization on Ray Data: videos -> snippet feature sequences.

    driver: the backbone (a trained recognition run), the work items (one per video at
            action level, one per routine at sub-action level, one per clip shard for the
            element features), the items whose file is already complete skipped; the
            backbone's weights loaded once, here (a state that would run code is
            refused before any Ray work), into the object store for the actors
      └─ Ray Data: from_items(items)
           DecodeSnippets (snippets.py; CPU actor pool): fetch the video once per node, seek and
               decode only the window, resized at decode to the run's preprocessing
               short side; flow with the run's preprocessing method for flow runs; each
               snippet cropped and sampled as the run was tested (uint8); element items
               read their shard's clips instead
           EmbedSnippets (GPU actors where the cluster has GPUs, else CPU): the backbone's
               ``features()``, batched
      └─ driver: collects the snippets of each item, writes its file when the last one
         arrives (features.py: atomic), errors/<item>.json for a bad video, progress,
         summary.json

A snippet is ``snippet_frames`` consecutive sampled frames (at ``fps``, or the clips'
rate), one every ``stride_frames``; the run's test sampler picks its segments (or dense
frames) from them, so the backbone sees a snippet as it saw a clip in evaluation.
Element features (FineGym's released per-instance features): each sub-action clip of
the run's own preprocessed store cut into ``segments`` equal parts, one snippet each.

The driver owns every write of a file, so a killed driver leaves complete files only,
and a rerun of the same command skips them (same settings hash in their footer) and
refuses an output holding files made with other settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import storage
from ..errors import InputError
from ..progress import rate_eta
from ..store import clips_dir, error_uri, errors_dir, summary_uri
from ..video.files import require_videos
from ..video_job import (
    actor_pools,
    no_video_reason,
    rows_as_done,
    settings_hash,
    worker_runtime_env,
    write_error_record,
    write_summary,
)
from . import features as F
from .backbone import Backbone, backbone_weights, open_backbone
from .config import ExtractConfig
from .snippets import DecodeSnippets, EmbedSnippets

KINDS = ("action", "subaction", "elements")


def sequence_settings(backbone: Backbone, config: ExtractConfig) -> dict[str, Any]:
    """What determines a sequence file's content (hashed into its footer)."""
    return {"checkpoint": backbone.checkpoint, "level": config.level, "snippet_frames": config.snippet_frames,
            "stride_frames": config.stride_frames, "fps": backbone.fps, "short_side": backbone.short_side,
            "input_size": list(backbone.input_size), "flow": backbone.flow, "flow_bound": backbone.flow_bound}


def element_settings(backbone: Backbone, config: ExtractConfig) -> dict[str, Any]:
    """What determines an elements file's content."""
    return {"checkpoint": backbone.checkpoint, "segments": config.segments, "input_size": list(backbone.input_size)}


# -------------------------------------------------------------------- pools


@dataclass(frozen=True)
class Pools:
    """decoders: DecodeSnippets actors, ``cpus_per_worker`` CPUs each; embedders:
    EmbedSnippets actors, each ``gpus`` GPUs (0: on CPUs, ``cpus`` each)."""

    decoders: int
    embedders: int
    gpus: float
    cpus: float


def pool_sizes(config: ExtractConfig, resources: dict[str, float], items: int) -> Pools:
    """Both actor pools for ``items`` work items on a cluster with ``resources``
    (``ray.cluster_resources()``). With GPUs: one backbone actor per
    ``gpus_per_model_worker`` GPUs and a decoder per CPU; without: one backbone actor of
    ``model_cpus`` CPUs and the other CPUs decoding (a 2-core machine: one of each)."""
    cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
    decoders, embedders = actor_pools(cpus, gpus, items, cpus_each=config.cpus_per_worker, first=config.workers,
                                      second=config.model_workers, gpus_each=config.gpus_per_model_worker,
                                      cpus_each_second=config.model_cpus)
    if gpus > 0:
        return Pools(decoders, embedders, config.gpus_per_model_worker, 0.0)
    return Pools(decoders, embedders, 0.0, config.model_cpus)


# -------------------------------------------------------------------- planning


def plan_items(config: ExtractConfig, backbone: Backbone, annotations: str,
               video_uris: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(work items, items without a video file) of the level, then the element shards."""
    from ..dataset.manifest import build_manifest_from

    events = build_manifest_from(annotations).events.to_pylist()
    items, missing = [], []
    if config.level == "action":
        for vid in sorted({e["video_id"] for e in events}):
            item = {"group": vid, "kind": "action", "video_id": vid, "uri": video_uris.get(vid, ""),
                    "start_s": 0.0, "end_s": -1.0}
            (items if vid in video_uris else missing).append(item)
    else:
        for e in sorted(events, key=lambda e: e["event_key"]):
            item = {"group": e["event_key"], "kind": "subaction", "video_id": e["video_id"],
                    "uri": video_uris.get(e["video_id"], ""),
                    "start_s": float(e["start_s"]), "end_s": float(e["end_s"])}
            (items if e["video_id"] in video_uris else missing).append(item)
    if config.elements:
        for uri in storage.list_uris(clips_dir(backbone.store), suffix=".parquet"):
            name = uri.rsplit("/", 1)[-1].removesuffix(".parquet")
            items.append({"group": name, "kind": "elements", "video_id": "", "uri": uri, "start_s": 0.0,
                          "end_s": -1.0})
    return items, missing


def output_uri(out: str, item: dict) -> str:
    if item["kind"] == "elements":
        return F.element_uri(out, item["group"])
    return F.sequence_uri(out, item["kind"], item["group"])


def item_name(item: dict) -> str:
    """The name of an item's error record: ``<kind>_<group>``."""
    return f"{item['kind']}_{item['group']}"


def split_done(out: str, items: list[dict], hashes: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """(items to do, items complete with this run's settings). ValueError naming the
    settings when a file there was made with others (a mixed output would hold two
    kinds of features)."""
    present = set()
    for kind in KINDS:
        folder = storage.join(out, kind)
        present.update(storage.list_uris(folder, suffix=F.SUFFIX))
    candidates = [it for it in items if output_uri(out, it) in present]

    def meta(it: dict):
        try:
            return it, F.read_meta(output_uri(out, it))[1]
        except (F.FeatureFormatError, FileNotFoundError):
            return it, None  # not a complete file of ours: made again

    with ThreadPoolExecutor(16) as pool:
        metas = list(pool.map(meta, candidates))
    done, other = set(), []
    for it, m in metas:
        if m is None:
            continue
        want = hashes["elements" if it["kind"] == "elements" else "sequence"]
        if m.get("settings_hash") == want:
            done.add(id(it))
        else:
            other.append((it, m))
    if other:
        it, m = other[0]
        theirs = {k: m.get(k) for k in ("run", "checkpoint", "level", "snippet_frames", "stride_frames", "fps",
                                         "segments") if k in m}
        raise InputError(f"{out} holds {len(other)} feature file(s) made with other settings, e.g. "
                         f"{output_uri(out, it)} ({', '.join(f'{k}={v}' for k, v in theirs.items())}): "
                         f"extract into another --out, or use the same run and settings to resume")
    return [it for it in items if id(it) not in done], [it for it in items if id(it) in done]


# -------------------------------------------------------------------- the job


def run_extract(config: ExtractConfig, run: str, videos: str, annotations: str, out: str, *,
                connect: Callable[[], None] | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Extract the features of ``config.level`` (and the element features) into ``out``;
    returns the summary (also OUT/summary.json). ``connect`` starts or joins Ray, called
    after every check that needs none (a bad run, videos, annotations or an output made
    with other settings is refused before Ray starts); None: Ray is connected already."""
    t0 = time.time()
    backbone = open_backbone(run, config)
    video_uris = require_videos(videos)
    items, missing = plan_items(config, backbone, annotations, video_uris)
    hashes = {"sequence": settings_hash(sequence_settings(backbone, config)),
              "elements": settings_hash(element_settings(backbone, config))}
    todo, done = split_done(out, items, hashes)
    weights = backbone_weights(backbone) if todo else None  # before anything is written, and before Ray
    for it in missing:
        _record(out, it, "video", no_video_reason(it["video_id"], videos))
    kinds = {k: sum(it["kind"] == k for it in items) for k in KINDS}
    say(f"backbone {backbone.checkpoint} ({backbone.train['model']} {backbone.modality}); "
        f"{kinds[config.level]} {config.level} item(s), {kinds['elements']} element shard(s): "
        f"{len(done)} already done, {len(missing)} without a video file, {len(todo)} to extract")
    if todo and connect is not None:
        connect()
    stats = _extract_on_ray(config, backbone, weights, todo, out, hashes, say) if todo else {
        "written": 0, "failed": 0, "snippets": 0, "wall_s": 0.0, "steady_snippets_per_s": None, "pools": None}
    summary = {"level": config.level, "run": backbone.run, "checkpoint": backbone.checkpoint,
               "settings_hash": hashes, "settings": sequence_settings(backbone, config)}
    this_run = {"items": {"planned": len(items), "skipped": len(done), "written": stats["written"],
                          "failed": stats["failed"] + len(missing)},
                "snippets": stats["snippets"], "extract_wall_s": round(stats["wall_s"], 3),
                "snippets_per_s": round(stats["snippets"] / stats["wall_s"], 2) if stats["wall_s"] else None,
                "steady_snippets_per_s": round(stats["steady_snippets_per_s"], 2)
                if stats["steady_snippets_per_s"] else None,
                "pools": stats["pools"], "wall_s": round(time.time() - t0, 3)}
    # The file's top level: the output and this run's figures; ``runs``: every run's.
    write_summary(out, {**summary, **this_run}, this_run, finished_at=time.time())
    return {**summary, **this_run}


def _record(out: str, item: dict, scope: str, reason: str) -> None:
    write_error_record(out, item_name(item), scope=scope, reason=reason,
                       **{k: item[k] for k in ("group", "kind", "uri")})


def _extract_on_ray(config: ExtractConfig, backbone: Backbone, weights: dict, items: list[dict], out: str,
                    hashes: dict[str, str], say: Callable[[str], None]) -> dict[str, Any]:
    import ray
    import ray.data

    from ..capacity import Need, StallWatchdog, check_capacity

    pools = pool_sizes(config, ray.cluster_resources(), len(items))
    # One actor of each pool must fit, or the pipeline waits forever.
    check_capacity([Need("decoding actor", 1, {"CPU": float(config.cpus_per_worker)}),
                    Need("backbone actor", 1, {"GPU": pools.gpus} if pools.gpus else {"CPU": pools.cpus})],
                   what="extract-features")
    watchdog = StallWatchdog("extract-features", say=say)
    say(f"{pools.decoders} decoding actor(s), {pools.embedders} backbone actor(s) "
        + (f"with {pools.gpus:g} GPU each" if pools.gpus else f"on {pools.cpus:g} CPU(s) each"))
    env = worker_runtime_env()
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(DecodeSnippets, fn_constructor_kwargs={"backbone": backbone, "config": config},
                        batch_size=1, batch_format="numpy", num_cpus=config.cpus_per_worker, runtime_env=env,
                        compute=ray.data.ActorPoolStrategy(size=pools.decoders, max_tasks_in_flight_per_actor=1))
    resources = {"num_gpus": pools.gpus} if pools.gpus else {"num_cpus": pools.cpus}
    ds = ds.map_batches(EmbedSnippets, fn_constructor_kwargs={"backbone": backbone, "weights": ray.put(weights),
                                                              "threads": int(pools.cpus) or 1},
                        batch_size=config.batch_size, batch_format="numpy", runtime_env=env,
                        compute=ray.data.ActorPoolStrategy(size=pools.embedders), **resources)
    collected: dict[str, dict] = {}
    by_group = {(it["kind"], it["group"]): it for it in items}
    written = failed = snippets = 0
    t0 = last = time.time()
    first: tuple[float, int] | None = None  # (time, snippets) when the first batch arrived
    with watchdog:
        for row in rows_as_done(ds):
            watchdog.progress()
            written, failed, snippets = _collect(row, collected, by_group, out, backbone, config, hashes, say,
                                                 counts=(written, failed, snippets))
            now = time.time()
            first = first or (now, snippets)
            if now - last >= 5.0 or written + failed == len(items):
                last = now
                say(f"{rate_eta(written + failed, len(items), now - t0, 'items')} ({failed} failed), "
                    f"{snippets} snippets, {snippets / max(now - t0, 1e-9):.1f} snippets/s")
    unfinished = [k for k, s in collected.items() if not s["closed"]] + [k for k in by_group if k not in collected]
    for key in unfinished:
        failed += 1
        _record(out, by_group[key], "pipeline", "the pipeline ended before all its snippets arrived")
    end = time.time()
    # After the first batch: the rate once both pools run, without the actors' start.
    steady = (snippets - first[1]) / (end - first[0]) if first and end > first[0] else None
    return {"written": written, "failed": failed, "snippets": snippets, "wall_s": end - t0,
            "steady_snippets_per_s": steady, "pools": asdict(pools)}


def _collect(row: dict, collected: dict, by_group: dict, out: str, backbone: Backbone, config: ExtractConfig,
             hashes: dict[str, str], say: Callable[[str], None], *,
             counts: tuple[int, int, int]) -> tuple[int, int, int]:
    """Take one snippet row: a group's file is written when its last snippet arrives, a
    failed group recorded in errors/. Returns (written, failed, snippets) counted on from
    ``counts``."""
    written, failed, snippets = counts
    key = (row["kind"], row["group"])
    state = collected.setdefault(key, {"rows": {}, "closed": False})
    if state["closed"]:
        return counts
    if row["status"] == "empty":  # a clip shard without sub-actions: nothing to write
        state["closed"] = True
        return counts
    if row["status"] != "ok":
        state["closed"] = True
        _record(out, by_group[key], "clips" if row["kind"] == "elements" else "video", row["reason"])
        say(f"failed: {row['kind']} {row['group']}: {row['reason']}")
        return written, failed + 1, snippets
    state["rows"][row["index"]] = row
    snippets += 1
    if len(state["rows"]) == row["count"]:
        state["closed"] = True
        _write(out, by_group[key], state["rows"], backbone, config, hashes)
        state["rows"] = {}
        written += 1
    return written, failed, snippets


def _write(out: str, item: dict, rows: dict[int, dict], backbone: Backbone, config: ExtractConfig,
           hashes: dict[str, str]) -> None:
    ordered = [rows[i] for i in sorted(rows)]
    feats = np.array([r["features"] for r in ordered], np.float32)
    meta = {"run": backbone.run, "checkpoint": backbone.checkpoint, "epoch": backbone.epoch,
            "model": backbone.train["model"], "modality": backbone.modality}
    if item["kind"] == "elements":
        keys = [r["key"] for r in ordered[::config.segments]]
        F.write_elements(output_uri(out, item), keys=keys,
                         features=feats.reshape(len(keys), config.segments, -1),
                         meta={**meta, **element_settings(backbone, config), "settings_hash": hashes["elements"]})
    else:
        F.write_sequence(output_uri(out, item), video_id=item["group"],
                         starts=np.array([r["start"] for r in ordered]), ends=np.array([r["end"] for r in ordered]),
                         features=feats,
                         meta={**meta, **sequence_settings(backbone, config), "settings_hash": hashes["sequence"],
                               "video_uri": item["uri"], "window_start_s": item["start_s"]})
    with suppress(FileNotFoundError):
        storage.delete(error_uri(out, item_name(item)))  # an earlier run's failure of this item is history now


def check_inputs(config: ExtractConfig, run: str, videos: str, annotations: str) -> Backbone:
    """The refusals that need no Ray: a run without a checkpoint, videos that are not
    there, annotations that do not read. Returns the backbone."""
    from ..dataset.manifest import build_manifest_from

    backbone = open_backbone(run, config)
    require_videos(videos)
    build_manifest_from(annotations)
    return backbone


def format_summary(summary: dict[str, Any], out: str) -> str:
    """A few lines for the terminal: counts, rate, where the outputs are."""
    i = summary["items"]
    rate = f", {summary['snippets_per_s']:.1f} snippets/s" if summary.get("snippets_per_s") else ""
    lines = [f"items: {i['written']} written, {i['skipped']} skipped (already done), {i['failed']} failed "
             f"of {i['planned']}; {summary['snippets']} snippets in {summary['extract_wall_s']:.1f} s{rate}",
             f"features: {storage.join(out, summary['level'])}/"]
    if storage.list_uris(storage.join(out, F.ELEMENTS)):
        lines.append(f"elements: {storage.join(out, F.ELEMENTS)}/")
    if storage.list_uris(errors_dir(out)):
        lines.append(f"errors:   {errors_dir(out)}/")
    lines.append(f"summary:  {summary_uri(out)}")
    return "\n".join(lines)


__all__ = ["KINDS", "Pools", "check_inputs", "element_settings", "format_summary", "plan_items", "pool_sizes",
           "run_extract", "sequence_settings"]
