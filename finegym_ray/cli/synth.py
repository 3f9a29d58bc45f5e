"""``finegym-ray synth``: generate SynGym, FineGym-format annotations and videos."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from .options import add_overrides


def add_synth_options(p: argparse.ArgumentParser, default_preset: str = "small") -> None:
    """SynGym's settings (``synth`` and ``demo``)."""
    p.add_argument("--preset", default=default_preset,
                   help=f"size preset (default {default_preset}): small (4 videos, ~4 min of 640x360, ~20 s to "
                        "make on 2 cores), demo (16 videos, ~33 min of 320x180, ~540 sub-actions, ~45 s), "
                        "localize (the localization demo's: 64 demo-like videos, seed 1), medium (24 videos, "
                        "~1.8 h), competition (2 videos of ~20 min at 720p, for benchmarks)")
    p.add_argument("--videos", type=int, help="number of competition videos (overrides the preset)")
    p.add_argument("--seed", type=int, help="random seed: the same seed gives the same files (default 0)")
    p.add_argument("--fps", type=float, choices=[25.0, 29.97, 30.0],
                   help="frame rate of every video (default: each video draws one of 25, 29.97, 30)")
    p.add_argument("--config", metavar="YAML", help="synth config file (fields of SynthConfig)")
    add_overrides(p, "override one config field, e.g. --set noise=4 (repeatable)")


def synth_config(args: argparse.Namespace):
    """The SynthConfig of :func:`add_synth_options`' options: the preset, --config, then
    --set and --videos/--seed/--fps."""
    from ..config import load_config
    from ..synth.config import SynthConfig, preset

    overrides = list(args.overrides)
    for name in ("videos", "seed", "fps"):
        if getattr(args, name) is not None:
            overrides.append(f"{name}={getattr(args, name)}")
    return load_config(SynthConfig, args.config, overrides, base=preset(args.preset))


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synth", help="generate SynGym: FineGym-format annotations and H.264 videos",
        description="Write DIR/annotations/ (annotation JSON, set and element categories, train/val splits, "
                    "in FineGym's exact formats) and DIR/videos/<id>.mp4, deterministic per seed.")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_synth_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = synth_config(args)
    from ..synth.generate import generate

    summary = generate(config, args.out, progress=_progress("synth", "videos"))
    print(summary.describe())
    print(f"annotations: {os.path.join(args.out, 'annotations')}")
    print(f"videos:      {os.path.join(args.out, 'videos')}")
    return 0


def _progress(stage: str, unit: str) -> Callable[[int, int], None]:
    import time

    from ..progress import rate_eta

    t0 = time.time()

    def report(done: int, total: int) -> None:
        end = "\n" if done >= total or not sys.stdout.isatty() else "\r"
        print(f"[{stage}] {rate_eta(done, total, time.time() - t0, unit)}", end=end, flush=True)
    return report
