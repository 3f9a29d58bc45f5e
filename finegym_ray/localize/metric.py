"""Temporal detection mAP as ActivityNet's detection evaluation computes it.

Ground truth: ``{video_id: [(label, start_s, end_s), ...]}``; detections:
``{video_id: [(label, start_s, end_s, score), ...]}``. Times are seconds (any unit
works as long as both sides share it).

Per class and per tIoU threshold:
1. the class's detections are sorted by descending score. The sort is stable: tied
   scores keep the order in which the detections were given (videos in the mapping's
   iteration order, then each video's list order), so results never depend on the
   sorting algorithm (ActivityNet's ``argsort()[::-1]`` puts ties in reverse);
2. each detection, in that order, is matched to the not yet matched ground truth
   segment of its class and video with the highest tIoU (ties: the segment listed
   first). It is a true positive if that tIoU reaches the threshold (>=) and then
   locks the segment; otherwise a false positive. A detection in a video without
   ground truth of its class is a false positive, and so is a second detection of an
   already matched segment (a duplicate) unless another segment is left for it;
3. AP is the all-point interpolated area under the precision-recall curve: precision
   is first made monotone (each point takes the highest precision at any recall to
   its right), then summed over the recall steps.

mAP is the mean AP over the classes that have ground truth; a class with ground truth
and no detections has AP 0. Detections of labels that have no ground truth anywhere
do not count towards the mean (ActivityNet takes its classes from the ground truth):
they are reported in ``MapResult.ignored``. The average mAP is the mean over the
thresholds (0.50:0.05:0.95 by default).

Pure numpy: no Ray, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError

# 0.50, 0.55, ..., 0.95 (rounded so that 0.7 prints and compares as 0.7, not 0.7000000000000001).
TIOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
# The columns of the FineGym paper's Table 4.
TABLE4_COLUMNS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)

GroundTruth = Mapping[str, Sequence[tuple[str, float, float]]]
Detections = Mapping[str, Sequence[tuple[str, float, float, float]]]


@dataclass
class MapResult:
    """mAP per threshold (fractions in [0, 1], not percent).

    ``per_class`` holds the AP per threshold of every class that has ground truth;
    ``ignored`` counts the detections of labels without ground truth (left out).
    """

    thresholds: list[float]
    map: list[float]
    average_map: float
    per_class: dict[str, list[float]]
    ignored: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"tiou_thresholds", "map", "average_map", "per_class"}``: plain floats, JSON-ready."""
        return {
            "tiou_thresholds": [float(t) for t in self.thresholds],
            "map": [float(m) for m in self.map],
            "average_map": float(self.average_map),
            "per_class": {k: [float(a) for a in v] for k, v in self.per_class.items()},
        }


def finite_number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def check_segment(start: Any, end: Any, where: str) -> tuple[float, float]:
    """``(start, end)`` as floats; raises ValueError naming ``where`` (e.g. ``video 'v'
    detection 3``) for a non-number, a non-finite value, or a segment of zero length or
    inverted (end <= start)."""
    s, e = finite_number(start), finite_number(end)
    if s is None or e is None:
        raise InputError(f"{where}: segment [{start!r}, {end!r}] must be two finite numbers (seconds)")
    if e == s:
        raise InputError(f"{where}: segment [{s}, {e}] has zero length")
    if e < s:
        raise InputError(f"{where}: segment [{s}, {e}] is inverted (end before start)")
    return s, e


def _check_label(label: Any, where: str) -> str:
    if not isinstance(label, str) or not label:
        raise InputError(f"{where}: label must be a non-empty string, got {label!r}")
    return label


def _check_thresholds(thresholds: Sequence[float]) -> list[float]:
    out = [finite_number(t) for t in thresholds]
    if not out or any(t is None or not 0.0 < t <= 1.0 for t in out):
        raise InputError(f"tIoU thresholds must be numbers in (0, 1], got {list(thresholds)!r}")
    return out  # type: ignore[return-value]


def segment_iou(start: float, end: float, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """tIoU of one segment against many: intersection / union of the intervals (seconds)."""
    inter = np.clip(np.minimum(end, ends) - np.maximum(start, starts), 0.0, None)
    union = (end - start) + (ends - starts) - inter
    return inter / union


def interpolated_ap(tp: np.ndarray, num_gt: int) -> float:
    """All-point interpolated AP of a ranked list: ``tp`` (bool, best first), ``num_gt`` > 0.

    Precision at rank k is TP(k) / k, recall TP(k) / num_gt. The envelope makes precision
    non-increasing in recall; AP = sum over the ranks where recall rises of
    (rise in recall) x (envelope precision there).
    """
    if tp.size == 0:
        return 0.0
    tp_cum = np.cumsum(tp, dtype=np.float64)
    precision = tp_cum / np.arange(1, tp.size + 1)
    recall = tp_cum / num_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    rises = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(rises * envelope))


