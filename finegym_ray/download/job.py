"""The download job: the asked videos that are not there whole, fetched as Ray tasks, a
bounded number at a time, with a pause between two starts.

    driver: lease on OUT ── probe the files there (threads, ``check``'s probe) ──
        Ray tasks (``fetch.fetch_video``, a quarter CPU each: they wait on the network),
        at most ``concurrency`` at once, one started every ``pause_s`` seconds at most
        (one host: the URL template's, YouTube by default) ── as each ends: a progress
        line, ``download_failures.csv`` rewritten ── OUT/summary.json

A failed id is recorded and the run goes on; a rerun asks again for every id that is
not there (those of the failures file included). The run's figures, and what the videos
there cover of the labelled keys per task and split, go to ``OUT/summary.json``
(``video_job.write_summary``: ``runs`` keeps every run's own figures).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import ray

from .. import progress, storage
from ..dataset.coverage import Coverage, coverage, format_coverage
from ..dataset.manifest import Manifest
from ..lease import writer_lease
from ..video_job import worker_runtime_env, write_summary
from .failures import CLASSES, OTHER, failure_row, failures_uri, one_line, read_failures, write_failures
from .fetch import DOWNLOADED, FAILED, FetchSettings, Outcome, fetch_video
from .plan import annotated_ends, present

# Downloads mostly wait on the network: four share a CPU.
TASK_CPUS = 0.25


def run_download(manifest: Manifest, ids: list[str], out: str, settings: FetchSettings, *, concurrency: int = 2,
                 pause_s: float = 3.0, subset: str | None = None, split: str | None = None,
                 break_lease: bool = False, on_this_node: bool = False,
                 say: Callable[[str], None] = print) -> dict[str, Any]:
    """Download every id of ``ids`` that is not in ``out`` whole (see the module
    docstring), on the connected Ray; returns the summary written to OUT/summary.json.
    ``manifest``: the annotations (where each video's probe looks, and what the videos
    cover); ``subset``/``split``: the selection the ids came from, which the coverage
    rows are limited to; ``on_this_node``: run the tasks on the driver's node (a mirror
    on 127.0.0.1)."""
    t0 = time.time()
    ends = annotated_ends(manifest)
    with writer_lease(out, what=f"download --out {out}", break_lease=break_lease, say=say):
        storage.makedirs(out)
        whole, broken = present(out, ids, ends)
        say(f"{len(whole)} of {len(ids)} videos are there whole; {len(ids) - len(whole)} to download")
        for vid, (uri, problem) in sorted(broken.items()):
            say(f"{vid}: {uri} is not whole ({problem}): downloading it again")
        failures = read_failures(out)
        for vid in whole:
            failures.pop(vid, None)
        write_failures(out, failures)
        todo = [vid for vid in ids if vid not in whole]
        outcomes = _download_all(todo, out, settings, ends, broken, failures, concurrency=concurrency,
                                 pause_s=pause_s, on_this_node=on_this_node, say=say)
        there = set(whole) | {o.video_id for o in outcomes if o.status == DOWNLOADED}
        rows = [r for r in coverage(manifest, videos=there)
                if (subset is None or r.task == subset) and (split is None or r.split == split)]
        missing = {vid: failures[vid]["reason_class"] for vid in ids if vid not in there and vid in failures}
        summary_whole = {
            "asked": len(ids), "there": len(there), "missing": len(ids) - len(there),
            "missing_by_class": {c: n for c in CLASSES if (n := Counter(missing.values())[c])},
            "failures": failures_uri(out) if failures else None,
            "coverage": [r.record() for r in rows],
        }
        failed = [o for o in outcomes if o.status == FAILED]
        run = {
            "asked": len(ids), "already_there": len(whole), "downloaded": len(outcomes) - len(failed),
            "replaced": sum(o.status == DOWNLOADED and o.video_id in broken for o in outcomes),
            "failed": len(failed), "failed_by_class": dict(Counter(o.reason_class for o in failed)),
            "bytes": sum(o.size for o in outcomes), "wall_s": round(time.time() - t0, 1),
            "settings": {**settings.record(), "concurrency": concurrency, "pause_s": pause_s},
        }
        return write_summary(out, summary_whole, run, finished_at=time.time())


def _download_all(todo: list[str], out: str, settings: FetchSettings, ends: dict[str, float],
                  broken: dict[str, tuple[str, str]], failures: dict[str, dict[str, str]], *, concurrency: int,
                  pause_s: float, on_this_node: bool, say: Callable[[str], None]) -> list[Outcome]:
    """Run the tasks; rewrite the failures file as each ends. The outcomes, in the order
    they ended."""
    if not todo:
        return []
    options: dict[str, Any] = {"num_cpus": TASK_CPUS, "max_retries": 1, "runtime_env": worker_runtime_env()}
    if on_this_node:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(
            node_id=ray.get_runtime_context().get_node_id(), soft=False)
    task = ray.remote(fetch_video).options(**options)
    settings_ref = ray.put(settings)  # the cookies travel once, in the object store
    pending = list(todo)
    in_flight: dict[Any, str] = {}
    outcomes: list[Outcome] = []
    next_start = 0.0
    t0 = time.monotonic()
    while pending or in_flight:
        wait_s = None
        if pending and len(in_flight) < concurrency:
            wait_s = next_start - time.monotonic()
            if wait_s <= 0:
                vid = pending.pop(0)
                ref = task.remote(vid, out, settings_ref, annotated_end_s=ends.get(vid, 0.0),
                                  replaces=broken[vid][0] if vid in broken else None)
                in_flight[ref] = vid
                next_start = time.monotonic() + pause_s
                continue
        if not in_flight:
            time.sleep(wait_s or 0)
            continue
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=wait_s)
        for ref in ready:
            outcome = _outcome(in_flight.pop(ref), ref)
            outcomes.append(outcome)
            if outcome.status == FAILED:
                failures[outcome.video_id] = failure_row(outcome.video_id, outcome.reason,
                                                         reason_class=outcome.reason_class)
            else:
                failures.pop(outcome.video_id, None)
            write_failures(out, failures)
            say(_line(outcome) + "; " + progress.rate_eta(len(outcomes), len(todo), time.monotonic() - t0, "videos")
                + f" ({sum(o.status == FAILED for o in outcomes)} failed)")
    return outcomes


def _outcome(vid: str, ref) -> Outcome:
    """The task's Outcome; a task whose worker died (after Ray's retry) is a failure of
    its id. An error the task raised is a bug and is raised again."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError:
        raise
    except ray.exceptions.RayError as e:
        return Outcome(vid, FAILED, reason=f"the worker downloading it died: {one_line(str(e))[:300]}",
                       reason_class=OTHER)


