"""The bodies of ``finegym-ray localize train|evaluate`` (cli.py holds the parser lines)."""

from __future__ import annotations

import argparse
import tempfile
import time

from ..config import load_config, to_yaml
from .config import LocalizeConfig

# --smoke-test: a tiny detector for a few epochs on toy feature sequences (localize/toy.py).
SMOKE = ["epochs=3", "batch_size=4", "warmup_epochs=0", "lr=0.003",
         "detector_kwargs={embed_dim: 32, head_dim: 32, num_levels: 4}"]


def _say(message: str) -> None:
    print(f"[localize] {message}", flush=True)


def localize_config(args: argparse.Namespace) -> LocalizeConfig:
    """The config of ``args``: --config YAML, then --set overrides (the smoke test's first)."""
    overrides = (SMOKE if args.smoke_test else []) + list(args.overrides)
    config = load_config(LocalizeConfig, args.config, overrides)
    if args.smoke_test:
        from dataclasses import replace

        from .toy import write_toy_features

        folder = tempfile.mkdtemp(prefix="finegym_localize_smoke_")
        gt = write_toy_features(f"{folder}/features", videos=8, level=config.level)
        config = replace(config, features=f"{folder}/features", annotations=gt, runs=f"{folder}/runs")
    elif not args.config and not args.overrides:
        raise ValueError("localize needs --config YAML (see configs/localize/) or --set KEY=VALUE settings, "
                         "or --smoke-test")
    return config


def train_command(args: argparse.Namespace, init_ray) -> int:
    """``localize train``: settings, data checked before Ray starts, train, the table."""
    from .train import format_history, prepare, run_localize_training

    config = localize_config(args)
    _say(f"settings:\n{to_yaml(config)}")
    prepare(config, say=lambda _m: None)  # bad data or settings: refused before Ray starts
    init_ray(args.address)
    result = run_localize_training(config, break_lease=args.break_lease, say=_say)
    print(format_history(result["history"]))
    print(f"run:        {result['run']}\ncheckpoint: {result['checkpoint']}\nconfig:     {result['run']}/config.yaml")
    return 0


def evaluate_command(args: argparse.Namespace, init_ray) -> int:
    """``localize evaluate``: the newest checkpoint of the config's run on its val split
    (``--smoke-test``: trains the toy run first)."""
    from .evaluate import evaluate_run, format_results

    config = localize_config(args)
    if args.smoke_test:
        from .train import run_localize_training

        init_ray(args.address)
        run_localize_training(config, say=_say)
    print(format_results(evaluate_run(config, say=_say)))
    return 0


def demo_command(args: argparse.Namespace, init_ray) -> int:
    """``localize demo``: both levels on the main demo's SynGym and run (localize/demo.py)."""
    from .demo import LEVELS, check_demo_inputs, run_localize_demo
    from .evaluate import format_results

    out = args.out or "finegym_demo"
    check_demo_inputs(out)  # before Ray starts
    init_ray(args.address)
    t0 = time.time()
    done = run_localize_demo(out, levels=(args.level,) if args.level else LEVELS, overrides=list(args.overrides),
                             say=lambda m: print(m, flush=True))
    for level, d in done.items():
        seconds = ", ".join(f"{k} {v:.1f} s" for k, v in d["seconds"].items())
        print(f"\n{format_results(d['results'])}\n({seconds})")
    print(f"\nlocalization demo finished in {time.time() - t0:.1f} s")
    return 0
