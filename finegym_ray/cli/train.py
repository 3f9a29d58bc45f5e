"""``finegym-ray train``: a recognition model on clip shards with Ray Train; the same
command resumes the run of the same name."""

from __future__ import annotations

import argparse

from ..progress import TRAIN_SETTINGS_SHOWN
from ..runtime import connect
from . import smoke
from .options import add_overrides, add_print_config, add_ray_options, print_config, printer, runs_hint


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a recognition model on clip shards with Ray Train (resumes by run name)",
        description="Train TSN/TRN/TSM/I3D on the clips preprocessing wrote (DATA/clips, labels from "
                    "DATA/manifest) with N Ray Train workers (DDP, CPU or GPU). Checkpoints every epoch to "
                    "RUNS/NAME (the last keep_checkpoints and the best kept); running the same command again "
                    "continues after the newest complete one, and a worker that dies is replaced and resumes "
                    "from it. Another epochs, model or preprocessing of the clips is refused on resume.",
        epilog=f"settings (--set KEY=VALUE or --config YAML, see configs/; the comments in "
               f"finegym_ray/train/config.py explain each), with their defaults: {train_settings_help()}. "
               "Example: finegym-ray train --config configs/tsm_flow_demo.yaml --data finegym_demo/store")
    p.add_argument("--config", metavar="YAML", help="train config file (configs/*.yaml)")
    add_overrides(p, "override one setting, e.g. --set epochs=5 (repeatable)")
    p.add_argument("--data", metavar="URI", help="preprocessing output to train on (the config's data)")
    p.add_argument("--runs", metavar="URI", help="folder or s3:// prefix holding runs (the config's runs)")
    p.add_argument("--name", help="run name (default MODEL_MODALITY_TASK); the same name resumes")
    p.add_argument("--smoke-test", action="store_true",
                   help="one epoch of a tiny model on a tiny generated and preprocessed SynGym")
    add_print_config(p)
    add_ray_options(p, lease="RUNS/NAME")
    p.set_defaults(func=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..train.config import TrainConfig, with_absolute_paths
    from ..train.trackers import require as require_trackers

    overrides = [*smoke.train_settings(args.overrides), *args.overrides] if args.smoke_test else list(args.overrides)
    for flag, key in ((args.data, "data"), (args.runs, "runs"), (args.name, "name")):
        if flag:
            overrides.append(f"{key}={flag}")
    config = load_config(TrainConfig, args.config, overrides)
    config = with_absolute_paths(config)  # as the run records them: it reads the same data from anywhere
    if args.print_config:
        return print_config(train=config)
    require_trackers(config)  # a missing extra, before Ray starts
    if not args.smoke_test:
        from ..train.data import check_data_settings

        # The clips' recorded settings against the task and modality, before Ray starts.
        check_data_settings(config.data, config.task, config.modality)
    connect.init_ray(args.address)
    if args.smoke_test:
        from dataclasses import replace

        config = replace(config, data=smoke.store(), runs=args.runs or smoke.temp_folder("finegym_runs_"))
    from ..progress import settings_line
    from ..train.engine import run_uri
    from ..train.run import format_history, run_training

    print(f"[train] {settings_line(config, TRAIN_SETTINGS_SHOWN)}; all settings in {run_uri(config)}/config.yaml",
          flush=True)
    result = run_training(config, break_lease=args.break_lease, say=printer("train"))
    print(format_history(result["history"]))
    print(f"run:        {result['run']}\ncheckpoint: {result['checkpoint']}\nconfig:     {result['run']}/config.yaml")
    if not args.smoke_test:
        print(runs_hint(config.runs))
    return 0


def train_settings_help() -> str:
    """Every TrainConfig field with its default (and its choices where the config module
    names them), generated from the dataclass so that ``train --help`` cannot drift."""
    from ..dataset.labels import TASK_NAMES
    from ..train import config as train_config

    return settings_help(train_config.TrainConfig, {
        "task": TASK_NAMES, "modality": train_config.MODALITIES, "model": train_config.MODELS,
        "backbone": train_config.BACKBONES, "class_balance": train_config.CLASS_BALANCE,
        "optimizer": train_config.OPTIMIZERS, "depth": train_config.DEPTHS})


def settings_help(config_class: type, choices: dict[str, tuple]) -> str:
    """``name=default (choice|choice)`` of every field of the dataclass ``config_class``."""
    from dataclasses import MISSING, fields

    def shown(value) -> str:
        if value is None:
            return "null"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(map(shown, value)) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k}: {shown(v)}" for k, v in value.items()) + "}"
        return "''" if value == "" else str(value)

    items = []
    for f in fields(config_class):
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        more = f" ({'|'.join(map(str, choices[f.name]))})" if f.name in choices else ""
        items.append(f"{f.name}={shown(default)}{more}")
    return ", ".join(items)
