"""``finegym-ray train-poses``: ST-GCN or the PoseC3D-style model on the 2-D poses beside
a store's clips, with Ray Train; the same command resumes the run of the same name."""

from __future__ import annotations

import argparse

from ..runtime import connect
from . import smoke
from .options import add_overrides, add_print_config, add_ray_options, print_config, printer, runs_hint
from .train import settings_help

SHOWN = ("task", "model", "modality", "frames", "persons", "epochs", "batch_size", "lr", "workers",
         "cpus_per_worker", "use_gpu")


def add_parser(sub) -> None:
    from ..dataset.labels import TASK_NAMES
    from ..pose import config as pose_config

    choices = {"task": tuple(t for t in TASK_NAMES if t != "event"), "model": pose_config.SKELETON_MODELS
               + pose_config.HEATMAP_MODELS, "modality": pose_config.MODALITIES, "optimizer": pose_config.OPTIMIZERS}
    p = sub.add_parser(
        "train-poses", help="train ST-GCN or a PoseC3D-style model on 2-D poses with Ray Train (resumes by name)",
        description="Train a pose model on the poses under DATA/poses (finegym-ray import-poses), labelled by "
                    "DATA/manifest exactly as clips are, so every sub-action task works: ST-GCN on skeletons "
                    "(model=stgcn) or a PoseC3D-style 3-D CNN on heatmap volumes of the joints or limbs "
                    "(model=posec3d, modality=keypoints|limbs), drawn from the poses each epoch on the workers. "
                    "Labelled sub-actions without poses are left out and counted. Checkpoints every epoch to "
                    "RUNS/NAME; the same command resumes. Score the run with 'finegym-ray evaluate --run "
                    "RUNS/NAME' (the clips' protocol: views averaged, intervals), and fuse it with an RGB or flow "
                    "run, or a keypoints run with a limbs run, with --fuse.",
        epilog=f"settings (--set KEY=VALUE or --config YAML, see configs/pose/; the comments in "
               f"finegym_ray/pose/config.py explain each), with their defaults: "
               f"{settings_help(pose_config.PoseConfig, choices)}. "
               "Example: finegym-ray train-poses --config configs/pose/stgcn_gym99.yaml --data STORE")
    p.add_argument("--config", metavar="YAML", help="pose config file (configs/pose/*.yaml)")
    add_overrides(p, "override one setting, e.g. --set epochs=5 (repeatable)")
    p.add_argument("--data", metavar="URI", help="the store holding poses/ and manifest/ (the config's data)")
    p.add_argument("--runs", metavar="URI", help="folder or s3:// prefix holding runs (the config's runs)")
    p.add_argument("--name", help="run name (default MODEL_MODALITY_TASK); the same name resumes")
    p.add_argument("--smoke-test", action="store_true",
                   help="two epochs of a narrow ST-GCN on the poses of a tiny generated SynGym, then its evaluation")
    add_print_config(p)
    add_ray_options(p, lease="RUNS/NAME")
    p.set_defaults(func=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..pose.config import PoseConfig, with_absolute_paths
    from ..train.trackers import require as require_trackers

    overrides = [*smoke.POSES, *args.overrides] if args.smoke_test else list(args.overrides)
    for flag, key in ((args.data, "data"), (args.runs, "runs"), (args.name, "name")):
        if flag:
            overrides.append(f"{key}={flag}")
    config = load_config(PoseConfig, args.config, overrides)
    if args.smoke_test:
        from dataclasses import replace

        config = replace(config, data=smoke.pose_store(), runs=args.runs or smoke.temp_folder("finegym_runs_"))
    config = with_absolute_paths(config)
    if args.print_config:
        return print_config(train_poses=config)
    require_trackers(config)
    connect.init_ray(args.address)
    from ..pose.train import run_pose_training
    from ..progress import settings_line
    from ..train.engine import run_uri
    from ..train.run import format_history

    print(f"[train-poses] {settings_line(config, SHOWN)}; all settings in {run_uri(config)}/config.yaml", flush=True)
    result = run_pose_training(config, break_lease=args.break_lease, say=printer("train-poses"))
    print(format_history(result["history"]))
    print(f"run:        {result['run']}\ncheckpoint: {result['checkpoint']}\nconfig:     {result['run']}/config.yaml")
    if args.smoke_test:
        from ..train.evaluate import evaluate, format_results

        print(format_results(evaluate(result["run"], say=printer("evaluate"))))
    else:
        print(f"score it: finegym-ray evaluate --run {result['run']}")
        print(runs_hint(config.runs))
    return 0
