"""``finegym-ray evaluate``: a trained run scored on its validation split, fused with a
second run (two-stream), or tested with the paper's variants."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..runtime import connect
from . import smoke
from .options import add_ray_options, printer


def _fuse_weights(text: str) -> tuple[float, float]:
    """``--fuse-weights 1,1.5``: two positive numbers."""
    try:
        weights = tuple(float(w) for w in text.split(","))
    except ValueError:
        weights = ()
    if len(weights) != 2 or not all(0 < w < float("inf") for w in weights):
        raise argparse.ArgumentTypeError(f"expected two positive numbers W_RUN,W_FUSE, got {text!r}")
    return weights  # type: ignore[return-value]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score a trained run on its validation split; fuse two runs (two-stream)",
        description="Score every validation clip that exists with the run's test protocol (test_views temporal "
                    "views x test_crops crops, softmax averaged) and write RUN/eval/: scores.parquet, metrics.json "
                    "(top-1 and mean class accuracy with 95 % bootstrap intervals, per class, and how many "
                    "labelled clips it is on: a labelled key whose video is missing or whose unit failed in "
                    "preprocessing has no clip, and is counted, with why, beside every figure), confusion.png, "
                    "per_class.png. With --fuse RUN2 also evaluates RUN2 and writes the late fusion of both "
                    "(weighted mean, --fuse-weights) on the clips both scored, counting those it leaves out, "
                    "under RUN/eval/fused_<RUN2 name>_<hash of its URI>/, "
                    "reusing either run's scores when its checkpoint, clips and test settings are unchanged. "
                    "--segments and --shuffle-frames test the paper's Sec. 4.4 variants; their outputs go to "
                    "RUN/eval/VARIANT/ (segments_12, shuffled, segments_5_shuffled, shuffled_seed_3), leaving "
                    "RUN/eval/ as it was.")
    p.add_argument("--run", metavar="URI", help="a run folder (RUNS/NAME) or one of its checkpoint folders "
                                                "(RUNS/NAME/epoch_NNNN), local or s3://")
    p.add_argument("--checkpoint", choices=("last", "best"), default="last",
                   help="which checkpoint of a run folder: last (the newest complete one, default; results in "
                        "RUN/eval/) or best (by validation mean class accuracy; results in RUN/eval/<its folder>/ "
                        "unless it is the newest)")
    p.add_argument("--data", metavar="URI",
                   help="the clips to score (default: the run's recorded data), e.g. a copy elsewhere; refused "
                        "unless their preprocessing settings hash is the one the run was trained on")
    p.add_argument("--rescore", action="store_true",
                   help="score again even where RUN/eval/ holds scores of the same checkpoint, clips and settings")
    p.add_argument("--out", metavar="DIR",
                   help="write the evaluation's outputs to DIR (local or s3://) instead of RUN/eval/, in the same "
                        "layout (with --fuse, RUN2's own in DIR/fuse_run/ instead of RUN2/eval/), e.g. for a run "
                        "you cannot write to; scores already in DIR are reused as in RUN/eval/. Every output "
                        "folder is checked writable before any scoring")
    p.add_argument("--require-complete", action="store_true",
                   help="FineGym's strict protocol: refuse (exit 2, naming how many and why) to score a split in "
                        "which some labelled keys have no clip, instead of scoring the clips that exist")
    p.add_argument("--fuse", metavar="URI", help="a second run (or checkpoint) to fuse with (e.g. the flow run of an "
                                                 "RGB run); its task, split and classes must be the run's")
    p.add_argument("--fuse-weights", type=_fuse_weights, metavar="W_RUN,W_FUSE",
                   help="weights of the --run and --fuse scores in their weighted mean (default: TSN's, RGB 1 and "
                        "flow 1.5 by each run's modality); recorded in the fusion's metrics.json")
    p.add_argument("--segments", type=int, metavar="N",
                   help="test with N segments (default: as trained), sampler and model alike, e.g. 3 to 12 for a "
                        "model trained with 3. TSN and TSM take any N; TRN and TRN-multiscale (relation weights "
                        "sized for the trained count) and I3D/NL-I3D (segments = its clip's frames) only their own")
    p.add_argument("--shuffle-frames", action="store_true",
                   help="shuffle the order of each clip's segments (I3D: frames) before the model sees them, "
                        "the same order in all views of a clip: how much the model relies on temporal order")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the --shuffle-frames orders (default 0); each clip's order follows from it and "
                        "the clip's key, so reruns repeat it")
    p.add_argument("--workers", type=int, default=1, help="scoring actors (default 1; one GPU each if present)")
    p.add_argument("--cpus-per-worker", type=int, default=1, help="CPUs (torch threads) per scoring actor")
    p.add_argument("--smoke-test", action="store_true",
                   help="train one epoch of a tiny model on a tiny generated SynGym, then evaluate it")
    add_ray_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.evaluate import format_results, plan_evaluation, run_evaluation

    # Checked before Ray starts: a count below 1 would otherwise fail inside Ray.
    for option, value in (("--workers", args.workers), ("--cpus-per-worker", args.cpus_per_worker),
                          ("--segments", args.segments)):
        if value is not None and value < 1:
            raise InputError(f"evaluate {option} must be >= 1, got {value}")
    say = printer("evaluate")
    options = dict(fuse=args.fuse, fuse_weights=args.fuse_weights, segments=args.segments,
                   shuffle_frames=args.shuffle_frames, seed=args.seed, checkpoint=args.checkpoint, data=args.data,
                   rescore=args.rescore, out=args.out, require_complete=args.require_complete, say=say)
    if not args.smoke_test:
        if not args.run:
            raise InputError("evaluate needs --run (or --smoke-test)")
        # Before Ray starts: a run that is not there, a model that cannot take other
        # segments (TRN, I3D), clips that lack what the run reads, outputs that cannot be
        # written, a state.pt that would run code: each one line, and no Ray work.
        plan = plan_evaluation(args.run, **options)
    connect.init_ray(args.address)
    if args.smoke_test:
        plan = plan_evaluation(smoke.trained_run()[0], **options)
    results = run_evaluation(plan, workers=args.workers, cpus_per_worker=args.cpus_per_worker, say=say)
    print(format_results(results))
    return 0
