"""Tune's overhead: a sweep of 4 trials run one at a time against the same 4 configs
trained one after another with ``run_training`` (what ``finegym-ray train`` runs).

    python benchmarks/tune_overhead.py [--data STORE] [--epochs 2] [--pairs 2] [--set KEY=VALUE ...]

Both sides run in this process on one Ray started for the benchmark, so Ray's own start
is not counted on either side. The 4 configs are the demo preset with seeds 0-3 (the
same work each). Each pair runs both sides, alternating which goes first, since a small
shared machine drifts by 10-30 % from one minute to the next. Prints each side's wall
time per pair and the ratio (sequential training time / sweep time; target >= 0.95).
``--data`` defaults to the demo's store (``finegym-ray demo``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace

import numpy as np

from finegym_ray.config import apply_overrides
from finegym_ray.runtime.connect import init_ray
from finegym_ray.train.config import DEMO, TrainConfig
from finegym_ray.train.run import run_training
from finegym_ray.tune.config import SweepConfig, TrialResources
from finegym_ray.tune.sweep import run_sweep

SEEDS = [0, 1, 2, 3]


def sequential(base: TrainConfig, runs: str) -> float:
    """Seconds to train the 4 configs one after another."""
    t0 = time.perf_counter()
    for seed in SEEDS:
        run_training(replace(base, seed=seed, runs=runs, name=f"seed{seed}"), say=lambda m: None)
    return time.perf_counter() - t0


def swept(base: TrainConfig, sweeps: str) -> float:
    """Seconds of a sweep over the same 4 configs, one trial at a time."""
    sweep = SweepConfig(name="overhead", space={"seed": {"grid": SEEDS}}, metric="train_loss", mode="min",
                        max_concurrent_trials=1, sweeps=sweeps,
                        resources=TrialResources(workers=base.workers, cpus_per_worker=base.cpus_per_worker))
    t0 = time.perf_counter()
    result = run_sweep(sweep, base, say=lambda m: None)
    seconds = time.perf_counter() - t0
    assert all(t.status == "finished" for t in result["trials"]), [t.error for t in result["trials"]]
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="finegym_demo/store", help="preprocessed store (default: the demo's)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per config (default 2)")
    p.add_argument("--pairs", type=int, default=2, help="sweep/sequential pairs, alternating order (default 2)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training setting (default: the demo preset)")
    args = p.parse_args()
    base = apply_overrides(replace(DEMO, data=os.path.abspath(args.data), epochs=args.epochs, val_every=1,
                                   use_gpu=False), args.overrides)
    print(f"{len(SEEDS)} configs of {base.model} {base.modality} {base.task}, {base.epochs} epochs each, "
          f"{args.pairs} pair(s)", flush=True)
    init_ray(log_to_driver=False)
    ratios = []
    for i in range(args.pairs):
        with tempfile.TemporaryDirectory() as tmp:
            if i % 2 == 0:  # alternate the order, so that a steady drift favours neither
                tune_s = swept(base, os.path.join(tmp, "sweeps"))
                train_s = sequential(base, os.path.join(tmp, "runs"))
            else:
                train_s = sequential(base, os.path.join(tmp, "runs"))
                tune_s = swept(base, os.path.join(tmp, "sweeps"))
        ratios.append(train_s / tune_s)
        print(f"pair {i + 1}: sweep {tune_s:.1f} s, one after another {train_s:.1f} s, ratio {ratios[-1]:.3f}",
              flush=True)
    print(f"ratios: {', '.join(f'{r:.3f}' for r in ratios)}; median {float(np.median(ratios)):.3f} "
          f"(target >= 0.95)")


if __name__ == "__main__":
    main()
