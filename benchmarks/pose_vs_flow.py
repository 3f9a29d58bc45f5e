"""Pose models against TSN and TSM on flow, on SynGym's FX-S1 and UB-S1, the same epochs each.

    python benchmarks/pose_vs_flow.py [--store DIR] [--tasks fx_s1,ub_s1] [--epochs 10]

Makes (once) a SynGym store of floor and uneven-bars routines (the studies' SynGym
preset, ``configs/studies/syngym/store.yaml``, with both events), imports its poses,
then per task trains TSN and TSM on flow with the studies' recipe, ST-GCN on skeletons
and the PoseC3D-style model on keypoint heatmaps, the same epochs and optimizer each,
evaluates each with its test protocol and prints the table (mean class and top-1 with
95 % intervals over the validation sub-actions) and each pose run's input wait per
epoch. Runs go to STORE/benchmark_runs and resume if interrupted.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import ray

from finegym_ray import storage
from finegym_ray.config import load_config
from finegym_ray.dataset.pose_store import import_pose_pickle
from finegym_ray.pose.config import PoseConfig
from finegym_ray.pose.train import run_pose_training
from finegym_ray.runtime.connect import init_ray
from finegym_ray.synth.generate import POSES
from finegym_ray.train.config import TrainConfig
from finegym_ray.train.evaluate import evaluate, format_results
from finegym_ray.train.run import run_training
from finegym_ray.tune.studies import make_study_store, store_settings

STUDIES = os.path.join(os.path.dirname(__file__), "..", "configs", "studies", "syngym")
# Pose models sized as the studies' ResNet-10 at width 16 is for clips.
POSE_MODELS = {
    "stgcn": dict(model="stgcn", model_kwargs={"base_width": 16}, frames=32, test_views=2),
    "posec3d": dict(model="posec3d", model_kwargs={"base_width": 16, "blocks": [2, 2, 2]}, frames=24,
                    heatmap_size=32, test_views=2),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--store", default="finegym_pose_benchmark/store", help="the SynGym store (made once)")
    p.add_argument("--tasks", default="fx_s1,ub_s1")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--videos", type=int, default=30)
    args = p.parse_args()
    store = os.path.abspath(args.store)
    synth, preprocess = store_settings(os.path.join(STUDIES, "store.yaml"))
    synth = replace(synth, events=[2, 4], videos=args.videos)
    init_ray(log_to_driver=False)
    t0 = time.time()
    make_study_store(store, synth, preprocess, say=print)
    import_pose_pickle(os.path.join(os.path.dirname(store), "syngym", "annotations", POSES), store)
    print(f"store and poses ready in {time.time() - t0:.0f} s", flush=True)
    runs = storage.join(store, "benchmark_runs")
    base = replace(load_config(TrainConfig, os.path.join(STUDIES, "base.yaml")), data=store, runs=runs,
                   modality="flow", frames_per_segment=3, epochs=args.epochs)
    waits = {}
    for task in args.tasks.split(","):
        results = {}
        for model in ("tsn", "tsm"):
            config = replace(base, task=task, model=model)
            t0 = time.time()
            run = run_training(config, say=lambda m: None)["run"]
            print(f"trained {config.run_name} in {time.time() - t0:.0f} s", flush=True)
            results[config.run_name] = evaluate(run, say=lambda m: None)["run"]
        for settings in POSE_MODELS.values():
            config = PoseConfig(data=store, runs=runs, task=task, epochs=args.epochs, optimizer=base.optimizer,
                                lr=base.lr, weight_decay=base.weight_decay, warmup_epochs=base.warmup_epochs,
                                batch_size=base.batch_size, **settings)
            t0 = time.time()
            trained = run_pose_training(config, say=lambda m: None)
            print(f"trained {config.run_name} in {time.time() - t0:.0f} s", flush=True)
            waits[config.run_name] = [(m["data_wait_s"], m["epoch_s"]) for m in trained["history"]]
            results[config.run_name] = evaluate(trained["run"], say=lambda m: None)["run"]
        print(f"\n{task}, {args.epochs} epochs each")
        print(format_results(results), flush=True)
    ray.shutdown()
    print("\ninput wait per epoch of the pose runs (s waited of the epoch's s, samples made in the worker):")
    for name, per_epoch in waits.items():
        print(f"  {name}: " + ", ".join(f"{w:.1f}/{s:.1f}" for w, s in per_epoch))


if __name__ == "__main__":
    main()
