"""The detection mAP, on cases computed by hand (the arithmetic is in the comments).

Notation: P = precision, R = recall at each rank of the score-sorted detections; AP is
the sum over the ranks where R rises of (rise in R) x (the highest P at that rank or
any later one).
"""

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from finegym_ray.localize.metric import (
    TIOU_THRESHOLDS,
    MapResult,
    class_agnostic,
    detection_map,
    interpolated_ap,
    segment_iou,
    table4,
)


def ap_at(result: MapResult, label: str, threshold: float) -> float:
    return result.per_class[label][result.thresholds.index(threshold)]


def test_the_ten_thresholds_are_activitynets():
    assert len(TIOU_THRESHOLDS) == 10
    np.testing.assert_allclose(TIOU_THRESHOLDS, np.linspace(0.5, 0.95, 10), atol=1e-12)
    # Rounded, so that Table 4's columns are found by value and print as 0.70.
    assert TIOU_THRESHOLDS[4] == 0.7 and TIOU_THRESHOLDS[8] == 0.9


def test_each_of_the_ten_thresholds_counts():
    # GT [0, 10], detection [0, 7.5]: tIoU = 7.5 / 10 = 0.75, a TP at 0.50 .. 0.75
    # (6 thresholds, AP 1 each: P = R = 1) and a FP at 0.80 .. 0.95 (AP 0).
    # Average = 6 / 10 = 0.6.
    r = detection_map({"v": [("A", 0, 10)]}, {"v": [("A", 0, 7.5, 0.9)]})
    assert r.thresholds == list(TIOU_THRESHOLDS)
    assert r.map == [1.0] * 6 + [0.0] * 4
    assert r.average_map == pytest.approx(0.6)


def test_a_tiou_equal_to_the_threshold_is_a_true_positive():
    # [0, 7] against [0, 10]: 7 / 10 = 0.7 exactly: a TP at 0.70, a FP at 0.75.
    r = detection_map({"v": [("A", 0, 10)]}, {"v": [("A", 0, 7, 0.9)]})
    assert ap_at(r, "A", 0.7) == 1.0 and ap_at(r, "A", 0.75) == 0.0


def test_duplicate_detection_of_a_matched_segment_is_a_false_positive():
    # GT A: g1 [0, 10], g2 [20, 30]. Ranked: [0, 10] .9 -> TP (locks g1); the same
    # segment again .8 -> tIoU 1 with g1 (taken), 0 with g2 -> FP; [21, 30] .7 ->
    # tIoU 9 / 10 = 0.9 with g2 -> TP at thresholds <= 0.9, FP at 0.95.
    # At <= 0.9: P = 1/1, 1/2, 2/3; R = .5, .5, 1; envelope 1, 2/3, 2/3
    #   AP = .5 x 1 + .5 x 2/3 = 5/6.
    # At 0.95: TP, FP, FP: P = 1, .5, 1/3; R = .5, .5, .5 -> AP = .5 x 1 = 0.5.
    gt = {"v": [("A", 0, 10), ("A", 20, 30)]}
    det = {"v": [("A", 0, 10, 0.9), ("A", 0, 10, 0.8), ("A", 21, 30, 0.7)]}
    r = detection_map(gt, det)
    assert r.per_class["A"][:9] == pytest.approx([5 / 6] * 9)
    assert r.per_class["A"][9] == pytest.approx(0.5)
    assert r.average_map == pytest.approx((9 * 5 / 6 + 0.5) / 10)


def test_a_duplicate_takes_the_next_free_segment_if_it_overlaps_enough():
    # GT A: g1 [0, 10], g2 [2, 12]. d1 [0, 10] .9 -> TP on g1 (tIoU 1).
    # d2 [0, 10] .8: g1 is taken; g2: tIoU 8 / 12 = 0.667 -> TP at 0.50 .. 0.65, FP
    # from 0.70. AP: 1 at the first 4 thresholds (P = 1, 1; R = .5, 1); from 0.70
    # P = 1, .5; R = .5, .5 -> AP .5. Average = (4 x 1 + 6 x .5) / 10 = 0.7.
    gt = {"v": [("A", 0, 10), ("A", 2, 12)]}
    det = {"v": [("A", 0, 10, 0.9), ("A", 0, 10, 0.8)]}
    r = detection_map(gt, det)
    assert r.per_class["A"] == pytest.approx([1.0] * 4 + [0.5] * 6)
    assert r.average_map == pytest.approx(0.7)


