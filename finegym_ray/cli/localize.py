"""``finegym-ray localize train|evaluate|demo``: a temporal detector on feature
sequences, trained on Ray Train (the same command resumes) and scored by mAP."""

from __future__ import annotations

import argparse
import time

from ..errors import InputError
from ..runtime import connect
from . import smoke
from .options import add_overrides, add_ray_options, printer, runs_hint

_say = printer("localize")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "localize", help="train a temporal detector on feature sequences with Ray Train, or evaluate it (mAP)",
        description="train: a 1-D detector (models/detector.py) on the feature sequences of extract-features "
                    "(FEATURES/<level>/) with their ground truth, on Ray Train; checkpoints to RUNS/NAME, and the "
                    "same command resumes. evaluate: detections on the validation videos, mAP at tIoU "
                    "0.50:0.05:0.95 in the paper's Table 4 layout, RUN/eval/ (metrics.json, detections.json, "
                    "timeline.png). --smoke-test: a tiny detector on generated toy features, in a temp folder.",
        epilog="settings (--set KEY=VALUE or --config YAML, see configs/localize/*.yaml and "
               "finegym_ray/localize/config.py): features, annotations, level=action|subaction, "
               "task=classes|class_agnostic, detector=pyramid, detector_kwargs, epochs, batch_size, lr, "
               "weight_decay, warmup_epochs, max_steps, val_fraction, score_threshold, sigma, max_detections, "
               "workers, cpus_per_worker, use_gpu, max_failures, runs, name. "
               "Example: finegym-ray localize train --config configs/localize/syngym_action.yaml")
    p.add_argument("action", choices=("train", "evaluate", "demo"),
                   help="train (or resume) the run, evaluate it, or demo: both levels on 64 SynGym videos of its "
                        "own (OUT/localize/syngym) with features from the main demo's run (after 'finegym-ray "
                        "demo'; features to OUT/localize/features, runs beside the demo's run in RUNS, default "
                        "./finegym_runs; about 14 min on 2 cores, a rerun reuses videos and features)")
    p.add_argument("--out", metavar="DIR", help="demo: the main demo's folder (default ./finegym_demo)")
    p.add_argument("--level", choices=("action", "subaction"), help="demo: one level only (default both)")
    p.add_argument("--config", metavar="YAML", help="localize config file (configs/localize/*.yaml)")
    add_overrides(p, "override one setting, e.g. --set epochs=5 (repeatable)")
    p.add_argument("--smoke-test", action="store_true",
                   help="a few epochs of a tiny detector on toy feature sequences (evaluate: train, then evaluate)")
    add_ray_options(p, lease="RUNS/NAME (demo: OUT/localize)")
    p.set_defaults(func=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    return {"train": train, "evaluate": evaluate, "demo": demo}[args.action](args)


def localize_config(args: argparse.Namespace):
    """The LocalizeConfig of ``args``: --config YAML, then --set overrides (the smoke
    test's first, on toy features in a temp folder)."""
    from dataclasses import replace

    from ..config import load_config
    from ..localize.config import LocalizeConfig

    overrides = [*smoke.LOCALIZE, *args.overrides] if args.smoke_test else list(args.overrides)
    config = load_config(LocalizeConfig, args.config, overrides)
    if args.smoke_test:
        features, annotations, runs = smoke.toy_features(config.level)
        config = replace(config, features=features, annotations=annotations, runs=runs)
    elif not args.config and not args.overrides:
        raise InputError("localize needs --config YAML (see configs/localize/) or --set KEY=VALUE settings, "
                         "or --smoke-test")
    return config


def train(args: argparse.Namespace) -> int:
    """``localize train``: settings, data checked before Ray starts, train, the table."""
    from ..config import to_yaml
    from ..localize.train import format_history, prepare, run_localize_training
    from ..train.trackers import require as require_trackers

    config = localize_config(args)
    require_trackers(config)  # a missing extra, before Ray starts
    _say(f"settings:\n{to_yaml(config)}")
    prepare(config, say=lambda _m: None)  # bad data or settings: refused before Ray starts
    connect.init_ray(args.address)
    result = run_localize_training(config, break_lease=args.break_lease, say=_say)
    print(format_history(result["history"]))
    print(f"run:        {result['run']}\ncheckpoint: {result['checkpoint']}\nconfig:     {result['run']}/config.yaml")
    if not args.smoke_test:
        print(runs_hint(config.runs))
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """``localize evaluate``: the newest checkpoint of the config's run on its val split
    (``--smoke-test``: trains the toy run first)."""
    from ..localize.evaluate import evaluate_run, format_results

    config = localize_config(args)
    if args.smoke_test:
        from ..localize.train import run_localize_training

        connect.init_ray(args.address)
        run_localize_training(config, say=_say)
    print(format_results(evaluate_run(config, say=_say)))
    return 0


def demo(args: argparse.Namespace) -> int:
    """``localize demo``: both levels on SynGym videos of its own with the main demo's run (localize/demo.py)."""
    from ..localize.demo import LEVELS, check_demo_inputs, localize_config, run_localize_demo
    from ..localize.evaluate import format_results

    out = args.out or "finegym_demo"
    runs = localize_config(out, args.level or LEVELS[0], list(args.overrides)).runs
    check_demo_inputs(out, runs)  # before Ray starts
    connect.init_ray(args.address)
    t0 = time.time()
    done = run_localize_demo(out, levels=(args.level,) if args.level else LEVELS, overrides=list(args.overrides),
                             break_lease=args.break_lease, say=lambda m: print(m, flush=True))
    for d in done.values():
        seconds = ", ".join(f"{k} {v:.1f} s" for k, v in d["seconds"].items())
        print(f"\n{format_results(d['results'])}\n(trained {len(d['history'])} epochs, {d['iterations']} "
              f"iterations; {seconds})")
    print(f"\nlocalization demo finished in {time.time() - t0:.1f} s")
    print(runs_hint(runs))
    return 0
