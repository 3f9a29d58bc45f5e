"""The localization demo on SynGym, both levels: the main demo's recognition run as the
backbone -> extract-features (localize/extract.py) -> localize train -> evaluate.

It follows ``finegym-ray demo`` (which makes OUT/syngym and the run OUT/store/runs/
tsm_flow_set) and writes beside it, under OUT/localize/: features/ (both levels) and
runs/<name>/ (checkpoints, eval/). Running it again skips complete feature files and
resumes or reuses the runs. Settings: ``EXTRACT`` and ``LOCALIZE`` below, the same values
as configs/localize/extract_syngym_{action,subaction}.yaml and
configs/localize/syngym_{action,subaction}.yaml
(tests/localize/test_demo_presets.py checks that they agree).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .. import storage
from ..config import apply_overrides
from ..errors import InputError
from .config import LocalizeConfig

# Extraction per level. Whole videos at 8 frames/s: a snippet of 8 sampled frames (1 s)
# every 4 (0.5 s); routines at 12.5 frames/s, a 0.64 s snippet every 0.32 s, since
# sub-actions last 1 to 3 s.
EXTRACT = {"action": ["snippet_frames=8", "stride_frames=4", "fps=8", "elements=false", "batch_size=32"],
           "subaction": ["snippet_frames=8", "stride_frames=4", "fps=12.5", "elements=false", "batch_size=32"]}

# Detector training per level: a small pyramid on the backbone's features (128 for the
# demo's ResNet-10 at width 16), AdamW, 40 epochs (an epoch is a few dozen sequences).
LOCALIZE = {
    "action": ["level=action", "task=classes", "epochs=40", "batch_size=4", "lr=0.002", "warmup_epochs=2",
               "weight_decay=0.05", "detector_kwargs={embed_dim: 64, head_dim: 64, num_levels: 6}",
               "max_detections=20", "name=syngym_action"],
    "subaction": ["level=subaction", "task=classes", "epochs=40", "batch_size=4", "lr=0.002", "warmup_epochs=2",
                  "weight_decay=0.05", "detector_kwargs={embed_dim: 64, head_dim: 64, num_levels: 5}",
                  "max_detections=50", "name=syngym_subaction"],
}
LEVELS = ("action", "subaction")
BACKBONE_RUN = "tsm_flow_set"


def demo_paths(out: str) -> dict[str, str]:
    """Where the demo reads and writes, under the main demo's ``out``."""
    out = os.path.abspath(out)
    return {"annotations": os.path.join(out, "syngym", "annotations"), "videos": os.path.join(out, "syngym", "videos"),
            "backbone": os.path.join(out, "store", "runs", BACKBONE_RUN),
            "features": os.path.join(out, "localize", "features"), "runs": os.path.join(out, "localize", "runs")}


def localize_config(out: str, level: str, overrides: list[str] = ()) -> LocalizeConfig:
    """The demo's LocalizeConfig of ``level`` (``overrides`` on top)."""
    paths = demo_paths(out)
    base = LocalizeConfig(features=paths["features"], annotations=paths["annotations"], runs=paths["runs"])
    return apply_overrides(base, [*LOCALIZE[level], *overrides])


def check_demo_inputs(out: str) -> None:
    """Refuse (ValueError, one line) when the main demo's outputs are not there."""
    from ..train import checkpoint as checkpoints

    paths = demo_paths(out)
    if not os.path.isdir(paths["videos"]) or checkpoints.find_latest(paths["backbone"]) is None:
        raise InputError(f"{out}: no SynGym videos or no trained {BACKBONE_RUN} run there: run "
                         f"'finegym-ray demo --out {out}' first (the localization demo uses its data and run)")


def run_localize_demo(out: str, *, levels: tuple[str, ...] = LEVELS, overrides: list[str] = (),
                      say: Callable[[str], None] = print) -> dict:
    """Extract, train and evaluate each level on the Ray cluster this process is
    connected to. Returns per level the evaluation (evaluate_run's) and the seconds of
    each stage."""
    from .evaluate import evaluate_run
    from .extract import ExtractConfig, run_extract
    from .train import run_localize_training

    check_demo_inputs(out)
    paths = demo_paths(out)
    done = {}
    for level in levels:
        t0 = time.time()
        extract = apply_overrides(ExtractConfig(level=level), EXTRACT[level])
        summary = run_extract(extract, paths["backbone"], paths["videos"], paths["annotations"], paths["features"],
                              say=lambda m: say(f"[extract] {m}"))
        if summary["items"].get("failed"):
            raise RuntimeError(f"extraction failed for {summary['items']['failed']} {level} item(s): see "
                               f"{storage.join(paths['features'], 'errors')}")
        t1 = time.time()
        config = localize_config(out, level, list(overrides))
        trained = run_localize_training(config, say=lambda m: say(f"[localize] {m}"))
        t2 = time.time()
        results = evaluate_run(config, say=lambda m: say(f"[evaluate] {m}"))
        t3 = time.time()
        done[level] = {"results": results, "history": trained["history"],
                       "seconds": {"extract": t1 - t0, "train": t2 - t1, "evaluate": t3 - t2}}
        say(f"[demo] {level}: extract {t1 - t0:.1f} s, train {t2 - t1:.1f} s, evaluate {t3 - t2:.1f} s")
    return done
