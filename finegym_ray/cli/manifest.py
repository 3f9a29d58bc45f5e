"""``finegym-ray manifest``: FineGym annotations, categories and splits joined into
Parquet tables."""

from __future__ import annotations

import argparse

from .options import add_storage_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "manifest", help="join FineGym annotations, categories and splits into Parquet tables",
        description="Write events.parquet, subactions.parquet, categories.parquet, unmatched_keys.parquet "
                    "and summary.json under OUT, and print counts per event, set and split. Split keys "
                    "missing from the annotations are reported, with examples, not dropped silently.")
    p.add_argument("--annotations", required=True, metavar="JSON",
                   help="finegym_annotation_info_v1.0.json or v1.1.json (path or s3:// URI)")
    p.add_argument("--categories", required=True, nargs="+", metavar="TXT",
                   help="gym99/gym288/gym530_categories.txt; split labels index the subset named in the "
                        "split file name (gym99_...), else the first file given")
    p.add_argument("--sets", metavar="TXT", help="set_categories.txt (checks set ids; enables the set task)")
    p.add_argument("--splits", required=True, nargs="+", metavar="[SPLIT=]TXT",
                   help="split files; the split name (train/val/test) comes from the file name "
                        "unless given as train=PATH")
    p.add_argument("--out", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    add_storage_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..dataset.manifest import build_manifest, format_summary, write_manifest

    manifest = build_manifest(args.annotations, args.categories, args.splits, sets=args.sets)
    written = write_manifest(manifest, args.out)
    print(format_summary(manifest.summary))
    for name, uri in written.items():
        print(f"{name + ':':<16}{uri}")
    return 0
