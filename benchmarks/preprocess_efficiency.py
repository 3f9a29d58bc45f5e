"""Pipeline efficiency, per-core throughput, decoder choice and a FineGym-scale projection.

    python benchmarks/preprocess_efficiency.py [--events N] [--data DIR]

On the competition preset (two ~20 min 720p records, cached), one core:
1. Bare kernels, measured standalone on the same clips, once per decoder backend:
   decode each sub-action window (``WindowDecoder``, resized at decode), DIS flow
   between consecutive frames, quantization and JPEG encoding of frames and flow.
2. The pipeline (``run_preprocess`` on a one-CPU Ray, one actor) on the same clips;
   efficiency = kernel seconds / pipeline wall seconds (target >= 85 %). Measured three
   times: (a) with Ray's services (GCS, raylet, agents, Ray Data's actors, the driver) on
   the same core as the worker, as the first Ray Data job of a fresh Ray; (a') the same,
   as a later job (Ray Data's cluster-wide actors already up); (b) where there is a
   second core, with the worker alone on its core and the rest on the other, as on a
   cluster whose head node runs the services. The kernels are measured again after the
   pipelines, and their mean is the figure used: this machine's speed drifts by 10 %
   and more over minutes, and a drift between the two measurements would otherwise
   count as pipeline overhead or hide it.
3. Throughput per core and the projected time for all FineGym annotated windows on
   64 cores: 32,697 sub-actions (~13.6 h of clips) and, with events, ~43 h of women's
   routines more. Assumes linear scaling over units (benchmarks/scale_out.py checks
   nodes) and FineGym's videos decoding like these 720p H.264 files.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict

import cv2
import numpy as np
from competition_data import DEFAULT_DIR, competition_data, keep_on_cpu, pin_to_one_core
from preprocess_vs_baseline import pick_events, run_pipeline_one_worker

from finegym_ray.preprocess.config import PreprocessConfig
from finegym_ray.video.decode import WindowDecoder
from finegym_ray.video.encode import encode_jpeg, set_thread_limits
from finegym_ray.video.flow import build_flow, quantize_flow

FINEGYM_SUBACTION_S = 13.6 * 3600
FINEGYM_EVENT_S = 43 * 3600
CORES = 64
KERNELS = ("decode", "flow", "encode")


def kernel_seconds(subs: list[dict], videos: str, config: PreprocessConfig, backend: str) -> dict[str, float]:
    """Seconds per kernel for every clip of ``subs``, decoded with ``backend``."""
    seconds: dict[str, float] = defaultdict(float)
    flow = build_flow(config.flow.method, **config.flow.options)
    by_video: dict[str, list[dict]] = defaultdict(list)
    for s in subs:
        by_video[s["video_id"]].append(s)
    for video_id, clips in sorted(by_video.items()):
        with WindowDecoder(os.path.join(videos, f"{video_id}.mp4"), config.short_side, backend=backend) as dec:
            for s in sorted(clips, key=lambda s: s["start_s"]):
                t0 = time.perf_counter()
                rgb = dec.decode(s["start_s"], s["end_s"]).rgb
                seconds["decode"] += time.perf_counter() - t0
                seconds["frames"] += len(rgb)
                t0 = time.perf_counter()
                grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb])  # (N, H, W)
                flows = flow(grey)  # (N - 1, H, W, 2)
                seconds["flow"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                for f in rgb:
                    encode_jpeg(f, config.jpeg_quality)
                for f in flows:
                    for q in quantize_flow(f, config.flow_bound):
                        encode_jpeg(q, config.jpeg_quality)
                seconds["encode"] += time.perf_counter() - t0
    return dict(seconds)


def kernel_total(seconds: dict[str, float]) -> float:
    """Seconds of decode, flow and encode together."""
    return sum(seconds[n] for n in KERNELS)


def print_stages(stages: dict[str, float], wall: float) -> None:
    for name, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<19}{v:7.1f} s  {v / wall:5.1%}")
    outside = wall - sum(stages.values())
    print(f"  {'outside the units':<19}{outside:7.1f} s  {outside / wall:5.1%}  "
          "(Ray Data's start: its actors and the worker importing ray.data; the last result's way back)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1000, help="routines to cut (evenly spread; default all)")
    ap.add_argument("--data", default=DEFAULT_DIR, help=f"competition preset folder (default {DEFAULT_DIR})")
    args = ap.parse_args()
    annotations, videos, manifest = competition_data(args.data)
    others = os.sched_getaffinity(0)
    cpu = pin_to_one_core()
    others.discard(cpu)
    set_thread_limits(1)
    config = PreprocessConfig(workers=1)
    events = pick_events(manifest, args.events)
    keys = {e["event_key"] for e in events}
    subs = [s for s in manifest.subactions.to_pylist() if s["event_key"] in keys]
    clip_s = sum(s["end_s"] - s["start_s"] for s in subs)
    print(f"{len(subs)} sub-actions of {len(events)} routines, {clip_s:.1f} clip-seconds, 1280x720 -> short side "
          f"{config.short_side}, DIS {config.flow.resolved()['preset']}; one core (CPU {cpu})\n")

    # Each decoder with the whole kernel chain: decord decodes ahead in a thread of its
    # own, so on a busy core part of its decoding lands in the flow and JPEG timings.
    print("1. bare kernels, per decoder (seconds, frames/s)")
    kernels = {}
    for backend in ("pyav", "decord"):
        k = kernels[backend] = kernel_seconds(subs, videos, config, backend)
        total = kernel_total(k)
        print(f"  {backend:<7} decode {k['decode']:6.1f} ({k['frames'] / k['decode']:4.0f}), flow {k['flow']:6.1f} "
              f"({k['frames'] / k['flow']:4.0f}), encode {k['encode']:5.1f} ({k['frames'] / k['encode']:4.0f}); "
              f"total {total:6.1f} s")
    runs = {}

    def timed_run(name: str, **kwargs) -> None:
        with tempfile.TemporaryDirectory() as work:
            runs[name] = run_pipeline_one_worker(config, annotations, videos, events, work, **kwargs)
        assert runs[name][1]["clips"]["written"] == len(subs), runs[name][1]
        print(f"  pipeline ({name}): {runs[name][0]:.1f} s wall", flush=True)

    print("\nrunning the pipeline three ways, then the kernels again (minutes) ...", flush=True)
    timed_run("a")
    timed_run("a'", later_job=True)
    if others:
        os.sched_setaffinity(0, others)  # the driver and every Ray process it starts
        with keep_on_cpu("ray::MapWorker", cpu):
            timed_run("b")
        os.sched_setaffinity(0, {cpu})
    after = kernel_total(kernel_seconds(subs, videos, config, config.decoder))
    bare = (kernel_total(kernels[config.decoder]) + after) / 2
    print(f"  {config.decoder} kernels again after the pipelines: {after:.1f} s; mean of both {bare:.1f} s")

    titles = {"a": "(a) all of Ray on the worker's core, the first Ray Data job of a fresh Ray",
              "a'": "(a') the same, a later job: Ray Data's cluster-wide actors already up",
              "b": f"(b) the worker alone on CPU {cpu}, the rest on CPU {','.join(map(str, sorted(others)))}"}
    print("\n2. pipeline efficiency (target >= 85 %)")
    for name, (wall_s, summary) in runs.items():
        print(f"{titles[name]}: {wall_s:.1f} s wall; efficiency {bare / wall_s:.1%}")
        print_stages(summary["stage_seconds"], wall_s)
    if not others:
        print("   (one CPU only: (b) needs a second core)")

    wall, summary = runs["a"]
    rate = clip_s / wall
    stages = summary["stage_seconds"]
    top = max(KERNELS, key=lambda n: stages.get(n, 0.0))
    print(f"\n3. throughput per core: {rate:.2f} clip-seconds/s, {summary['frames'] / wall:.0f} frames/s")
    for label, seconds in (("sub-actions (32,697, ~13.6 h)", FINEGYM_SUBACTION_S),
                           ("sub-actions + women's routines (~56.6 h)", FINEGYM_SUBACTION_S + FINEGYM_EVENT_S)):
        hours = seconds / rate / CORES / 3600
        print(f"  FineGym {label} on {CORES} cores: {hours * 60:.0f} min ({seconds / rate / 3600:.1f} core-hours)")
    print(f"  dominant stage: {top} ({stages[top] / sum(stages.values()):.0%} of the worker time)")
    totals = {b: kernel_total(v) for b, v in kernels.items()}
    print(f"  decoder: {config.decoder} (default); kernel time decord / pyav: {totals['decord'] / totals['pyav']:.2f}")


if __name__ == "__main__":
    main()
