"""``finegym-ray score-detections``: score any system's detections (ActivityNet results
JSON) against ground truth, printing the FineGym paper's Table 4 layout or JSON.

Runs in one process: no Ray, no torch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from .metric import MapResult

# The metric and readers (numpy, storage) are imported when the command runs: the CLI
# imports this module for FORMATS_HELP whenever it builds its parser.

FORMATS_HELP = """\
formats:
  detections (ActivityNet results):
    {"results": {"VIDEO_ID": [{"label": "FX", "segment": [START_S, END_S], "score": 0.9}, ...]}}
  ground truth, one of:
    ActivityNet: {"database": {"VIDEO_ID": {"annotations": [{"segment": [START_S, END_S], "label": "FX"}]}}}
    FineGym's annotation JSON (finegym_annotation_info_v1.1.json), or its folder with the
      category and split files (what 'finegym-ray manifest' reads):
      --level action: routines in whole videos (VIDEO_ID = YouTube id, absolute seconds,
        labels VT FX BB UB event_5..event_10);
      --level subaction: sub-actions inside routines (VIDEO_ID = the routine's key
        <youtube id>_E_XXXXXX_YYYYYY, seconds relative to the routine start as FineGym
        stores them), labelled by set name (FX_leap_jump_hop, ...) from the folder's split
        files; from the bare JSON (no labels there) scored class-agnostic.
mAP follows ActivityNet's detection evaluation at tIoU 0.50:0.05:0.95: per class,
detections by descending score (ties keep file order), each matched to the unmatched
ground truth of highest tIoU in its video; all-point interpolated AP; mean over the
classes with ground truth (detections of other labels are ignored and counted).
--json prints {"tiou_thresholds": [...], "map": [...], "average_map": x, "per_class": {...}}."""


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


@dataclass
class Scored:
    """What the command reports: the metric, counts of what was scored, notes for the user."""

    result: MapResult
    ground_truth_segments: int
    detections: int
    notes: list[str]


def score_detections(ground_truth: str, detections: str, *, level: str = "action", subset: str | None = None,
                     agnostic: bool = False) -> Scored:
    """Read both files and score them. ``agnostic`` ignores every label (segments only).
    Raises FormatError naming the file and entry for a bad file."""
    from .formats import AGNOSTIC_LABEL, load_ground_truth, read_detections
    from .metric import TIOU_THRESHOLDS, class_agnostic, detection_map

    loaded = load_ground_truth(ground_truth, level=level, subset=subset)
    dets = read_detections(detections)
    notes = list(loaded.notes)
    gt = loaded.segments
    if agnostic or loaded.class_agnostic:
        label = AGNOSTIC_LABEL if loaded.class_agnostic else "action"
        gt, dets = class_agnostic(gt, label), class_agnostic(dets, label)
    if not any(gt.values()):
        raise InputError(f"{ground_truth}: no ground-truth segment at level {level!r}: there is nothing to score")
    result = detection_map(gt, dets, TIOU_THRESHOLDS)
    if result.ignored:
        n = sum(result.ignored.values())
        shown = ", ".join(f"{k} ({v})" for k, v in list(result.ignored.items())[:10])
        notes.append(f"{_count(n, 'detection')} of labels without ground truth ignored: {shown}"
                     + (" ..." if len(result.ignored) > 10 else ""))
    return Scored(result, sum(len(v) for v in gt.values()), sum(len(v) for v in dets.values()), notes)


def run(ground_truth: str, detections: str, *, level: str = "action", subset: str | None = None,
        agnostic: bool = False, as_json: bool = False, say: Callable[[str], None] = print) -> int:
    """The command: prints the Table 4 layout with AP per class (or, ``as_json``, the
    metric's JSON alone); returns the exit code 0."""
    scored = score_detections(ground_truth, detections, level=level, subset=subset, agnostic=agnostic)
    from .metric import table4

    if as_json:
        say(json.dumps(scored.result.to_json()))
        return 0
    r = scored.result
    say(f"{_count(scored.detections, 'detection')} in {detections} against "
        f"{_count(scored.ground_truth_segments, 'ground-truth segment')} of "
        f"{_count(len(r.per_class), 'class', 'classes')} in {ground_truth} (level {level})")
    say(f"in percent: mAP and AP per class at tIoU; Avg over the {len(r.thresholds)} thresholds "
        f"{r.thresholds[0]:.2f}:0.05:{r.thresholds[-1]:.2f}")
    say(table4(r, per_class=True))
    for note in scored.notes:
        say(f"note: {note}")
    return 0
