"""``finegym-ray study NAME``: one of the paper's studies, a grid sweep and then an
evaluation grid over its runs; the same command resumes it."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from ..runtime import connect
from . import smoke
from .options import add_overrides, add_print_config, add_ray_options, print_config, printer


def add_parser(sub) -> None:
    p = sub.add_parser(
        "study", help="one of the paper's studies (frames, order, test_segments, motion, pretraining): a sweep, "
                      "then an evaluation grid; resumes by name",
        description="Train the study's runs as one grid sweep per seed (SWEEPS/NAME/trials/, the k-th extra "
                    "seed's in SWEEPS/NAME_seedK/), evaluate each with the test protocol and the study's test-time "
                    "variants, print a table (each figure the mean over the seeds, with a 95 % interval over seeds "
                    "and validation clips) and write SWEEPS/NAME/study/ (study.parquet, study.csv, study.png). "
                    "frames: TSN with 1-12 segments (Table 5); order: TRN and TSN on ordered and shuffled test "
                    "frames (Fig. 6b); test_segments: TSM and TSN trained with 3 segments, tested with 3-12 "
                    "(Fig. 6c); motion: per-class accuracy of RGB and flow TSN (Fig. 6a); pretraining: per-class "
                    "accuracy of I3D from Kinetics and from ImageNet weights (Fig. 6d). Running the same command "
                    "again resumes it.",
        epilog="Presets: finegym (configs/studies/NAME.yaml, give --data or --set train.data=), syngym "
               "(configs/studies/syngym/NAME.yaml: sized for 2 CPU cores; without --data it makes its SynGym store, "
               "settings in configs/studies/syngym/store.yaml, once for all the studies). pretraining at FineGym scale "
               "needs its weights: --set space.pretrained.grid=[KINETICS,IMAGENET]. --set takes the sweep "
               "file's keys as for 'finegym-ray tune'. Exit status: 0, 1 for a failed trial, 2 for bad input.")
    p.add_argument("name", metavar="NAME", help="frames, order, test_segments, motion or pretraining")
    p.add_argument("--config", metavar="YAML", help="the study's sweep file (default: the preset's)")
    p.add_argument("--preset", choices=("finegym", "syngym"), default="finegym",
                   help="configs at FineGym scale (default) or sized for SynGym on 2 CPU cores")
    p.add_argument("--data", metavar="STORE", help="the preprocessed clips to train on (train.data)")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="train each config N times, with seeds train.seed + 0 .. N-1, and report the mean with an "
                        "interval over seeds and clips (default: the preset's, 3 for finegym, 1 for syngym); a "
                        "rerun with a larger N trains only the new seeds")
    add_overrides(p, "override one sweep setting, train.KEY or space.KEY.KIND (repeatable)")
    p.add_argument("--smoke-test", action="store_true",
                   help="one-epoch trials of a tiny model on a tiny generated SynGym, in a temp folder")
    add_print_config(p)
    add_ray_options(p, lease="SWEEPS/NAME")
    p.set_defaults(func=run)


def study_config(name: str, *, preset: str, config: str | None, data: str | None, overrides: list[str],
                 smoke_test: bool, seeds: int | None = None):
    """(sweep, base training config) of study ``name``: the preset's sweep file (or
    ``config``) with the smoke test's settings, ``data``, the user's ``overrides`` and
    ``seeds`` (None: the file's) applied. A bad setting is refused here, before Ray starts."""
    from .. import presets
    from ..tune.config import load_sweep
    from ..tune.studies import STUDIES, check_study

    if name not in STUDIES:
        raise InputError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}")
    folder = presets.path("studies/syngym" if preset == "syngym" else "studies")
    overrides = [f"train.data={data}"] * bool(data) + list(overrides) + [f"seeds={seeds}"] * (seeds is not None)
    if smoke_test:
        overrides = (smoke.train_settings(overrides, prefix="train.") + smoke.STUDY_SETTINGS
                     + smoke.STUDY.get(name, []) + overrides)
    sweep, base = load_sweep(config or str(folder / f"{name}.yaml"), overrides)
    check_study(name, sweep)
    return sweep, base


def run(args: argparse.Namespace) -> int:
    """Exit status 0, or 1 when a trial failed."""
    from .. import presets
    from ..tune.studies import TEST_SEGMENTS

    sweep, base = study_config(args.name, preset=args.preset, config=args.config, data=args.data,
                               overrides=args.overrides, smoke_test=args.smoke_test, seeds=args.seeds)
    if args.print_config:
        return print_config(sweep=sweep, train=base)
    preset = presets.path("studies/syngym" if args.preset == "syngym" else "studies")
    test_segments = smoke.STUDY_TEST_SEGMENTS if args.smoke_test else TEST_SEGMENTS
    connect.init_ray(args.address, log_to_driver=False)
    from ..tune.studies import TrialsFailed, format_study, make_study_store, run_study, store_settings

    say = printer("study")
    if args.smoke_test:
        from dataclasses import replace

        base = replace(base, data=smoke.store())
        sweep = replace(sweep, sweeps=smoke.temp_folder("finegym_studies_"))
    elif args.preset == "syngym" and not args.data:
        make_study_store(base.data, *store_settings(str(preset / "store.yaml")), say=say)
    try:
        result = run_study(args.name, sweep, base, test_segments=test_segments, break_lease=args.break_lease,
                           say=say)
    except TrialsFailed as e:
        print(f"finegym-ray: {e}", file=sys.stderr)
        return 1
    print(format_study(result["table"]))
    for name, uri in result["outputs"].items():
        print(f"{name + ':':<7}{uri}")
    return 0
