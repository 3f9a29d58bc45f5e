"""``finegym-ray score-detections``: temporal detection mAP of any system's detections
(ActivityNet's evaluation), in this process (no Ray)."""

from __future__ import annotations

import argparse

from .options import add_storage_options


def add_parser(sub) -> None:
    from ..localize.score import FORMATS_HELP

    p = sub.add_parser(
        "score-detections", help="temporal detection mAP at tIoU 0.50:0.05:0.95 (ActivityNet's evaluation)",
        description="Score detections of any system (ActivityNet results JSON) against ground truth "
                    "(ActivityNet JSON, FineGym's annotation JSON or folder); prints the FineGym paper's "
                    "Table 4 layout and AP per class. Runs in this process (no Ray).",
        epilog=FORMATS_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ground-truth", required=True, metavar="GT", help="ground truth file or FineGym folder "
                   "(path or s3:// URI)")
    p.add_argument("--detections", required=True, metavar="DET.json", help="ActivityNet results JSON (path or s3://)")
    p.add_argument("--level", choices=["action", "subaction"], default="action",
                   help="for FineGym ground truth: routines in videos (action, default) or sub-actions in routines")
    p.add_argument("--subset", help="ActivityNet ground truth: score only the videos of this subset, e.g. validation")
    p.add_argument("--class-agnostic", action="store_true", help="ignore every label: score the segments alone")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    add_storage_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..localize import score

    return score.run(args.ground_truth, args.detections, level=args.level, subset=args.subset,
                     agnostic=args.class_agnostic, as_json=args.json)
