"""What a tiny Ray Train run costs beyond its epoch: the suite trains some 60 of them.

Starts a 2-CPU local Ray (as the tests' session cluster), generates and preprocesses a
tiny SynGym, then times ``run_training`` of a one-epoch tiny TSM ``--runs`` times and
prints each run's wall time beside the epoch time it recorded. ``--poll`` sets Ray
Train's health-check interval (``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, seconds; Ray's
default is 2) before Ray starts, as ``tests/conftest.py`` does for the tests.

    python benchmarks/tiny_run_overhead.py [--runs 3] [--poll 0.2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--poll", type=float, default=None, help="seconds (default: Ray's)")
    args = parser.parse_args()
    if args.poll is not None:
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(args.poll)

    import ray

    from finegym_ray.cli import smoke
    from finegym_ray.config import load_config
    from finegym_ray.preprocess.config import PreprocessConfig
    from finegym_ray.preprocess.pipeline import run_preprocess
    from finegym_ray.runtime.connect import init_ray
    from finegym_ray.train import checkpoint
    from finegym_ray.train.config import TrainConfig
    from finegym_ray.train.run import run_training

    init_ray("local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    data = smoke.syngym()
    store = os.path.join(data, "store")
    run_preprocess(load_config(PreprocessConfig, overrides=smoke.PREPROCESS), os.path.join(data, "annotations"),
                   os.path.join(data, "videos"), store, say=lambda _m: None)
    print(f"poll {os.environ.get('RAY_TRAIN_HEALTH_CHECK_INTERVAL_S', 'Ray default (2)')} s")
    for i in range(args.runs):
        config = load_config(TrainConfig, overrides=[*smoke.TRAIN, "workers=1", "cpus_per_worker=1.0",
                                                     f"data={store}", f"runs={tempfile.mkdtemp()}"])
        t0 = time.monotonic()
        run = run_training(config, say=lambda _m: None)["run"]
        wall = time.monotonic() - t0
        epoch = checkpoint.find_latest(run).meta["history"][-1]["epoch_s"]
        print(f"run {i + 1}: {wall:.1f} s, its epoch {epoch:.1f} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