def _match(order_videos: list[str], order_segs: np.ndarray, gt: dict[str, np.ndarray],
           thresholds: np.ndarray) -> np.ndarray:
    """TP flags (detections x thresholds) for one class's detections in ranked order.

    Matching in one video depends only on that video's detections, in ranked order, so
    each video is done on its own, with its tIoU matrix computed at once.
    """
    tp = np.zeros((len(order_videos), thresholds.size), dtype=bool)
    rows_by_video: dict[str, list[int]] = {}
    for i, vid in enumerate(order_videos):
        if vid in gt:  # else no ground truth of this class in the video: a false positive
            rows_by_video.setdefault(vid, []).append(i)
    lowest = thresholds.min()
    every = np.arange(thresholds.size)
    for vid, rows in rows_by_video.items():
        segs = gt[vid]
        det = order_segs[rows]
        inter = np.clip(np.minimum(det[:, 1, None], segs[None, :, 1]) - np.maximum(det[:, 0, None], segs[None, :, 0]),
                        0.0, None)
        iou = inter / ((det[:, 1] - det[:, 0])[:, None] + (segs[:, 1] - segs[:, 0])[None, :] - inter)
        locked = np.zeros((thresholds.size, segs.shape[0]), dtype=bool)
        # A detection below every threshold with every segment is a FP and locks nothing.
        for k in np.flatnonzero(iou.max(axis=1) >= lowest):
            # Per threshold: the unlocked segment of highest tIoU among those reaching it
            # (argmax takes the first of equals: the segment listed first).
            free = (iou[k][None, :] >= thresholds[:, None]) & ~locked
            best = np.argmax(np.where(free, iou[k][None, :], -1.0), axis=1)
            hit = free[every, best]
            locked[every[hit], best[hit]] = True
            tp[rows[k]] = hit
    return tp


def detection_map(ground_truth: GroundTruth, detections: Detections,
                  thresholds: Sequence[float] = TIOU_THRESHOLDS) -> MapResult:
    """mAP of ``detections`` against ``ground_truth`` at each tIoU threshold (see the
    module docstring for the exact rules).

    Raises ValueError naming the video and entry for a bad segment (zero length,
    inverted, not finite), label or score, and when the ground truth holds no segment.
    """
    thr = np.asarray(_check_thresholds(thresholds), dtype=np.float64)

    gt_lists: dict[str, dict[str, list[tuple[float, float]]]] = {}  # label -> video -> segments
    for vid, entries in ground_truth.items():
        for j, entry in enumerate(entries):
            where = f"ground truth: video {vid!r} entry {j}"
            if len(entry) != 3:
                raise InputError(f"{where}: expected (label, start, end), got {entry!r}")
            label = _check_label(entry[0], where)
            gt_lists.setdefault(label, {}).setdefault(vid, []).append(check_segment(entry[1], entry[2], where))
    if not gt_lists:
        raise InputError("the ground truth holds no segment: there is nothing to score")
    gt = {label: {vid: np.asarray(segs, dtype=np.float64) for vid, segs in by_video.items()}
          for label, by_video in gt_lists.items()}

    dets: dict[str, tuple[list[str], list[tuple[float, float]], list[float]]] = {}
    ignored: dict[str, int] = {}
    for vid, entries in detections.items():
        for j, entry in enumerate(entries):
            where = f"detections: video {vid!r} entry {j}"
            if len(entry) != 4:
                raise InputError(f"{where}: expected (label, start, end, score), got {entry!r}")
            label = _check_label(entry[0], where)
            seg = check_segment(entry[1], entry[2], where)
            score = finite_number(entry[3])
            if score is None:
                raise InputError(f"{where}: score must be a finite number, got {entry[3]!r}")
            if label not in gt:
                ignored[label] = ignored.get(label, 0) + 1
                continue
            videos, segs, scores = dets.setdefault(label, ([], [], []))
            videos.append(vid)
            segs.append(seg)
            scores.append(score)

    per_class: dict[str, list[float]] = {}
    for label in sorted(gt):
        num_gt = sum(s.shape[0] for s in gt[label].values())
        if label not in dets:
            per_class[label] = [0.0] * thr.size
            continue
        videos, segs, scores = dets[label]
        order = np.argsort(-np.asarray(scores), kind="stable")
        tp = _match([videos[i] for i in order], np.asarray(segs, dtype=np.float64)[order], gt[label], thr)
        per_class[label] = [interpolated_ap(tp[:, t], num_gt) for t in range(thr.size)]

    maps = [float(np.mean([aps[t] for aps in per_class.values()])) for t in range(thr.size)]
    return MapResult(thresholds=[float(t) for t in thr], map=maps, average_map=float(np.mean(maps)),
                     per_class=per_class, ignored=dict(sorted(ignored.items())))


def class_agnostic(entries: Mapping[str, Sequence[tuple]], label: str = "action") -> dict[str, list[tuple]]:
    """The same ground truth or detections with every label replaced by ``label``
    (class-agnostic scoring: only the segments count)."""
    return {vid: [(label, *e[1:]) for e in rows] for vid, rows in entries.items()}


def table4(result: MapResult, *, per_class: bool = False) -> str:
    """The FineGym paper's Table 4 layout: mAP in percent at tIoU 0.50 0.60 0.70 0.80
    0.90 and the average over all thresholds ("Avg"). Thresholds missing from the result
    are left out; with none of those columns, every threshold is shown. ``per_class``
    adds one row of AP per class below."""
    cols = [i for i, t in enumerate(result.thresholds) if any(abs(t - c) < 1e-9 for c in TABLE4_COLUMNS)]
    cols = cols or list(range(len(result.thresholds)))
    rows = [("mAP", result.map, result.average_map)]
    if per_class:
        rows += [(label, aps, float(np.mean(aps))) for label, aps in result.per_class.items()]
    width = max(len("tIoU"), *(len(name) for name, _, _ in rows))
    head = f"{'tIoU':<{width}}" + "".join(f"{result.thresholds[i]:>7.2f}" for i in cols) + f"{'Avg':>7}"
    lines = [head]
    for k, (name, values, avg) in enumerate(rows):
        if per_class and k == 1:
            lines.append(f"{'AP per class':<{width}}")
        lines.append(f"{name:<{width}}" + "".join(f"{100 * values[i]:>7.1f}" for i in cols) + f"{100 * avg:>7.1f}")
    return "\n".join(lines)