def test_a_detection_matches_the_segment_of_highest_tiou_not_the_first():
    # GT A: g1 [0, 10], g2 [8, 20]. d1 [7, 20] .9: tIoU with g1 = 3 / 20 = .15, with
    # g2 = 12 / 13 = .923 -> g2. d2 [0, 10] .8 -> g1 (tIoU 1): both TP up to 0.90, AP 1.
    # (Matching d1 to the first listed g1 would leave d2 a duplicate.)
    # At 0.95: d1 FP (.923 < .95), d2 TP: P = 0, .5; R = 0, .5 -> AP = .5 x .5 = .25.
    gt = {"v": [("A", 0, 10), ("A", 8, 20)]}
    det = {"v": [("A", 7, 20, 0.9), ("A", 0, 10, 0.8)]}
    r = detection_map(gt, det)
    assert r.per_class["A"] == pytest.approx([1.0] * 9 + [0.25])


def test_tied_scores_keep_the_given_order():
    # GT A [0, 10]; two detections of score .5: [0, 10] (tIoU 1) and [0, 5] (tIoU .5).
    # Given [0, 10] first: TP then FP at every threshold: P = 1, .5; R = 1, 1 -> AP 1.
    # Given [0, 5] first: at 0.50 it is a TP (tIoU .5 >= .5) and [0, 10] a duplicate:
    # AP 1; from 0.55 it is a FP and [0, 10] the TP: P = 0, .5; R = 0, 1 -> AP .5.
    gt = {"v": [("A", 0, 10)]}
    full, half = ("A", 0, 10, 0.5), ("A", 0, 5, 0.5)
    assert detection_map(gt, {"v": [full, half]}).per_class["A"] == [1.0] * 10
    assert detection_map(gt, {"v": [half, full]}).per_class["A"] == pytest.approx([1.0] + [0.5] * 9)


def test_tied_scores_across_videos_keep_the_video_order():
    # GT A: v1 [0, 10]. Ties at .5: w's [0, 10] (no GT of A in w: FP) and v1's [0, 10] (TP).
    # Videos in the given order w, v1: FP, TP -> P = 0, .5; R = 0, 1 -> AP .5.
    # Order v1, w: TP, FP -> P = 1, .5; R = 1, 1 -> AP 1.
    gt = {"v1": [("A", 0, 10)]}
    wv = {"w": [("A", 0, 10, 0.5)], "v1": [("A", 0, 10, 0.5)]}
    vw = {"v1": [("A", 0, 10, 0.5)], "w": [("A", 0, 10, 0.5)]}
    assert detection_map(gt, wv).average_map == pytest.approx(0.5)
    assert detection_map(gt, vw).average_map == 1.0


def test_multiple_videos():
    # GT A: v1 [0, 10], v2 [0, 10]. Ranked: v2 [50, 60] .9 -> FP (no overlap);
    # v3 [0, 10] .8 -> FP (v3 has no ground truth); v1 [0, 10] .6 -> TP;
    # v2 [0, 10] .5 -> TP (its own video's segment, not v1's which is taken).
    # P = 0, 0, 1/3, 1/2; R = 0, 0, .5, 1; envelope at the rises: .5, .5
    # AP = .5 x .5 + .5 x .5 = 0.5 at every threshold.
    gt = {"v1": [("A", 0, 10)], "v2": [("A", 0, 10)]}
    det = {"v1": [("A", 0, 10, 0.6)], "v2": [("A", 50, 60, 0.9), ("A", 0, 10, 0.5)], "v3": [("A", 0, 10, 0.8)]}
    r = detection_map(gt, det)
    assert r.map == pytest.approx([0.5] * 10)


def test_detections_of_another_class_never_match():
    # GT A [0, 10]; detection B [0, 10]: B has no ground truth -> ignored, A has no
    # detections -> AP 0.
    r = detection_map({"v": [("A", 0, 10)]}, {"v": [("B", 0, 10, 0.9)]})
    assert r.per_class == {"A": [0.0] * 10}
    assert r.ignored == {"B": 1}


