import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finegym_ray.dataset.errors import FormatError
from finegym_ray.dataset.labels import label_view
from finegym_ray.dataset.manifest import (
    build_manifest, categories_from_table, format_summary, load_manifest, parse_split_spec, write_manifest,
)

DATA = Path(__file__).parent / "data"


def build(**kw):
    args = dict(annotations=str(DATA / "annotations.json"), categories=[str(DATA / "gym4_categories.txt")],
                splits=[str(DATA / "gym4_train_element.txt"), str(DATA / "gym4_val_element.txt")],
                sets=str(DATA / "set_categories.txt"))
    args.update(kw)
    return build_manifest(**args)


def test_subaction_rows():
    m = build()
    rows = {r["key"]: r for r in m.subactions.to_pylist()}
    assert len(rows) == 4
    r = rows["A0xAXXysHUo_E_002184_002237_A_0035_0036"]
    assert (r["video_id"], r["event_label"], r["event_name"], r["split"]) == ("A0xAXXysHUo", 3, "BB", "train")
    assert (r["glabel"], r["set_id"], r["gym4_label"]) == (201, 33, 1)
    assert r["start_s"] == pytest.approx(2219.15) and r["end_s"] == pytest.approx(2220.55)
    vt = rows["A0xAXXysHUo_E_002681_002688_A_0000_0006"]
    assert vt["num_stages"] == 3
    assert vt["stage_start_s"] == pytest.approx([2681.92, 2685.08, 2686.37])
    assert vt["stage_end_s"][-1] == pytest.approx(vt["end_s"])
    assert rows["x_-Yz9_Ab-Q_E_000100_000140_A_0003_0005"]["split"] == "val"


def test_events_keep_men_events_without_subactions():
    ev = {r["event_key"]: r for r in build().events.to_pylist()}
    assert len(ev) == 4
    men = ev["A0xAXXysHUo_E_003000_003050"]
    assert (men["has_subactions"], men["num_subactions"], men["event_label"]) == (False, 0, 5)


def test_unmatched_keys_reported_with_reasons():
    m = build()
    un = {r["key"]: r for r in m.unmatched.to_pylist()}
    assert len(un) == 3
    legacy = un["A0xAXXysHUo_E_002681_002688_A_0000_0003"]
    assert legacy["reason"].startswith("pre-2020-04-16 vault key")
    assert legacy["current_key"] == "A0xAXXysHUo_E_002681_002688_A_0000_0006"
    assert legacy["file"].endswith("gym4_train_element.txt") and legacy["line"] == 3
    assert un["ZZZZZZZZZZZ_E_000001_000002_A_0000_0001"]["reason"] == "video not in the annotations"
    assert un["x_-Yz9_Ab-Q_E_000100_000140_A_0009_0010"]["reason"] == "sub-action not in the event"
    s = m.summary
    assert s["unmatched_keys"] == 3 and len(s["unmatched_examples"]) == 3
    text = format_summary(s)
    assert "3 split keys do not match" in text and "pre-2020-04-16" in text


def test_summary_counts():
    s = build().summary
    assert (s["videos"], s["events"], s["events_without_subactions"], s["subactions"]) == (2, 4, 1, 4)
    assert s["labelled_subactions"] == 4
    assert s["per_split"] == {"train": 2, "val": 2}
    assert s["per_set"] == {"1": 1, "33": 1, "35": 1, "41": 1}
    assert s["per_event"]["BB"] == {"events": 1, "subactions": 2, "labelled": 2}


def test_write_and_load_round_trip(tmp_path):
    m = build()
    written = write_manifest(m, str(tmp_path / "manifest"))
    assert set(written) == {"events", "subactions", "categories", "unmatched_keys", "summary"}
    # plain pyarrow reads what we wrote
    assert pq.read_table(tmp_path / "manifest" / "subactions.parquet").num_rows == 4
    assert json.loads((tmp_path / "manifest" / "summary.json").read_text())["subactions"] == 4
    back = load_manifest(str(tmp_path / "manifest"))
    assert back.subactions.equals(m.subactions)
    subsets, sets = categories_from_table(back.categories)
    assert subsets["gym4"].classes[2].glabel == 250 and len(sets) == 15
    view = label_view("set", subsets, sets)
    assert view.label(set_id=33) == 8


def test_conflicting_labels_across_files_raise(tmp_path):
    other = tmp_path / "gym4_val_element.txt"
    other.write_text("A0xAXXysHUo_E_002184_002237_A_0035_0036 2\n")
    with pytest.raises(FormatError, match="train/Glabel 201"):
        build(splits=[str(DATA / "gym4_train_element.txt"), str(other)])


def test_bad_file_raises_format_error_naming_it(tmp_path):
    bad = tmp_path / "gym4_train_element.txt"
    shutil.copy(DATA / "gym4_train_element.txt", bad)
    bad.write_text(bad.read_text() + "A0xAXXysHUo_E_002184_002237_A_0035_0036 7\n")
    with pytest.raises(FormatError, match="out of range") as e:
        build(splits=[str(bad)])
    assert e.value.path == str(bad) and e.value.line == 5


def test_split_specs():
    assert parse_split_spec("d/gym99_train_element_v1.1.txt", ["gym99"]).split == "train"
    assert parse_split_spec("val=d/mine.txt", ["gym288"]).subset == "gym288"
    with pytest.raises(ValueError, match="train="):
        parse_split_spec("d/mine.txt", ["gym99"])
    with pytest.raises(ValueError, match="no gym288 categories"):
        parse_split_spec("gym288_val_element.txt", ["gym99"])
