"""The localization demo on SynGym, both levels: videos of its own (the synth preset
"localize": 64 videos, 16 of them to validate on) -> features from the main demo's
recognition run (localize/extract.py) -> localize train -> evaluate.

It follows ``finegym-ray demo`` (which trains the run RUNS/tsm_flow_set) and writes under
OUT/localize/: syngym/ (the videos and their annotations) and features/ (both levels);
its runs go beside the backbone, RUNS/<name>/ (checkpoints, eval/); RUNS is the detector
config's ``runs`` (default ./finegym_runs). Running it again reuses the videos, skips
complete feature files and resumes or reuses the runs. Settings:
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
SYNTH_PRESET = "localize"


def demo_paths(out: str) -> dict[str, str]:
    """Where the demo writes its data: under ``out`` (the main demo's folder)/localize."""
    base = os.path.join(os.path.abspath(out), "localize")
    return {"folder": base, "syngym": os.path.join(base, "syngym"),
            "annotations": os.path.join(base, "syngym", "annotations"),
            "videos": os.path.join(base, "syngym", "videos"), "features": os.path.join(base, "features")}


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
    """Refuse (InputError, one line) when the main demo's run is not in ``runs``."""
    from ..train import checkpoint as checkpoints

    if checkpoints.find_latest(backbone_run(runs)) is None:
        raise InputError(f"no trained {BACKBONE_RUN} run in {runs}: run 'finegym-ray demo --out {out}' first (the "
                         f"localization demo extracts its features with that run)")


def run_localize_demo(out: str, *, levels: tuple[str, ...] = LEVELS, overrides: list[str] = (),
                      break_lease: bool = False, say: Callable[[str], None] = print) -> dict:
    """Make the videos, then extract, train and evaluate each level on the Ray cluster
    this process is connected to, holding the lease of ``out``/localize. Returns per
    level the evaluation (evaluate_run's), the training history, the training budget in
    ``iterations`` (optimizer steps) and the seconds of each stage."""
    from ..demo import make_syngym
    from ..lease import writer_lease
    from ..synth.config import preset
    from .config import ExtractConfig
    from .evaluate import evaluate_run
    from .extract import run_extract
    from .train import run_localize_training

    paths = demo_paths(out)
    done = {}
    with writer_lease(paths["folder"], what="localize demo", break_lease=break_lease, say=say):
        make_syngym(paths["syngym"], preset(SYNTH_PRESET), say=lambda m: say(f"[synth] {m}"))
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
            iterations = sum(row.get("iterations", 0) for row in trained["history"])
            done[level] = {"results": results, "history": trained["history"], "iterations": iterations,
                           "seconds": {"extract": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2}}
            say(f"[demo] {level}: extract {t1 - t0:.1f} s, train {t2 - t1:.1f} s ({len(trained['history'])} "
                f"epochs, {iterations} iterations of {config.batch_size} sequences), evaluate {t3 - t2:.1f} s")
    return done
