"""``finegym-ray manifest``: FineGym annotations, categories and splits joined into
Parquet tables."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .options import add_storage_options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "manifest", help="join FineGym annotations, categories and splits into Parquet tables",
        description="Write events.parquet, subactions.parquet, categories.parquet, unmatched_keys.parquet "
                    "and summary.json under OUT, and print counts per event, set and split. Split keys "
                    "missing from the annotations are reported, with examples, not dropped silently.")
    p.add_argument("--annotations", required=True, metavar="DIR|JSON",
                   help="a FineGym annotation folder (the annotation JSON, its gymNNN_categories.txt, "
                        "set_categories.txt and split files, found by their names, as check and preprocess "
                        "read it), or finegym_annotation_info_v1.0.json / v1.1.json with --categories and "
                        "--splits (path or s3:// URI)")
    p.add_argument("--categories", nargs="+", metavar="TXT",
                   help="with a JSON: gym99/gym288/gym530_categories.txt; split labels index the subset named "
                        "in the split file name (gym99_...), else the first file given")
    p.add_argument("--sets", metavar="TXT", help="with a JSON: set_categories.txt (checks set ids; enables the "
                                                 "set task)")
    p.add_argument("--splits", nargs="+", metavar="[SPLIT=]TXT",
                   help="with a JSON: split files; the split name (train/val/test) comes from the file name "
                        "unless given as train=PATH")
    p.add_argument("--out", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    add_storage_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..dataset.manifest import build_manifest, build_manifest_from, format_summary, write_manifest

    if args.annotations.endswith(".json"):
        if not args.categories or not args.splits:
            raise InputError(f"--annotations {args.annotations}: a JSON file needs --categories and --splits "
                             "(or give the annotation folder that holds them)")
        manifest = build_manifest(args.annotations, args.categories, args.splits, sets=args.sets)
    elif args.categories or args.splits or args.sets:
        raise InputError(f"--annotations {args.annotations}: a folder is read with the files in it; "
                         "--categories, --sets and --splits go with an annotation JSON")
    else:
        manifest = build_manifest_from(args.annotations)
    written = write_manifest(manifest, args.out)
    print(format_summary(manifest.summary))
    for name, uri in written.items():
        print(f"{name + ':':<16}{uri}")
    return 0
