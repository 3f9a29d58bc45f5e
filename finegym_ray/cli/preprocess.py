"""``finegym-ray preprocess``: sub-action (and event) clips with optical flow, cut into
Parquet shards on Ray Data; the same command resumes."""

from __future__ import annotations

import argparse
import os

from ..errors import InputError
from ..progress import PREPROCESS_SETTINGS_SHOWN
from ..runtime import connect
from . import smoke
from .options import add_annotations_option, add_overrides, add_print_config, add_ray_options, print_config, printer


def add_parser(sub) -> None:
    p = sub.add_parser(
        "preprocess", help="cut sub-action (and event) clips with optical flow into Parquet shards, on Ray Data",
        description="Plan work units from the annotations, then decode each window (resized at decode), "
                    "compute optical flow and write OUT/clips/<unit>.parquet (JPEG frames and flow per clip), "
                    "OUT/errors/ and OUT/summary.json. Running the same command again resumes: units whose "
                    "shard exists are skipped. Bad videos are recorded in OUT/errors/ and the job goes on.",
        epilog="settings (--set KEY=VALUE or --config YAML): short_side=256, decoder=pyav|decord, "
               "max_fps=null, flow.method=dis|farneback|tvl1|none and its flow.options.NAME=VALUE (dis: "
               "preset=fast; tvl1: tau, lambda_, theta, scales, scale_step, warps, epsilon, inner_iterations, "
               "outer_iterations, median_filtering, gamma, device=auto|cpu|cuda, batch_pairs, ...: see "
               "finegym_ray/video/tvl1.py; --set flow=NAME: that method with its defaults), flow_bound=20, "
               "jpeg_quality=90, events=false, subactions=true, unit_seconds=60, chunk_frames=128, "
               "allow_vfr=false, workers=null (one per CPU), cpus_per_worker=1, "
               "flow_workers=null and flow_gpus_per_worker=1 (tvl1's flow actors: one per GPU, on CPUs where "
               "the cluster has none), cache_dir=null (a private folder per user on each node), cache_gb=50. "
               "Exit status, over the whole plan (a rerun that only retries failures exits the same): 0 "
               "(failures counted in the summary), 1 if no unit has clips or, with --strict, if any unit or "
               "clip failed, 2 for bad input.")
    add_annotations_option(p)
    p.add_argument("--videos", metavar="URI", help="folder of <video_id>.mp4 files, local or s3://")
    p.add_argument("--out", metavar="URI", help="output folder, local or s3://bucket/prefix")
    p.add_argument("--smoke-test", action="store_true",
                   help="run on a tiny generated SynGym (2 videos) instead of --annotations/--videos; "
                        "output to --out or a temp folder")
    p.add_argument("--config", metavar="YAML", help="preprocess config file (fields listed below)")
    add_overrides(p, "override one setting, e.g. --set flow=farneback or --set flow.options.preset=medium "
                     "(repeatable)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any planned unit or clip has failed")
    p.add_argument("--prune", action="store_true",
                   help="delete shards of an earlier plan (annotations or unit_seconds changed) instead of refusing")
    add_print_config(p)
    add_ray_options(p, lease="OUT")
    p.set_defaults(func=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..preprocess.config import PreprocessConfig
    from ..preprocess.pipeline import format_summary, run_preprocess
    from ..video.files import require_videos

    overrides = [*smoke.PREPROCESS, *args.overrides] if args.smoke_test else list(args.overrides)
    # Settings first: a bad one stops the command before the smoke test's data is made.
    config = load_config(PreprocessConfig, args.config, overrides)
    if args.print_config:
        return print_config(preprocess=config)
    if args.smoke_test:
        data = smoke.syngym()
        args.annotations, args.videos = os.path.join(data, "annotations"), os.path.join(data, "videos")
        args.out = args.out or os.path.join(data, "out")
    missing = [f"--{n}" for n in ("annotations", "videos", "out") if not getattr(args, n)]
    if missing:
        raise InputError(f"preprocess needs {', '.join(missing)} (or --smoke-test)")
    require_videos(args.videos)  # no folder, or no video in it: refused before Ray starts
    from ..progress import settings_line
    from ..store import config_uri

    print(f"[preprocess] {settings_line(config, PREPROCESS_SETTINGS_SHOWN)}; all settings in "
          f"{config_uri(args.out)}", flush=True)
    connect.init_ray(args.address)
    summary = run_preprocess(config, args.annotations, args.videos, args.out, prune=args.prune,
                             break_lease=args.break_lease, say=printer("preprocess"))
    print(format_summary(summary))
    print(preprocess_outputs(args.out))
    return preprocess_exit_code(summary, strict=args.strict)


def preprocess_outputs(out: str) -> str:
    """Where preprocessing's outputs are, one per line; errors/ only when it exists
    (nothing failed: none is written)."""
    from .. import storage
    from ..store import clips_dir, config_uri, errors_dir, summary_uri

    out = out.rstrip("/")
    errors = f"errors:  {errors_dir(out)}/\n" if storage.list_uris(errors_dir(out)) else ""
    return f"clips:   {clips_dir(out)}/\n{errors}summary: {summary_uri(out)}\nconfig:  {config_uri(out)}"


def preprocess_exit_code(summary: dict, *, strict: bool) -> int:
    """The state of the output over the whole plan, not of this run's attempts (so the
    same command on the same inputs always exits the same): 1 when no planned unit has
    clips, or with ``strict`` when any planned unit has an error record; else 0."""
    state = summary["output"]
    if state["planned"] and state["with_clips"] == 0:
        return 1
    if strict and state["with_errors"]:
        return 1
    return 0