def test_classes_without_ground_truth_are_ignored_and_a_class_without_detections_scores_zero():
    # GT: A [0, 10], B [20, 30]. Detections: A perfect (AP 1); B none (AP 0); Z (no
    # ground truth anywhere) ignored, whatever it scores. mAP = (1 + 0) / 2 = 0.5.
    gt = {"v": [("A", 0, 10), ("B", 20, 30)]}
    det = {"v": [("A", 0, 10, 0.3), ("Z", 0, 10, 0.99), ("Z", 5, 6, 0.98)]}
    r = detection_map(gt, det)
    assert r.per_class == {"A": [1.0] * 10, "B": [0.0] * 10}
    assert r.map == [0.5] * 10 and r.average_map == 0.5
    assert r.ignored == {"Z": 2}
    assert "Z" not in r.to_json()["per_class"]


def test_no_detections_at_all():
    r = detection_map({"v": [("A", 0, 10)]}, {})
    assert r.map == [0.0] * 10 and r.average_map == 0.0


@pytest.mark.parametrize("segment, words", [((5, 5), "zero length"), ((6, 5), "inverted"),
                                            ((0, float("nan")), "finite"), ((0, "9"), "finite")])
def test_bad_ground_truth_segments_are_refused_naming_video_and_entry(segment, words):
    gt = {"v1": [("A", 0, 10)], "v2": [("A", 0, 1), ("A", *segment)]}
    with pytest.raises(ValueError, match=rf"ground truth: video 'v2' entry 1: .*{words}"):
        detection_map(gt, {})


@pytest.mark.parametrize("segment, words", [((3, 3), "zero length"), ((4, 2), "inverted")])
def test_bad_detection_segments_are_refused_naming_video_and_entry(segment, words):
    det = {"v1": [("A", 0, 10, 0.5), ("A", *segment, 0.4)]}
    with pytest.raises(ValueError, match=rf"detections: video 'v1' entry 1: segment .* {words}"):
        detection_map({"v1": [("A", 0, 10)]}, det)


def test_bad_scores_labels_and_empty_ground_truth_are_refused():
    gt = {"v": [("A", 0, 10)]}
    with pytest.raises(ValueError, match=r"video 'v' entry 0: score must be a finite number, got nan"):
        detection_map(gt, {"v": [("A", 0, 1, float("nan"))]})
    with pytest.raises(ValueError, match=r"video 'v' entry 0: label must be a non-empty string"):
        detection_map({"v": [(3, 0, 10)]}, {})
    with pytest.raises(ValueError, match="no segment"):
        detection_map({"v": []}, {"v": [("A", 0, 1, 0.5)]})
    with pytest.raises(ValueError, match="thresholds"):
        detection_map(gt, {}, thresholds=[0.5, 0])


def test_interpolated_ap_and_segment_iou_by_hand():
    # TP, FP, TP, FP with 4 GT: P = 1, .5, 2/3, .5; R = .25, .25, .5, .5;
    # envelope 1, 2/3, 2/3, .5 -> AP = .25 x 1 + .25 x 2/3 = 5/12.
    assert interpolated_ap(np.array([True, False, True, False]), 4) == pytest.approx(5 / 12)
    assert interpolated_ap(np.zeros(0, bool), 3) == 0.0
    # [2, 6] vs [4, 10]: 2 / 8; vs [0, 1]: 0; vs [2, 6]: 1.
    np.testing.assert_allclose(segment_iou(2, 6, np.array([4.0, 0, 2]), np.array([10.0, 1, 6])), [0.25, 0, 1])


def test_class_agnostic_and_json():
    gt = {"v": [("A", 0, 10)]}
    det = {"v": [("B", 0, 10, 0.9)]}
    r = detection_map(class_agnostic(gt), class_agnostic(det))
    assert r.per_class == {"action": [1.0] * 10}
    out = json.loads(json.dumps(r.to_json()))
    assert set(out) == {"tiou_thresholds", "map", "average_map", "per_class"}
    assert out["tiou_thresholds"][0] == 0.5 and out["average_map"] == 1.0


