"""Training samples per second: Ray Train (1 worker, Ray Data input) vs a bare PyTorch loop.

    python benchmarks/train_throughput.py [--data STORE] [--epochs 6] [--pairs 4] [--set KEY=VALUE ...]

Both train the same model with the same batch size on the same clips, with the same
sampling and augmentation code (``SampleClips``) producing the samples; CPU budgets
match: Ray Train gets one worker of one CPU with Ray Data on the others, the bare loop
trains in this process (one torch thread) with one DataLoader process decoding. The
first epoch of each is warm-up and not counted. Prints samples/s of each, the ratio
(target >= 0.95) and the seconds each loop waited for input per epoch: the part of the
difference that comes from the input pipelines rather than from the compute's speed.

On a small shared machine that speed drifts by 10-30 % from one minute to the next, so
one bare run and one Ray Train run can differ by the drift alone. The script runs
``--pairs`` of them, alternating which goes first (in one run the second of each pair
was the slower one every time), and reports every pair's ratio and their median.
``--data`` defaults to the demo's store (``finegym-ray demo``).
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time
from dataclasses import replace

import numpy as np
import pyarrow.parquet as pq
import ray
import torch
from torch import nn

from finegym_ray.config import apply_overrides
from finegym_ray.runtime.connect import init_ray
from finegym_ray.train import steps
from finegym_ray.train.batches import InputTimer
from finegym_ray.train.config import DEMO, TrainConfig
from finegym_ray.train.data import SampleClips, clip_columns, load_split_labels
from finegym_ray.train.loop import model_for
from finegym_ray.train.run import run_training


class ShardSamples(torch.utils.data.IterableDataset):
    """Every labelled clip of the shards, sampled by the same code Ray Data runs."""

    def __init__(self, config: TrainConfig, labels: dict[str, int]):
        self.config, self.labels = config, labels
        self.files = sorted(glob.glob(os.path.join(config.data, "clips", "*.parquet")))

    def __iter__(self):
        sample = SampleClips(self.config, self.labels, train=True)
        for i in np.random.permutation(len(self.files)):
            table = pq.read_table(self.files[i], columns=clip_columns(self.config.modality))
            batch = {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}
            out = sample(batch)
            for j in range(len(out["label"])):
                yield out["x"][j], out["label"][j], out["flow_bound"][j]


def bare_loop(config: TrainConfig, labels: dict[str, int], num_classes: int) -> list[tuple[int, float, float]]:
    """(samples, seconds, seconds waiting for input) per epoch of a plain PyTorch loop."""
    torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    torch.manual_seed(config.seed)
    model = model_for(config, num_classes)
    optimizer = steps.make_optimizer(model.parameters(), name=config.optimizer, lr=config.lr,
                                     momentum=config.momentum, weight_decay=config.weight_decay)
    scheduler = steps.make_scheduler(optimizer, epochs=config.epochs, warmup_epochs=config.warmup_epochs)
    autocast = steps.autocast_for(torch.device("cpu"), config.bf16)
    loader = torch.utils.data.DataLoader(ShardSamples(config, labels), batch_size=config.batch_size,
                                         num_workers=1, persistent_workers=True, prefetch_factor=4)
    loss_fn = nn.CrossEntropyLoss()
    epochs = []
    for _ in range(config.epochs):
        t0, n = time.perf_counter(), 0
        model.train()
        batches = InputTimer(loader)
        for x, y, bound in batches:
            x = steps.model_input(x, bound, modality=config.modality, clip_model=config.clip_model)
            steps.train_step(model, x, y, optimizer, loss_fn, grad_clip=config.grad_clip, autocast=autocast)
            n += len(y)
        scheduler.step()
        epochs.append((n, time.perf_counter() - t0, batches.waited))
    return epochs


def rate(epochs: list[tuple[int, float, float]]) -> float:
    counted = epochs[1:] or epochs  # the first epoch warms up (process start, imports, caches)
    return sum(e[0] for e in counted) / sum(e[1] for e in counted)


def reported(label: str, epochs: list[tuple[int, float, float]]) -> float:
    """``rate(epochs)``, after printing each epoch's seconds and input wait."""
    r = rate(epochs)
    print(f"  {label + ':':<14}" + ", ".join(f"{e[1]:.1f} s" for e in epochs) + f" -> {r:.1f} samples/s; "
          "waiting for input: " + ", ".join(f"{e[2]:.1f} s" for e in epochs), flush=True)
    return r


def bare_run(config: TrainConfig, labels: dict[str, int], num_classes: int) -> float:
    """Samples per second of the bare loop (first epoch not counted), printed with its epochs."""
    return reported("bare PyTorch", bare_loop(config, labels, num_classes))


def ray_run(config: TrainConfig) -> float:
    """Samples per second of Ray Train on a Ray started for it (first epoch not counted)."""
    init_ray(log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as runs:
            result = run_training(replace(config, runs=runs, name="throughput"), say=lambda m: None)
    finally:
        ray.shutdown()
    return reported("Ray Train", [(m["train_samples"], m["epoch_s"], m["data_wait_s"]) for m in result["history"]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="finegym_demo/store", help="preprocessed store (default: the demo's)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--pairs", type=int, default=4,
                   help="bare and Ray Train runs, in alternating order (default 4: as many with each first)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training setting (default: the demo preset)")
    args = p.parse_args()
    config = apply_overrides(replace(DEMO, data=os.path.abspath(args.data), epochs=args.epochs, val_every=0,
                                     workers=1, cpus_per_worker=1.0), args.overrides)
    split = load_split_labels(config.data, config.task, config.train_split)
    print(f"{config.model} {config.modality} depth {config.depth} width {config.base_width}, "
          f"{config.segments} x {config.frames_per_segment} frames, {config.input_size} px, batch {config.batch_size}, "
          f"{len(split.labels)} clips, {config.epochs} epochs (first not counted), {args.pairs} pair(s)", flush=True)

    ratios = []
    for i in range(args.pairs):
        print(f"pair {i + 1}:", flush=True)
        if i % 2 == 0:  # alternate the order, so that a steady drift favours neither
            bare = bare_run(config, split.labels, split.num_classes)
            ours = ray_run(config)
        else:
            ours = ray_run(config)
            bare = bare_run(config, split.labels, split.num_classes)
        ratios.append(ours / bare)
        print(f"  ratio Ray Train / bare: {ratios[-1]:.2f}", flush=True)
    print(f"ratios: {', '.join(f'{r:.2f}' for r in ratios)}; median {float(np.median(ratios)):.2f} "
          f"(target >= 0.95)")


if __name__ == "__main__":
    main()
