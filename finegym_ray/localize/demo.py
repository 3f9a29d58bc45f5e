"""The localization demo on SynGym, both levels: the main demo's recognition run as the
backbone -> extract-features (localize/extract.py) -> localize train -> evaluate.

It follows ``finegym-ray demo`` (which makes OUT/syngym and the run RUNS/tsm_flow_set)
and writes the features beside it, under OUT/localize/features/ (both levels), and its
runs beside the backbone, RUNS/<name>/ (checkpoints, eval/); RUNS is the detector
config's ``runs`` (default ./finegym_runs). Running it again skips complete feature
files and resumes or reuses the runs. Settings:
configs/localize/extract_syngym_{action,subaction}.yaml and
configs/localize/syngym_{action,subaction}.yaml (their paths replaced by those under OUT).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace

from .. import presets, storage
from ..config import apply_overrides, load_config
from ..errors import InputError
from ..store import ERRORS
from .config import LocalizeConfig

LEVELS = ("action", "subaction")
BACKBONE_RUN = "tsm_flow_set"


def demo_paths(out: str) -> dict[str, str]:
    """Where the demo reads and writes its data, under the main demo's ``out``."""
    out = os.path.abspath(out)
    return {"annotations": os.path.join(out, "syngym", "annotations"), "videos": os.path.join(out, "syngym", "videos"),
            "features": os.path.join(out, "localize", "features")}


def localize_config(out: str, level: str, overrides: list[str] = ()) -> LocalizeConfig:
    """The demo's LocalizeConfig of ``level`` (``overrides`` on top)."""
    paths = demo_paths(out)
    preset = presets.load(LocalizeConfig, f"localize/syngym_{level}.yaml")
    base = replace(preset, features=paths["features"], annotations=paths["annotations"])
    return apply_overrides(base, list(overrides))


def backbone_run(runs: str) -> str:
    """The main demo's recognition run, in the runs folder ``runs``."""
    return storage.join(runs, BACKBONE_RUN)


def check_demo_inputs(out: str, runs: str) -> None:
    """Refuse (ValueError, one line) when the main demo's outputs are not there: its
    SynGym under ``out`` and its run in ``runs``."""
    from ..train import checkpoint as checkpoints

    if not os.path.isdir(demo_paths(out)["videos"]) or checkpoints.find_latest(backbone_run(runs)) is None:
        raise InputError(f"{out}: no SynGym videos there, or no trained {BACKBONE_RUN} run in {runs}: run "
                         f"'finegym-ray demo --out {out}' first (the localization demo uses its data and run)")


def run_localize_demo(out: str, *, levels: tuple[str, ...] = LEVELS, overrides: list[str] = (),
                      say: Callable[[str], None] = print) -> dict:
    """Extract, train and evaluate each level on the Ray cluster this process is
    connected to. Returns per level the evaluation (evaluate_run's) and the seconds of
    each stage."""
    from .config import ExtractConfig
    from .evaluate import evaluate_run
    from .extract import run_extract
    from .train import run_localize_training

    paths = demo_paths(out)
    done = {}
    for level in levels:
        config = localize_config(out, level, list(overrides))
        check_demo_inputs(out, config.runs)
        t0 = time.time()
        extract = load_config(ExtractConfig, presets.path(f"localize/extract_syngym_{level}.yaml"))
        summary = run_extract(extract, backbone_run(config.runs), paths["videos"], paths["annotations"],
                              paths["features"], say=lambda m: say(f"[extract] {m}"))
        if summary["items"].get("failed"):
            raise RuntimeError(f"extraction failed for {summary['items']['failed']} {level} item(s): see "
                               f"{storage.join(paths['features'], ERRORS)}")
        t1 = time.time()
        trained = run_localize_training(config, say=lambda m: say(f"[localize] {m}"))
        t2 = time.time()
        results = evaluate_run(config, say=lambda m: say(f"[evaluate] {m}"))
        t3 = time.time()
        done[level] = {"results": results, "history": trained["history"],
                       "seconds": {"extract": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2}}
        say(f"[demo] {level}: extract {t1 - t0:.1f} s, train {t2 - t1:.1f} s, evaluate {t3 - t2:.1f} s")
    return done
