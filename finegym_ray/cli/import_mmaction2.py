"""``finegym-ray import-mmaction2``: the FineGym sub-actions that mmaction2 users already
cut (trimmed videos or rawframes with denseflow's TV-L1) into the preprocessed store's
clip shards, on Ray Data; the same command resumes."""

from __future__ import annotations

import argparse
import os

from ..errors import InputError
from ..progress import PREPROCESS_SETTINGS_SHOWN
from ..runtime import connect
from . import smoke
from .options import add_annotations_option, add_overrides, add_print_config, add_ray_options, print_config, printer
from .preprocess import preprocess_exit_code, preprocess_outputs

DESCRIPTION = """\
Make a preprocessed store (what 'finegym-ray preprocess' writes: OUT/clips/<unit>.parquet,
OUT/errors/, OUT/summary.json, the manifest) from what mmaction2's tools/data/gym made,
instead of cutting the raw videos again. One layout per run, <key> being the FineGym
sub-action key <youtube_id>_E_XXXXXX_YYYYYY_A_ZZZZ_WWWW:

  --subactions DIR  trimmed sub-action videos, DIR/<key>.mp4 (trim_subaction.py):
                    decoded, resized and given flow with the configured method, as
                    preprocessing does
  --rawframes DIR   a folder per sub-action, DIR/<key>/img_00001.jpg ... with
                    flow_x_00001.jpg, flow_y_00001.jpg ... (build_rawframes.py, that is
                    denseflow's TV-L1 quantized with bound 20): RGB resized and
                    re-encoded, flow de-quantized and quantized again, never recomputed

An item named by no sub-action key of the annotations, a folder with frames missing or
with RGB and flow counts that disagree, an unreadable video: each is recorded in
OUT/errors/ with why, and the job goes on. The same command again resumes, and imports
the keys whose files appeared since. The store records where its clips came from, and
training says it."""

EPILOG = """\
example:
  finegym-ray import-mmaction2 --annotations data/gym/annotations \\
      --rawframes data/gym/subaction_frames --out s3://bucket/finegym/store

settings (--set KEY=VALUE or --config YAML) are preprocess's ('finegym-ray preprocess
--help'): short_side, jpeg_quality, flow_bound (the store's), flow (--subactions: the
method that computes it; --rawframes: the frames' own TV-L1, or flow=none for RGB only),
max_fps (--subactions only), unit_seconds, workers, cpus_per_worker, cache_dir,
cache_gb. Exit status as preprocess's: 0, 1 when no unit has clips (or with --strict
any error record), 2 for bad input."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "import-mmaction2", help="import mmaction2's FineGym sub-actions (trimmed videos or rawframes) into a store",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION, epilog=EPILOG)
    add_annotations_option(p)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--subactions", metavar="DIR", help="folder of <key>.mp4 trimmed sub-actions, local or s3://")
    source.add_argument("--rawframes", metavar="DIR",
                        help="folder of <key>/ folders of img_, flow_x_, flow_y_%%05d.jpg, local or s3://")
    p.add_argument("--out", metavar="URI", help="the store to write, local or s3://bucket/prefix")
    p.add_argument("--smoke-test", action="store_true",
                   help="import a tiny generated SynGym (2 videos) written as mmaction2's rawframes (flow by DIS, "
                        "quantized as denseflow's) instead of --annotations/--rawframes; output to --out or a temp "
                        "folder")
    p.add_argument("--config", metavar="YAML", help="preprocess config file")
    add_overrides(p, "override one of preprocess's settings (listed below; repeatable)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any planned unit has an error record")
    add_print_config(p)
    add_ray_options(p, lease="OUT")
    p.set_defaults(func=run, resumable=True)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..preprocess.config import PreprocessConfig
    from ..preprocess.import_mmaction2 import format_import_summary, run_import
    from ..preprocess.mmaction2 import RAWFRAMES, SUBACTIONS, import_config

    layout, source = (SUBACTIONS, args.subactions) if args.subactions and not args.smoke_test \
        else (RAWFRAMES, args.rawframes)
    overrides = [*smoke.PREPROCESS, *args.overrides] if args.smoke_test else list(args.overrides)
    # Settings first: a bad one stops the command before the smoke test's data is made.
    config = import_config(load_config(PreprocessConfig, args.config, overrides), layout)
    if args.print_config:
        return print_config(preprocess=config)
    if args.smoke_test:
        data = smoke.mmaction2_rawframes()
        args.annotations, source = os.path.join(data, "annotations"), os.path.join(data, "subaction_frames")
        args.out = args.out or os.path.join(data, "store")
    missing = [f"--{n}" for n in ("annotations", "out") if not getattr(args, n)] + (
        [] if source else ["--subactions DIR or --rawframes DIR"])
    if missing:
        raise InputError(f"import-mmaction2 needs {', '.join(missing)} (or --smoke-test)")
    from ..progress import settings_line
    from ..store import config_uri

    print(f"[import-mmaction2] {settings_line(config, PREPROCESS_SETTINGS_SHOWN)}; all settings in "
          f"{config_uri(args.out)}", flush=True)
    connect.init_ray(args.address)
    summary = run_import(config, args.annotations, layout, source, args.out, break_lease=args.break_lease,
                         say=printer("import-mmaction2"))
    print(format_import_summary(summary))
    print(preprocess_outputs(args.out))
    return preprocess_exit_code(summary, strict=args.strict)
