"""``finegym-ray demo``: every stage on a generated SynGym, with a Ray of its own."""

from __future__ import annotations

import argparse
import os
import time

from ..errors import InputError
from ..progress import TRAIN_SETTINGS_SHOWN
from . import smoke
from .options import add_storage_options, printer, runs_hint
from .synth import add_synth_options, synth_config


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run every stage on a generated synthetic dataset with a Ray of its own",
        description="Generate the SynGym synthetic dataset (videos rendered in parallel on Ray), preprocess "
                    "it on Ray Data (manifest, clip shards with optical flow), train a small TSM on Ray Train "
                    "(set task, 15 classes), evaluate it and print the metrics table and where everything "
                    "went. Reuses an existing synthetic dataset made with the same settings, skips clips "
                    "already cut and resumes a finished or interrupted training run.")
    p.add_argument("--smoke-test", action="store_true",
                   help="a tiny version: 2 small videos, 64-pixel clips, one epoch of a tiny model")
    p.add_argument("--train-set", dest="train_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one training setting of the demo (configs/tsm_flow_demo.yaml), e.g. epochs=3")
    p.add_argument("--preprocess-set", dest="preprocess_overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one preprocessing setting of the demo (short_side=128; the keys of "
                        "'finegym-ray preprocess --help'), e.g. flow=farneback; a change re-cuts the demo's clips")
    p.add_argument("--no-train", action="store_true", help="stop after preprocessing")
    p.add_argument("--out", default="finegym_demo",
                   help="working folder for the synthetic data (default ./finegym_demo)")
    p.add_argument("--store", help="object storage root for the demo's data (manifest, clips), a folder or "
                                   "s3://bucket/prefix (default OUT/store)")
    p.add_argument("--runs", metavar="URI",
                   help="folder or s3:// prefix for the demo's training run (default ./finegym_runs, where "
                        "'finegym-ray runs', 'evaluate' and 'train' look; on a cluster of several nodes give "
                        "storage every node reaches, e.g. s3://)")
    p.add_argument("--address", help="Ray cluster to join (default: $RAY_ADDRESS, which a submitted job has, else "
                                     "a new local Ray for this command, even where `ray start` left a cluster "
                                     "running); it says which")
    p.add_argument("--break-lease", action="store_true",
                   help="one demo works in OUT and its store at a time (their lease.json names it); remove the "
                        "leases of a demo that is gone (that of a killed demo is taken over without it)")
    add_synth_options(p, default_preset="demo")
    add_storage_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import ray

    from .. import storage
    from ..config import apply_overrides
    from ..demo import MARKER, claim_store, connect_ray, holding_demo_folders, run_demo
    from ..preprocess.config import PreprocessConfig
    from ..progress import settings_line
    from ..train.config import DEMO
    from ..train.evaluate import format_results

    t_start = time.monotonic()  # the command's wall time: Ray's start and the checks count too
    _refuse_stage_keys_in_set(args.overrides)
    # SynGym's demo preset is 320x180: clips cut at a 128-pixel short side.
    preprocess = PreprocessConfig(short_side=128)
    train = apply_overrides(DEMO, args.train_overrides)
    if args.smoke_test:
        args.overrides = smoke.SYNTH + list(args.overrides)
        preprocess = apply_overrides(PreprocessConfig(), smoke.PREPROCESS)
        train = apply_overrides(DEMO, smoke.train_settings(args.train_overrides) + list(args.train_overrides))
    preprocess = apply_overrides(preprocess, args.preprocess_overrides)
    synth = synth_config(args)
    store = args.store or os.path.join(args.out, "store")
    train = replace(train, data=store, runs=args.runs or train.runs)  # what claim_store sets

    # Held from before the demo replaces outdated outputs until its last write.
    with holding_demo_folders(args.out, store, break_lease=args.break_lease, say=printer("demo")):
        plan = claim_store(args.out, synth, args.store, preprocess, None if args.no_train else train,
                           runs=train.runs)
        print(f"[demo] synth {settings_line(synth, ('videos', 'width', 'height', 'seed'))}; preprocess "
              f"{settings_line(preprocess, ('short_side', 'flow.method'))}"
              + ("" if args.no_train else f"; train {settings_line(train, TRAIN_SETTINGS_SHOWN)}")
              + f"; all settings in {storage.join(store, MARKER)}", flush=True)
        connect_ray(args.address)
        try:
            done = run_demo(plan)
        finally:
            ray.shutdown()  # before the summary, so that no worker output lands inside it
    if done["results"] is not None:
        print(f"\n{format_results(done['results'])}")
    print(f"\ndemo finished in {time.monotonic() - t_start:.1f} s. Outputs:")
    for name, loc in done["outputs"].items():
        print(f"  {name + ':':<13}{loc}")
    if done["results"] is not None:
        print(runs_hint(train.runs))
    return 0


def _refuse_stage_keys_in_set(overrides: list[str]) -> None:
    """InputError naming the flag a training or preprocessing setting given to ``--set``
    (the synthetic data's settings) belongs to."""
    import dataclasses

    from ..preprocess.config import PreprocessConfig
    from ..synth.config import SynthConfig
    from ..train.config import TrainConfig

    synth = {f.name for f in dataclasses.fields(SynthConfig)}
    for item in overrides:
        key = item.partition("=")[0].split(".")[0]
        if key in synth:
            continue
        for flag, cls in (("--train-set", TrainConfig), ("--preprocess-set", PreprocessConfig)):
            if key in {f.name for f in dataclasses.fields(cls)}:
                raise InputError(f"--set {item}: {key!r} is not a synthetic-data setting but a "
                                 f"{'training' if cls is TrainConfig else 'preprocessing'} one: {flag} {item}")
