"""Our preprocessing vs the way it is done today, on one core, same clips and settings.

    python benchmarks/preprocess_vs_baseline.py [--events 6] [--data DIR]

Baseline, written here from mmaction2's tools/data/gym description (needs Debian's
ffmpeg on PATH):
  (a) per event:      ffmpeg -i VIDEO -ss START -t DUR -c:v libx264 -c:a copy EVENT.mp4
                      (seek after the input, as trim_event.py does: ffmpeg decodes the
                      record from its start up to the event)
  (b) per sub-action: the same command on the event clip
  (c) per sub-action clip: decode (OpenCV), resize to the short side, flow between
      consecutive frames, one JPEG file per frame and per flow direction (denseflow's
      output layout)
Ours: ``run_preprocess`` on a one-CPU Ray (actor pool of one), writing one Parquet shard
per unit. Both use the same flow (OpenCV DIS, same preset), the same +-20 px
quantization, the same JPEG quality and short side; ffmpeg runs with one thread.

Inputs: the competition preset (two ~20 min 720p records, generated once and cached).
``--events`` routines are taken evenly spread through the records, so the baseline's
seek cost is representative; every sub-action of those routines is cut.

Prints clip-seconds processed per CPU-second for both (wall seconds with the whole
process tree pinned to one core), the ratio, and where each spends its time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict

import cv2
import numpy as np
import ray
from competition_data import DEFAULT_DIR, competition_data, pin_to_one_core

from finegym_ray import storage
from finegym_ray.preprocess.config import FlowConfig, PreprocessConfig
from finegym_ray.preprocess.pipeline import run_preprocess
from finegym_ray.runtime.connect import init_ray
from finegym_ray.video.decode import resized_size
from finegym_ray.video.flow import build_flow, quantize_flow


def pick_events(manifest, n: int) -> list[dict]:
    """``n`` routines with sub-actions, evenly spread over start time across the records."""
    events = sorted((e for e in manifest.events.to_pylist() if e["has_subactions"]),
                    key=lambda e: (e["start_s"], e["video_id"]))
    idx = np.unique(np.linspace(0, len(events) - 1, num=min(n, len(events))).round().astype(int))
    return [events[i] for i in idx]


def filtered_annotations(annotation_json: str, events: list[dict], out: str) -> str:
    """The annotation JSON restricted to ``events`` (same format), written to ``out``."""
    data = json.loads(storage.read_text(annotation_json))
    keep = {(e["video_id"], e["event_id"]) for e in events}
    subset = {v: {eid: ev for eid, ev in evs.items() if (v, eid) in keep} for v, evs in data.items()}
    storage.write_text(out, json.dumps({v: evs for v, evs in subset.items() if evs}))
    return out


class _PassRows:
    def __call__(self, batch: dict) -> dict:
        return batch


def run_pipeline_one_worker(config: PreprocessConfig, annotations: str, videos: str, events: list[dict],
                            work: str, *, later_job: bool = False) -> tuple[float, dict]:
    """(wall seconds, summary) of ``run_preprocess`` on ``events`` with a one-CPU Ray (an
    actor pool of one) started from this process, which the caller pins to the cores
    Ray's processes may use; the Ray start is not timed. ``later_job``: run a one-row
    Ray Data job on an actor pool first (not timed), as on a cluster where a Ray Data job
    has run before: Ray Data's cluster-wide actors (autoscaling coordinator, stats,
    actor locations) are then up, and the timed job does not start them."""
    ann = filtered_annotations(os.path.join(annotations, "finegym_annotation_info_v1.1.json"), events,
                               os.path.join(work, "annotations.json"))
    init_ray(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        if later_job:  # from_items: a read task would wait forever for the CPU the actor holds
            ray.data.from_items([{"x": 0}]).map_batches(
                _PassRows, compute=ray.data.ActorPoolStrategy(size=1)).materialize()
        t0 = time.perf_counter()
        summary = run_preprocess(config, ann, videos, os.path.join(work, "ours"), say=lambda m: None)
        return time.perf_counter() - t0, summary
    finally:
        ray.shutdown()


def ffmpeg_trim(src: str, start_s: float, dur_s: float, dst: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-threads", "1", "-i", src, "-ss", f"{start_s:.3f}",
                    "-t", f"{dur_s:.3f}", "-c:v", "libx264", "-threads", "1", "-c:a", "copy", dst], check=True)


def run_baseline(events: list[dict], subs: list[dict], videos: str, work: str, config: PreprocessConfig) -> dict:
    seconds: dict[str, float] = defaultdict(float)
    flow = build_flow(config.flow.method, **config.flow.options)
    for e in events:
        t0 = time.perf_counter()
        ffmpeg_trim(os.path.join(videos, f"{e['video_id']}.mp4"), e["start_s"], e["end_s"] - e["start_s"],
                    os.path.join(work, f"{e['event_key']}.mp4"))
        seconds["(a) trim events: ffmpeg decode + x264"] += time.perf_counter() - t0
    for s in subs:
        t0 = time.perf_counter()
        ffmpeg_trim(os.path.join(work, f"{s['event_key']}.mp4"), s["rel_start_s"], s["rel_end_s"] - s["rel_start_s"],
                    os.path.join(work, f"{s['key']}.mp4"))
        seconds["(b) trim sub-actions: ffmpeg"] += time.perf_counter() - t0
    frames = 0
    for s in subs:
        folder = os.path.join(work, s["key"])
        os.makedirs(folder)
        cap = cv2.VideoCapture(os.path.join(work, f"{s['key']}.mp4"))
        prev = None
        i = 0
        while True:
            t0 = time.perf_counter()
            ok, bgr = cap.read()
            seconds["(c) decode"] += time.perf_counter() - t0
            if not ok:
                break
            t0 = time.perf_counter()
            bgr = cv2.resize(bgr, resized_size(bgr.shape[1], bgr.shape[0], config.short_side),
                             interpolation=cv2.INTER_AREA)
            grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            seconds["(c) resize"] += time.perf_counter() - t0
            i += 1
            t0 = time.perf_counter()
            cv2.imwrite(os.path.join(folder, f"img_{i:05d}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
            seconds["(c) write JPEG files"] += time.perf_counter() - t0
            if prev is not None:
                t0 = time.perf_counter()
                qx, qy = quantize_flow(flow(grey[None], prev)[0], config.flow_bound)  # one pair per call
                seconds["(c) flow"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                for name, q in (("flow_x", qx), ("flow_y", qy)):
                    cv2.imwrite(os.path.join(folder, f"{name}_{i - 1:05d}.jpg"), q,
                                [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
                seconds["(c) write JPEG files"] += time.perf_counter() - t0
            prev = grey
        cap.release()
        frames += i
    return {"seconds": dict(seconds), "frames": frames}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=6, help="routines to cut (evenly spread; default 6)")
    ap.add_argument("--data", default=DEFAULT_DIR, help=f"competition preset folder (default {DEFAULT_DIR})")
    ap.add_argument("--dis-preset", default="fast")
    args = ap.parse_args()
    if shutil.which("ffmpeg") is None:
        raise SystemExit("the baseline needs ffmpeg on PATH (Debian: apt-get install ffmpeg)")
    annotations, videos, manifest = competition_data(args.data)
    cpu = pin_to_one_core()
    config = PreprocessConfig(flow=FlowConfig("dis", {"preset": args.dis_preset}), workers=1)
    events = pick_events(manifest, args.events)
    keys = {e["event_key"] for e in events}
    subs = [s for s in manifest.subactions.to_pylist() if s["event_key"] in keys]
    clip_s = sum(s["end_s"] - s["start_s"] for s in subs)
    starts = ", ".join(f"{e['start_s'] / 60:.1f}" for e in events)
    print(f"{len(events)} routines at {starts} min into their "
          f"records; {len(subs)} sub-actions, {clip_s:.1f} clip-seconds; one core (CPU {cpu}); "
          f"DIS {args.dis_preset}, short side {config.short_side}")

    with tempfile.TemporaryDirectory() as work:
        ours_wall, ours = run_pipeline_one_worker(config, annotations, videos, events, work)
        assert ours["clips"]["written"] == len(subs), ours

        os.makedirs(os.path.join(work, "baseline"))
        t0 = time.perf_counter()
        base = run_baseline(events, subs, videos, os.path.join(work, "baseline"), config)
        base_wall = time.perf_counter() - t0

    ours_rate, base_rate = clip_s / ours_wall, clip_s / base_wall
    print(f"\nours:     {ours_wall:7.1f} s, {ours['frames']} frames, {ours_rate:.3f} clip-seconds per CPU-second")
    stages = dict(ours["stage_seconds"])
    stages["Ray, planning, manifest, scheduling"] = ours_wall - sum(stages.values())
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {k:<40}{v:7.1f} s  {v / ours_wall:5.1%}")
    print(f"baseline: {base_wall:7.1f} s, {base['frames']} frames, {base_rate:.3f} clip-seconds per CPU-second")
    for k, v in sorted(base["seconds"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:<40}{v:7.1f} s  {v / base_wall:5.1%}")
    print(f"\nratio (ours / baseline): {ours_rate / base_rate:.1f}x  (target >= 10x)")


if __name__ == "__main__":
    main()