def test_table4_layout():
    # A: [0, 7.5] vs [0, 10] -> tIoU .75 (AP 1 up to 0.75); B: no detections (AP 0).
    r = detection_map({"v": [("A", 0, 10), ("B", 20, 30)]}, {"v": [("A", 0, 7.5, 0.9)]})
    lines = table4(r, per_class=True).splitlines()
    assert lines[0].split() == ["tIoU", "0.50", "0.60", "0.70", "0.80", "0.90", "Avg"]
    assert lines[1].split() == ["mAP", "50.0", "50.0", "50.0", "0.0", "0.0", "30.0"]
    assert lines[3].split() == ["A", "100.0", "100.0", "100.0", "0.0", "0.0", "60.0"]
    assert lines[4].split() == ["B", "0.0", "0.0", "0.0", "0.0", "0.0", "0.0"]
    assert len(table4(r).splitlines()) == 2


# ---------------------------------------------------------------- properties


def reference_map(gt, det, thresholds=TIOU_THRESHOLDS):
    """ActivityNet's loop, literally: per class, per detection in descending score, the
    ground truth of its video in descending tIoU: below the threshold -> FP and stop; taken
    -> next; else TP."""
    labels = sorted({g[0] for rows in gt.values() for g in rows})
    aps = []
    for label in labels:
        preds = [(vid, d) for vid, rows in det.items() for d in rows if d[0] == label]
        preds = sorted(preds, key=lambda p: -p[1][3])  # Python's sort is stable: ties keep order
        gts = {vid: [g for g in rows if g[0] == label] for vid, rows in gt.items()}
        num_gt = sum(len(v) for v in gts.values())
        per_t = []
        for t in thresholds:
            taken, tp = set(), []
            for vid, d in preds:
                cands = gts.get(vid, [])
                ious = [max(0.0, min(d[2], g[2]) - max(d[1], g[1])) / ((d[2] - d[1]) + (g[2] - g[1])
                        - max(0.0, min(d[2], g[2]) - max(d[1], g[1]))) for g in cands]
                hit = False
                for j in sorted(range(len(cands)), key=lambda j: -ious[j]):
                    if ious[j] < t:
                        break
                    if (vid, j) in taken:
                        continue
                    taken.add((vid, j))
                    hit = True
                    break
                tp.append(hit)
            per_t.append(interpolated_ap(np.array(tp, bool), num_gt) if tp else 0.0)
        aps.append(per_t)
    return [float(np.mean([a[i] for a in aps])) for i in range(len(thresholds))]


segment = st.tuples(st.integers(0, 40), st.integers(1, 12)).map(lambda p: (float(p[0]), float(p[0] + p[1])))
entries = st.lists(st.tuples(st.sampled_from("AB"), segment), min_size=1, max_size=6)
videos = st.dictionaries(st.sampled_from(["v1", "v2", "v3"]), entries, min_size=1, max_size=3)


@settings(max_examples=10, deadline=None)
@given(videos, st.randoms(use_true_random=False))
def test_perfect_detections_score_one(gt_rows, rnd):
    gt = {v: [(label, *seg) for label, seg in rows] for v, rows in gt_rows.items()}
    det = {v: [(label, s, e, rnd.random()) for label, s, e in rows] for v, rows in gt.items()}
    r = detection_map(gt, det)
    assert r.map == [1.0] * 10 and r.average_map == 1.0


@settings(max_examples=20, deadline=None)
@given(videos, videos, st.randoms(use_true_random=False))
def test_matches_activitynets_loop_and_ignores_order_of_distinct_scores(gt_rows, det_rows, rnd):
    gt = {v: [(label, *seg) for label, seg in rows] for v, rows in gt_rows.items()}
    scores = iter(rnd.sample(range(1000), sum(len(r) for r in det_rows.values())))
    det = {v: [(label, *seg, next(scores) / 1000) for label, seg in rows] for v, rows in det_rows.items()}
    r = detection_map(gt, det)
    assert r.map == pytest.approx(reference_map(gt, det), abs=1e-12)
    assert all(0.0 <= m <= 1.0 for m in r.map) and math.isclose(r.average_map, np.mean(r.map))
    shuffled = {v: rnd.sample(rows, len(rows)) for v, rows in reversed(list(det.items()))}
    assert detection_map(gt, shuffled).map == pytest.approx(r.map, abs=1e-12)
