"""How fast one CPU draws PoseC3D's heatmap volumes (``dataset/heatmaps.py``): keypoint
and limb volumes per second for samples of ``--frames`` frames, ``--persons`` people and
``--size`` x ``--size`` heatmaps (PoseC3D's own: 48 frames at 56 x 56), in this process.

The poses: COCO-17 joints of people who move across a 1280 x 720 frame, every score 0.9.

    python benchmarks/pose_heatmaps.py [--frames 48] [--persons 1] [--size 56] [--samples 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from finegym_ray.dataset.heatmaps import keypoint_volume, limb_volume
from finegym_ray.dataset.poses import JOINTS


def poses(persons: int, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(persons, frames, 17, 2) pixels and (persons, frames, 17) scores."""
    rng = np.random.default_rng(seed)
    body = rng.uniform(-60, 60, size=(persons, 1, JOINTS, 2))
    path = np.cumsum(rng.normal(0, 8, size=(persons, frames, 1, 2)), axis=1) + np.array([640, 360])
    return (body + path).astype(np.float32), np.full((persons, frames, JOINTS), 0.9, np.float32)


def rate(draw, samples: list, **kw) -> tuple[float, float]:
    """(volumes per second, MB per volume) over ``samples``, after one warm-up."""
    draw(*samples[0], **kw)
    t0 = time.perf_counter()
    for xy, scores in samples:
        vol = draw(xy, scores, **kw)
    return len(samples) / (time.perf_counter() - t0), vol.nbytes / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--persons", type=int, default=1)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    samples = [poses(args.persons, args.frames, seed) for seed in range(args.samples)]
    print(f"{args.samples} samples of {args.frames} frames, {args.persons} person(s), {args.size}x{args.size} "
          f"heatmaps, one CPU")
    for name, draw in (("keypoints", keypoint_volume), ("limbs", limb_volume)):
        per_s, mb = rate(draw, samples, size=args.size)
        print(f"{name:>9}: {per_s:6.1f} volumes/s ({mb:.1f} MB each as float32)")


if __name__ == "__main__":
    main()
