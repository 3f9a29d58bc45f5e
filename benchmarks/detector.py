"""Detector epoch time: one training epoch of the localization detector, through the
library's own epoch (localize.train.train_epoch), on CPU and, when present, on a GPU.

    python benchmarks/detector.py [--sequences 64] [--steps 512] [--channels 256]
        [--preset actionformer|syngym] [--epochs 3] [--threads 1] [--json OUT.json]

Sequences are random features with 2 to 6 random segments each (the time of an epoch does
not depend on what the features hold). Prints one line per device: the median epoch
seconds over ``--epochs`` (after one warm-up epoch) and sequences/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from finegym_ray import presets
from finegym_ray.localize.config import LocalizeConfig
from finegym_ray.localize.data import Example
from finegym_ray.localize.train import build_detector, train_epoch

PRESETS = {
    # ActionFormer's THUMOS14 sizes (embedding 512 there; 256 here), 6 levels.
    "actionformer": {"embed_dim": 256, "head_dim": 256, "num_levels": 6},
    # The SynGym demo's detector at the action level (configs/localize/syngym_action.yaml).
    "syngym": presets.load(LocalizeConfig, "localize/syngym_action.yaml").detector_kwargs,
}


def examples(n: int, steps: int, channels: int, classes: int, seed: int = 0) -> list[Example]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = int(rng.integers(2, 7))
        starts = rng.uniform(0, steps * 0.8, k)
        segs = np.stack([starts, np.minimum(starts + rng.uniform(4, steps / 4, k), steps)], 1).astype(np.float32)
        out.append(Example(f"v{i}", rng.normal(size=(steps, channels)).astype(np.float32), segs,
                           rng.integers(0, classes, k), np.arange(steps, dtype=np.float64)))
    return out


def epoch_seconds(device: torch.device, data: list[Example], kwargs: dict, *, classes: int, batch_size: int,
                  epochs: int) -> list[float]:
    config = LocalizeConfig(detector_kwargs=kwargs)
    model = build_detector(config, in_channels=data[0].features.shape[1], num_classes=classes).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    times = []
    for e in range(epochs + 1):  # the first warms up (allocator, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_epoch(model, model.loss, optimizer, data, batch_size=batch_size, max_steps=0, grad_clip=1.0, rng=rng,
                    device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if e:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sequences", type=int, default=64)
    p.add_argument("--steps", type=int, default=512, help="steps (snippets) per sequence")
    p.add_argument("--channels", type=int, default=256, help="feature dimension C")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--preset", choices=sorted(PRESETS), default="actionformer")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = examples(args.sequences, args.steps, args.channels, args.classes)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = []
    for device in devices:
        times = epoch_seconds(device, data, PRESETS[args.preset], classes=args.classes, batch_size=args.batch_size,
                              epochs=args.epochs)
        median = statistics.median(times)
        name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {args.threads} thread(s)"
        results.append({"device": name, "epoch_s": times, "median_epoch_s": median,
                        "sequences_per_s": args.sequences / median})
        print(f"{args.preset} detector, {args.sequences} sequences x {args.steps} steps x {args.channels} features, "
              f"batch {args.batch_size}, on {name}: epoch {median:.2f} s (median of {len(times)}: "
              f"{', '.join(f'{t:.2f}' for t in times)}), {args.sequences / median:.1f} sequences/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
