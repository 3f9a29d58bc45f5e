"""Ground truth from FineGym's annotations and ActivityNet's files; detections written and
read back, locally and on S3."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from finegym_ray.dataset.annotations import parse_annotations
from finegym_ray.dataset.manifest import build_manifest_from
from finegym_ray.localize.formats import (
    AGNOSTIC_LABEL,
    FormatError,
    finegym_ground_truth,
    load_ground_truth,
    manifest_ground_truth,
    parse_ground_truth,
    read_detections,
    read_ground_truth,
    set_labels,
    write_detections,
)

DATA = Path(__file__).parents[1] / "dataset" / "data"

# tests/dataset/data/annotations.json: three routines of A0xAXXysHUo (BB, VT, a men's
# event 5 without sub-actions) and one UB routine of x_-Yz9_Ab-Q.
ACTION = {
    "A0xAXXysHUo": [("BB", 2184.05, 2237.9), ("VT", 2681.88, 2688.48), ("event_5", 3000.5, 3050.2)],
    "x_-Yz9_Ab-Q": [("UB", 100.0, 140.99)],
}
# Sub-actions relative to their routine's start; the vault spans its 3 stages (0.04 to 6.57).
# Set names from gym4_categories.txt (labels 1, 2, 0, 3 -> sets 33, 35, 1, 41).
SUBACTION = {
    "A0xAXXysHUo_E_002184_002237": [("BB_flight_salto", 35.1, 36.5), ("BB_dismounts", 40.2, 40.9)],
    "A0xAXXysHUo_E_002681_002688": [("vault", 0.04, 6.57)],
    "x_-Yz9_Ab-Q_E_000100_000140": [("UB_circles", 3.45, 5.64)],
}


def annotation_folder(root: Path, drop_split_line: str | None = None) -> Path:
    """FineGym's annotation folder layout, from the small files of tests/dataset/data."""
    root.mkdir()
    shutil.copy(DATA / "annotations.json", root / "finegym_annotation_info_v1.1.json")
    for name in ("set_categories.txt", "gym4_categories.txt", "gym4_train_element.txt", "gym4_val_element.txt"):
        text = (DATA / name).read_text()
        if drop_split_line:
            text = "".join(line for line in text.splitlines(True) if drop_split_line not in line)
        (root / name).write_text(text)
    return root


def test_finegym_ground_truth_at_both_levels():
    events = parse_annotations((DATA / "annotations.json").read_text())
    assert finegym_ground_truth(events, level="action") == ACTION
    agnostic = finegym_ground_truth(events, level="subaction")
    assert {k: [(s, e) for _, s, e in v] for k, v in agnostic.items()} == \
        {k: [(s, e) for _, s, e in v] for k, v in SUBACTION.items()}
    assert {label for rows in agnostic.values() for label, _, _ in rows} == {AGNOSTIC_LABEL}
    # With labels, the sub-actions they do not name are left out (their routine stays).
    labels = {"A0xAXXysHUo_E_002681_002688_A_0000_0006": "vault"}
    assert finegym_ground_truth(events, level="subaction", labels=labels) == {
        "A0xAXXysHUo_E_002184_002237": [], "A0xAXXysHUo_E_002681_002688": [("vault", 0.04, 6.57)],
        "x_-Yz9_Ab-Q_E_000100_000140": []}
    with pytest.raises(ValueError, match="level"):
        finegym_ground_truth(events, level="element")


def test_annotation_folder_gives_set_labels_and_matches_the_manifest(tmp_path):
    folder = annotation_folder(tmp_path / "ann")
    assert read_ground_truth(str(folder), level="action") == ACTION
    loaded = load_ground_truth(str(folder), level="subaction")
    assert loaded.segments == SUBACTION and not loaded.class_agnostic and loaded.notes == []
    manifest = build_manifest_from(str(folder))
    events = parse_annotations((DATA / "annotations.json").read_text())
    assert finegym_ground_truth(events, level="subaction", labels=set_labels(manifest)) == SUBACTION
    assert manifest_ground_truth(manifest, level="action") == ACTION
    # The bare JSON: the same segments, class-agnostic, and a note saying so.
    bare = load_ground_truth(str(folder / "finegym_annotation_info_v1.1.json"), level="subaction")
    assert bare.class_agnostic and "class-agnostic" in bare.notes[0] and bare.source == "finegym-json"


def test_a_sub_action_without_a_set_label_is_left_out_with_a_note(tmp_path):
    folder = annotation_folder(tmp_path / "ann", drop_split_line="A_0040_0040")
    loaded = load_ground_truth(str(folder), level="subaction")
    assert loaded.segments["A0xAXXysHUo_E_002184_002237"] == [("BB_flight_salto", 35.1, 36.5)]
    assert "1 of 4 sub-actions have no set label" in loaded.notes[0]


def test_activitynet_ground_truth_and_subset():
    text = json.dumps({"version": "1.3", "database": {
        "a": {"subset": "validation", "duration": 30.0,
              "annotations": [{"segment": [1.5, 4.0], "label": "Long jump"}, {"segment": [9, 12], "label": 7}]},
        "b": {"subset": "training", "annotations": [{"segment": [0, 1], "label": "Long jump"}]},
        "c": {"subset": "validation", "annotations": []}}})
    assert parse_ground_truth(text).segments == {"a": [("Long jump", 1.5, 4.0), ("7", 9.0, 12.0)],
                                                 "b": [("Long jump", 0.0, 1.0)], "c": []}
    assert set(parse_ground_truth(text, subset="validation").segments) == {"a", "c"}
    with pytest.raises(FormatError, match="no video of subset 'testing'"):
        parse_ground_truth(text, "gt.json", subset="testing")


def test_detections_round_trip_locally_with_numpy_scores(tmp_path):
    det = {"v1": [("FX", 0.5, 2.25, np.float32(0.75)), ("VT", 3.0, 4.0, 1)], "v2": []}
    write_detections(str(tmp_path / "out" / "det.json"), det)
    data = json.loads((tmp_path / "out" / "det.json").read_text())
    assert data["results"]["v1"][0] == {"label": "FX", "segment": [0.5, 2.25], "score": 0.75}
    assert read_detections(str(tmp_path / "out" / "det.json")) == {
        "v1": [("FX", 0.5, 2.25, 0.75), ("VT", 3.0, 4.0, 1.0)], "v2": []}
    with pytest.raises(ValueError, match=r"detections\['v1'\]\[0\]: segment \[2.0, 2.0\] has zero length"):
        write_detections(str(tmp_path / "bad.json"), {"v1": [("FX", 2, 2, 0.5)]})
    assert not (tmp_path / "bad.json").exists()


def test_detections_round_trip_on_s3(s3_prefix):
    det = {"routine_E_000001_000009": [("subaction", 1.0, 2.0, 0.5)]}
    uri = f"{s3_prefix}/detections.json"
    write_detections(uri, det)
    assert read_detections(uri) == det
