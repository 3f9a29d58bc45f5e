"""``finegym-ray extract-features``: snippet features of videos (or routines) with a
trained run's backbone, on Ray Data, for localization; the same command resumes."""

from __future__ import annotations

import argparse
import os

from ..errors import InputError
from ..runtime import connect
from . import smoke
from .options import add_annotations_option, add_overrides, add_ray_options, printer


def add_parser(sub) -> None:
    p = sub.add_parser(
        "extract-features", help="snippet features of videos (or routines) with a trained run's backbone, "
                                 "on Ray Data, for localization",
        description="Slide snippets over whole videos (--level action) or over each routine (subaction, times "
                    "relative to the routine start), embed them with the backbone of a trained recognition run "
                    "(its features()), and write OUT/<level>/<id>.parquet, plus per-instance features of the "
                    "run's element clips (OUT/elements/). Decoding and flow on CPU actors, the backbone on GPU "
                    "actors where the cluster has GPUs. Running the same command again skips complete files.",
        epilog="Settings (--set): snippet_frames=16, stride_frames=8, fps=0 (the clips' rate), short_side, "
               "input_height/input_width, segments=12, elements=true, batch_size=32, workers, model_workers, "
               "gpus_per_model_worker, model_cpus. Exit status: 0, 1 if an item failed (see OUT/errors/), "
               "2 for bad input.")
    p.add_argument("--run", metavar="RUN_URI", help="a trained run (RUNS/NAME) or one of its epoch_NNNN folders")
    p.add_argument("--videos", metavar="URI", help="folder of <video_id>.mp4 files (local or s3://)")
    add_annotations_option(p)
    p.add_argument("--out", metavar="URI", help="output folder (local or s3://)")
    p.add_argument("--level", choices=("action", "subaction"), help="snippets over whole videos or routines")
    p.add_argument("--config", metavar="YAML", help="extraction config file")
    add_overrides(p, "override one extraction setting (repeatable)")
    p.add_argument("--smoke-test", action="store_true",
                   help="a tiny generated SynGym, preprocessed, a one-epoch tiny run, then extraction, in a temp "
                        "folder")
    add_ray_options(p)
    p.set_defaults(func=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    """Exit status 0, or 1 when an item failed (recorded in OUT/errors/)."""
    from ..config import load_config, to_yaml
    from ..localize.config import ExtractConfig
    from ..localize.extract import check_inputs, format_summary, run_extract

    started: list[bool] = []

    def connect_once() -> None:  # the smoke test connects early to train its run
        if not started:
            connect.init_ray(args.address)
            started.append(True)

    overrides = [*smoke.EXTRACT, *args.overrides] if args.smoke_test else list(args.overrides)
    if args.level:
        overrides.append(f"level={args.level}")
    config = load_config(ExtractConfig, args.config, overrides)
    if args.smoke_test:
        connect_once()
        args.run, store = smoke.trained_run()
        data = os.path.dirname(store)
        args.videos, args.annotations = os.path.join(data, "videos"), os.path.join(data, "annotations")
        args.out = args.out or os.path.join(data, "features")
    missing = [f"--{n}" for n in ("run", "videos", "annotations", "out") if not getattr(args, n)]
    if missing:
        raise InputError(f"extract-features needs {', '.join(missing)} (or --smoke-test)")
    check_inputs(config, args.run, args.videos, args.annotations)  # before Ray starts
    print(f"[extract] settings:\n{to_yaml(config)}", flush=True)
    summary = run_extract(config, args.run, args.videos, args.annotations, args.out, connect=connect_once,
                          say=printer("extract"))
    print(format_summary(summary, args.out))
    return 1 if summary["items"]["failed"] else 0