def _line(o: Outcome) -> str:
    if o.status == FAILED:
        return f"{o.video_id}: failed ({o.reason_class}): {o.reason}"
    mb = o.size / 1e6
    return f"{o.video_id}: {mb:.1f} MB in {o.seconds:.1f} s ({mb / max(o.seconds, 1e-3):.2f} MB/s)"


def format_summary(summary: dict[str, Any]) -> str:
    """What a download run prints at its end: the asked videos there and missing (by
    class), this run's figures, and what the videos there cover per task and split."""
    run = summary["runs"][-1]
    lines = [f"{summary['there']:,} of {summary['asked']:,} asked videos are there "
             f"({100.0 * summary['there'] / max(summary['asked'], 1):.1f} %); {summary['missing']:,} missing"
             + (" (" + ", ".join(f"{n} {c}" for c, n in summary["missing_by_class"].items()) + ")"
                if summary["missing_by_class"] else ""),
             f"this run: {run['downloaded']} downloaded ({run['bytes'] / 1e6:,.1f} MB, {run['replaced']} of them "
             f"replacing a file that was not whole), {run['already_there']} already there, {run['failed']} failed, "
             f"in {progress.duration(run['wall_s'])}"]
    if summary["failures"]:
        lines.append(f"failures: {summary['failures']} (id, reason_class, reason)")
    rows = [Coverage(**{k: r[k] for k in ("task", "split", "labelled", "present", "missing_videos")})
            for r in summary["coverage"]]
    if rows:
        lines += ["labelled keys whose video is there:", format_coverage(rows, present="there")]
    return "\n".join(lines)
