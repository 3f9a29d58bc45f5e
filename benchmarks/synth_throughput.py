"""Prints how fast SynGym renders and encodes video, per core, for a preset.

    python benchmarks/synth_throughput.py [--preset small] [--videos 1]

Renders the first N videos of the preset one after another in this process (one
core) and prints frames per second and where the time goes (drawing vs H.264).
"""

import argparse
import cProfile
import dataclasses
import pstats
import tempfile
import time

from finegym_ray.synth.config import preset
from finegym_ray.synth.generate import plan_dataset
from finegym_ray.synth.render import render_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--videos", type=int, default=1)
    args = ap.parse_args()
    config = dataclasses.replace(preset(args.preset), videos=args.videos)
    plans = plan_dataset(config)
    frames = sum(p.num_frames for p in plans)
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        profile.enable()
        for plan in plans:
            render_video(plan, config, f"{tmp}/{plan.video_id}.mp4")
        profile.disable()
        seconds = time.perf_counter() - t0
    stats = pstats.Stats(profile).stats
    encode = sum(v[2] for k, v in stats.items() if k[2] == "<method 'encode' of 'av.video.stream.VideoStream' objects>")
    print(f"preset {args.preset}: {len(plans)} video(s), {config.width}x{config.height}, x264 {config.x264_preset}")
    print(f"{frames} frames in {seconds:.1f} s on one core: {frames / seconds:.0f} frames/s")
    print(f"H.264 encoding {encode / seconds:.0%} of the time, drawing and the rest {1 - encode / seconds:.0%}")


if __name__ == "__main__":
    main()
