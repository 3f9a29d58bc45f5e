"""``finegym-ray tune``: a sweep of training settings with Ray Tune; the same command
resumes the sweep of the same name."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..runtime import connect
from . import smoke
from .options import add_overrides, add_print_config, add_ray_options, print_config, printer


def add_parser(sub) -> None:
    p = sub.add_parser(
        "tune", help="sweep training settings with Ray Tune (grid/random search, ASHA); resumes by sweep name",
        description="Run the trials of SWEEP.yaml: each trains the base training config with the swept values "
                    "(a TorchTrainer per trial, checkpoints in SWEEPS/NAME/trials/<trial id>/). Prints a line per "
                    "trial event and at the end the results table; writes SWEEPS/NAME/results/ (results.parquet, "
                    "results.csv, best.yaml ready for 'finegym-ray train --config', a PNG per swept setting) and "
                    "Tune's TensorBoard files per trial. Running the same command again resumes the sweep: "
                    "finished trials stay, unfinished ones continue from their newest checkpoint.",
        epilog="SWEEP.yaml: name (default: the file's stem), base (a train config file), train (training values "
               "on top of it), space (KEY: {grid|choice: [...]} or {uniform|loguniform|randint: [lo, hi]}), "
               "num_samples=1, metric=val_mean_class|val_top1|val_loss|train_*, mode=max|min, scheduler=none|asha, "
               "grace_period=1 (epochs), reduction_factor=2, max_concurrent_trials=0 (as many as fit; never "
               "more without an autoscaler), resources "
               "(workers=1, cpus_per_worker=1, gpus_per_worker=0), sweeps=./finegym_sweeps. Overrides: --set "
               "num_samples=4, --set train.epochs=2, --set space.lr.loguniform=[0.001,0.1]. Exit status: 0, 1 if a "
               "trial errored, 2 for bad input. Example: finegym-ray tune --config configs/sweeps/tsm_rgb_gym99.yaml")
    p.add_argument("--config", metavar="YAML", help="sweep file (see below and configs/sweeps/)")
    add_overrides(p, "override one sweep setting, train.KEY or space.KEY.KIND (repeatable)")
    p.add_argument("--smoke-test", action="store_true",
                   help="two one-epoch trials of a tiny model on a tiny generated SynGym, in a temp folder")
    add_print_config(p)
    add_ray_options(p, lease="SWEEPS/NAME")
    p.set_defaults(func=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    """Exit status 0, or 1 when a trial errored."""
    from ..train.trackers import require as require_trackers
    from ..tune.config import check_one_seed, load_sweep

    overrides = list(args.overrides)
    if args.smoke_test:
        overrides = smoke.train_settings(overrides, prefix="train.") + smoke.SWEEP + overrides
    elif not args.config:
        raise InputError("tune needs --config SWEEP.yaml (or --smoke-test)")
    if args.smoke_test and not args.config:
        overrides.append("name=smoke")
    # Settings first: a bad sweep stops the command before Ray starts.
    sweep, base = load_sweep(args.config, overrides)
    if args.print_config:
        return print_config(sweep=sweep, train=base)
    check_one_seed(sweep)
    require_trackers(base)  # a missing extra, before Ray starts
    # Trials' and training workers' own lines stay in Ray's logs: this driver prints a
    # line per trial event.
    connect.init_ray(args.address, log_to_driver=False)
    if args.smoke_test:
        from dataclasses import replace

        base = replace(base, data=smoke.store())
        sweep = replace(sweep, sweeps=smoke.temp_folder("finegym_sweeps_"))
    from ..tune.sweep import format_sweep, run_sweep

    print(f"[tune] sweep {sweep.name}: {sweep.space or 'no search space'}, metric {sweep.metric} ({sweep.mode}), "
          f"scheduler {sweep.scheduler}", flush=True)
    result = run_sweep(sweep, base, break_lease=args.break_lease, say=printer("tune"))
    print(format_sweep(result, sweep.metric))
    return 1 if any(t.status == "errored" for t in result["trials"]) else 0
