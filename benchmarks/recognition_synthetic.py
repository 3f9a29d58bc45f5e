"""Mean class and top-1 accuracy of TSN and TSM on RGB and flow, the same budget each.

    python benchmarks/recognition_synthetic.py [--data STORE] [--set KEY=VALUE ...]

Trains each (model, modality) pair with the demo preset (the set task on SynGym's demo
data, 10 epochs of a ResNet-10 at a quarter width; only model, modality and stacked
flow frames change), evaluates it with the test protocol, then fuses each model's two
runs (two-stream), and prints the table. ``--data`` defaults to the demo's store
(``finegym-ray demo``); runs go to STORE/benchmark_runs and resume if interrupted.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import ray

from finegym_ray import storage
from finegym_ray.config import apply_overrides
from finegym_ray.runtime.connect import init_ray
from finegym_ray.train.config import DEMO
from finegym_ray.train.evaluate import evaluate, format_results
from finegym_ray.train.run import run_training

# (model, modality, stacked frames per segment): TSN-style flow stacks, one RGB frame.
ROWS = [("tsn", "rgb", 1), ("tsn", "flow", 3), ("tsm", "rgb", 1), ("tsm", "flow", 3)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="finegym_demo/store", help="preprocessed store (default: the demo's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting changed for every row (default: the demo preset)")
    args = p.parse_args()
    data = os.path.abspath(args.data)
    base = apply_overrides(replace(DEMO, data=data, runs=storage.join(data, "benchmark_runs")), args.overrides)
    init_ray(log_to_driver=False)
    runs, results = {}, {}
    for model, modality, frames in ROWS:
        config = replace(base, model=model, modality=modality, frames_per_segment=frames)
        t0 = time.time()
        runs[(model, modality)] = run_training(config, say=lambda m: None)["run"]
        print(f"trained {config.run_name} in {time.time() - t0:.0f} s", flush=True)
    for model in ("tsn", "tsm"):
        both = evaluate(runs[(model, "rgb")], fuse=runs[(model, "flow")], say=lambda m: None)
        results[f"{model}_rgb"], results[f"{model}_flow"] = both["run"], both["other"]
        results[f"{model}_two_stream"] = both["fused"]
    ray.shutdown()
    print(f"\n{base.task} task, {base.epochs} epochs each, {base.depth}-layer ResNet at width {base.base_width}, "
          f"{base.segments} segments, {base.input_size} px")
    print(format_results(results))


if __name__ == "__main__":
    main()
