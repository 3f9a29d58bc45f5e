"""``finegym-ray check``: before preprocessing, is every annotated video there, readable
and long enough (no Ray)."""

from __future__ import annotations

import argparse

from .options import add_annotations_option, add_storage_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "check", help="before preprocessing: is every annotated video there, readable and long enough (no Ray)",
        description="For every video the annotations name: whether its file is under --videos (<video_id>.mp4, "
                    ".mkv, .webm, .mov or .avi), whether it opens and decodes a frame near its start and near the "
                    "end of its last annotated event, whether it lasts as long as its annotations reach, its frame "
                    "rate and whether that varies (timestamps sampled at the start, middle and end). Prints the "
                    "problems, a summary, and per task (gym99, gym288, gym530, set, event) and split the labelled "
                    "keys of the videos that can be cut and those missing; writes one CSV row per video and that "
                    "table beside it (<csv>_coverage.csv). Decodes a few frames per video, eight videos at a "
                    "time: about a second per video or less.",
        epilog="Exit status: 0 when every annotated video can be cut, 1 when some cannot (missing, unreadable, "
               "too short, or a variable frame rate without --allow-vfr), 2 for bad input.")
    add_annotations_option(p, required=True)
    p.add_argument("--videos", required=True, metavar="URI", help="folder of <video_id>.mp4 files, local or s3://")
    p.add_argument("--csv", default="finegym_video_check.csv", metavar="PATH",
                   help="where the per-video CSV goes, path or s3:// URI (default ./finegym_video_check.csv); the "
                        "table per task and split goes beside it, as <name>_coverage.csv")
    p.add_argument("--allow-vfr", action="store_true",
                   help="a variable frame rate is no problem (as for preprocessing with allow_vfr=true)")
    add_storage_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..video.check import run_check

    return run_check(args.annotations, args.videos, args.csv, allow_vfr=args.allow_vfr,
                     say=lambda m: print(m, flush=True))
