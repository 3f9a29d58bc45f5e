"""``finegym-ray import-poses``: 2-D poses from an mmaction2 pose pickle (FineGym's
``gym_2d.pkl`` or SynGym's) into a store's pose shards, in this process (no Ray)."""

from __future__ import annotations

import argparse

from .options import add_storage_options

DESCRIPTION = """\
Read an mmaction2 pose pickle as data only (numpy arrays and plain containers; a pickle
that names anything else is refused and runs nothing): mmaction2's gym_2d.pkl of FineGym
or SynGym's DIR/annotations/gym_2d.pkl. Write its poses under STORE/poses, one Parquet
shard per video (a video's shard is replaced whole), beside the clips: every task labels
them from STORE/manifest by key, as it labels clips. Runs in this process (no Ray)."""

EPILOG = """\
examples:
  finegym-ray import-poses --pickle data/gym/gym_2d.pkl --out s3://bucket/finegym/store
  finegym-ray import-poses --pickle syngym/annotations/gym_2d.pkl --out store  # SynGym's

Exit status: 0 once every video's shard is written, 2 for bad input (a pickle that is
not data only, a store that is not one, a file not found)."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "import-poses", help="2-D poses from an mmaction2 pose pickle (gym_2d.pkl) into STORE/poses",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("--pickle", required=True, metavar="PKL", help="the pose pickle (path or s3:// URI)")
    p.add_argument("--out", required=True, metavar="STORE",
                   help="the store (the --out of preprocess; local folder or s3://bucket/prefix)")
    add_storage_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..dataset.pose_store import import_pose_pickle
    from ..store import poses_dir

    written = import_pose_pickle(args.pickle, args.out)
    print(f"poses: {written.describe()} -> {poses_dir(args.out)}")
    return 0
