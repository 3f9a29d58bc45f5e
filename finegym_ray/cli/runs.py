"""``finegym-ray runs``: the training runs under a runs folder, one row each (no Ray)."""

from __future__ import annotations

import argparse

from ..config import RUNS_FOLDER
from .options import add_storage_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "runs", help="list the training runs under a runs folder: model, epochs, best and last accuracy, state",
        description="One row per training run below URI (sweep trials included): model, input, task, epochs "
                    "done / planned, best (by mean class) and last validation mean class and top-1 accuracy, "
                    "and a state: finished, running, partial (stopped: the same command resumes it) or failed "
                    "(training raised, or its job is gone and left its lease). Reads no weights; no Ray.")
    p.add_argument("uri", nargs="?", default=RUNS_FOLDER, metavar="URI",
                   help=f"runs folder (path or s3:// URI; default {RUNS_FOLDER}, where train, demo and localize "
                        f"write theirs)")
    p.add_argument("--json", action="store_true",
                   help="print the runs as one JSON array (an object per run) instead of the table")
    add_storage_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train import runs

    return runs.run(args.uri, as_json=args.json)
