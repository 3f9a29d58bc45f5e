import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from finegym_ray.dataset.errors import FormatError
from finegym_ray.dataset.labels import label_view
from finegym_ray.dataset.manifest import (
    build_manifest,
    categories_from_table,
    format_summary,
    load_manifest,
    parse_split_spec,
    write_manifest,
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
    # Per-set counts carry the sets' names (set_categories.txt), not ids alone.
    assert s["set_names"]["1"] == "vault" and s["set_names"]["33"] == "BB_flight_salto" and len(s["set_names"]) == 4
    assert "per set: 1 (vault): 1, 33 (BB_flight_salto): 1, " in format_summary(s)
    without = build(sets=None).summary  # no set file: ids alone, as before
    assert "per set: 1: 1, 33: 1" in format_summary(without)


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


@pytest.mark.parametrize("summary,says", [('{"videos": ' + "9" * 400 + "}", "beyond 64 bits"),
                                          ('{"videos": 1,', "malformed JSON"), ("[1]", "not a JSON object")])
def test_a_summary_json_out_of_bounds_is_a_format_error_naming_it(tmp_path, summary, says):
    out = tmp_path / "manifest"
    write_manifest(build(), str(out))
    (out / "summary.json").write_text(summary)
    with pytest.raises(FormatError, match=says) as e:
        load_manifest(str(out))
    assert e.value.path == str(out / "summary.json")


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


# ----------------------------------------------------------------------------------
# Split membership per subset (issue 18, item 6) and counts per subset and split (item 7)
# ----------------------------------------------------------------------------------
BB_KEY = "A0xAXXysHUo_E_002184_002237_A_0035_0036"  # Glabel 201, set 33
VT_KEY = "A0xAXXysHUo_E_002681_002688_A_0000_0006"  # Glabel 1, vault
UB_KEY = "x_-Yz9_Ab-Q_E_000100_000140_A_0003_0005"  # Glabel 400, set 41


def two_subsets(folder: Path) -> dict[str, str]:
    """gym2 (VT Glabel 1, BB Glabel 201) inside gym4, and gym4's own split files listing
    keys that gym2's files do not: the VT key is in gym4 train only."""
    files = {
        "gym2_categories.txt": ("Clabel: 0; set: 1; Glabel: 1; (VT) a vault\n"
                                "Clabel: 1; set: 33; Glabel: 201; (BB) salto\n"),
        "gym4_categories.txt": (DATA / "gym4_categories.txt").read_text(),
        "gym2_train_element.txt": f"{BB_KEY} 1\n",
        "gym4_train_element.txt": f"{BB_KEY} 1\n{VT_KEY} 0\n",
        "gym4_val_element.txt": f"{UB_KEY} 3\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
    return {name: str(folder / name) for name in files}


def build_two_subsets(folder: Path):
    f = two_subsets(folder)
    return build(categories=[f["gym2_categories.txt"], f["gym4_categories.txt"]],
                 splits=[f["gym2_train_element.txt"], f["gym4_train_element.txt"], f["gym4_val_element.txt"]])


def test_a_subset_labels_only_the_keys_its_own_split_files_list(tmp_path):
    rows = {r["key"]: r for r in build_two_subsets(tmp_path).subactions.to_pylist()}
    # The VT key is listed by gym4's files only: gym2 (whose classes hold its Glabel) has no label for it.
    vt = rows[VT_KEY]
    assert (vt["gym4_label"], vt["gym4_split"]) == (0, "train")
    assert (vt["gym2_label"], vt["gym2_split"]) == (None, None)
    assert vt["split"] == "train"  # the key's split (every file listing it agrees), for event and set tasks
    bb = rows[BB_KEY]
    assert (bb["gym2_label"], bb["gym2_split"], bb["gym4_label"], bb["gym4_split"]) == (1, "train", 1, "train")
    ub = rows[UB_KEY]
    assert (ub["gym2_label"], ub["gym2_split"], ub["gym4_label"], ub["gym4_split"]) == (None, None, 3, "val")


def test_training_labels_of_a_subset_come_from_its_own_split_files(tmp_path):
    from finegym_ray.train.data import load_split_labels

    write_manifest(build_two_subsets(tmp_path), str(tmp_path / "data" / "manifest"))
    data = str(tmp_path / "data")
    assert load_split_labels(data, "gym2", "train").labels == {BB_KEY: 1}
    assert load_split_labels(data, "gym4", "train").labels == {BB_KEY: 1, VT_KEY: 0}
    with pytest.raises(ValueError, match="no sub-action of split 'val'"):
        load_split_labels(data, "gym2", "val")
    # Event and set tasks take every labelled key in its split.
    assert set(load_split_labels(data, "set", "train").labels) == {BB_KEY, VT_KEY}
    # A manifest written before the per-subset columns is refused for element tasks, not read the old way.
    path = tmp_path / "data" / "manifest" / "subactions.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["gym2_split", "gym4_split"]), path)
    with pytest.raises(ValueError, match="no gym2_split column.*run preprocessing again"):
        load_split_labels(data, "gym2", "train")
    assert set(load_split_labels(data, "set", "train").labels) == {BB_KEY, VT_KEY}


def test_the_full_glabel_list_without_split_files_of_its_own_labels_every_listed_key(tmp_path):
    # FineGym has no gym530 split files: its labels are Glabels, which every split line
    # carries, so it takes every listed key with the split the listing files give.
    f = two_subsets(tmp_path)
    sets = {201: 33, 250: 35, 400: 41}
    full = tmp_path / "gym530_categories.txt"  # Glabel-only lines; 402 of them make the subset gym402
    full.write_text("".join(f"Glabel: {g}; set: {sets.get(g, 1)}; el{g}\n" for g in range(402)))
    m = build(categories=[f["gym2_categories.txt"], f["gym4_categories.txt"], str(full)],
              splits=[f["gym2_train_element.txt"], f["gym4_train_element.txt"], f["gym4_val_element.txt"]])
    rows = {r["key"]: r for r in m.subactions.to_pylist()}
    assert {k: (r["gym402_label"], r["gym402_split"]) for k, r in rows.items() if r["gym402_label"] is not None} == {
        BB_KEY: (201, "train"), VT_KEY: (1, "train"), UB_KEY: (400, "val")}


def test_two_versions_of_one_subsets_split_are_refused(tmp_path):
    for version in ("v1.0", "v1.1"):
        (tmp_path / f"gym4_train_element_{version}.txt").write_text((DATA / "gym4_train_element.txt").read_text())
    both = [str(tmp_path / "gym4_train_element_v1.0.txt"), str(tmp_path / "gym4_train_element_v1.1.txt")]
    with pytest.raises(ValueError, match=r"gym4 train.*v1\.0.*v1\.1"):
        build(splits=[*both, str(DATA / "gym4_val_element.txt")])
    # One of them, chosen by the user, is fine.
    assert build(splits=[both[1], str(DATA / "gym4_val_element.txt")]).summary["labelled_subactions"] == 4


def test_a_folder_with_two_versions_needs_one_chosen(tmp_path):
    from finegym_ray.dataset.manifest import build_manifest_from

    for name in ("gym4_categories.txt", "set_categories.txt", "gym4_val_element.txt"):
        shutil.copy(DATA / name, tmp_path / name)
    shutil.copy(DATA / "annotations.json", tmp_path / "finegym_annotation_info_v1.1.json")
    shutil.copy(DATA / "gym4_train_element.txt", tmp_path / "gym4_train_element_v1.0.txt")
    (tmp_path / "gym4_train_element_v1.1.txt").write_text(f"{BB_KEY} 1\n")
    with pytest.raises(ValueError, match=r"gym4_train_element_v1\.0\.txt.*gym4_train_element_v1\.1\.txt"):
        build_manifest_from(str(tmp_path))
    m = build_manifest_from(str(tmp_path), split_version="v1.1")
    assert [s["path"].rsplit("/", 1)[-1] for s in m.summary["split_files"]] == [
        "gym4_train_element_v1.1.txt", "gym4_val_element.txt"]
    assert m.summary["per_subset"]["gym4"]["train"] == {"files": 1, "keys": 1, "matched": 1}
    with pytest.raises(ValueError, match="v2.0"):
        build_manifest_from(str(tmp_path), split_version="v2.0")


def test_counts_per_subset_and_split(tmp_path):
    m = build_two_subsets(tmp_path)
    assert m.summary["per_subset"] == {
        "gym2": {"train": {"files": 1, "keys": 1, "matched": 1}},
        "gym4": {"train": {"files": 1, "keys": 2, "matched": 2}, "val": {"files": 1, "keys": 1, "matched": 1}},
    }
    # The test data's own files: 4 train keys (one a pre-2020 vault key, one of an unknown video), 3 val keys.
    s = build().summary
    assert s["per_subset"] == {"gym4": {"train": {"files": 1, "keys": 4, "matched": 2},
                                        "val": {"files": 1, "keys": 3, "matched": 2}}}
    text = format_summary(s)
    assert "per subset and split: gym4 train 4 keys (2 matched), val 3 keys (2 matched)" in text
    assert "WARNING" not in text.replace("WARNING: 3 split keys do not match", "")


def _categories_named(folder: Path, subset: str, n: int) -> str:
    path = folder / f"{subset}_categories.txt"
    path.write_text("".join(f"Clabel: {i}; set: 1; Glabel: {i}; el{i}\n" for i in range(n)))
    return str(path)


def _generated_split(path: Path, n: int) -> str:
    """``n`` distinct well-formed keys (of videos the annotations lack), label 0."""
    path.write_text("".join(f"vid{i:08d}_E_000001_000002_A_0000_0001 0\n" for i in range(n)))
    return str(path)


def test_files_named_as_finegyms_with_other_counts_are_warned_about(tmp_path):
    cats = _categories_named(tmp_path, "gym99", 99)
    # Named as FineGym's Gym99 val file (8,521 lines) but holding 5,000 keys: a truncated copy?
    short = _generated_split(tmp_path / "gym99_val_element.txt", 5000)
    s = build(categories=[cats], splits=[short])
    assert s.summary["per_subset"]["gym99"]["val"]["keys"] == 5000
    assert len(s.summary["count_warnings"]) == 1
    warning = s.summary["count_warnings"][0]
    assert "gym99_val_element.txt" in warning and "5000" in warning and "8521" in warning
    assert "WARNING: " + warning in format_summary(s.summary)
    # The right count: no warning.
    full = _generated_split(tmp_path / "gym99_val_element.txt", 8521)
    assert build(categories=[cats], splits=[full]).summary["count_warnings"] == []
    # A small file under FineGym's name (SynGym writes such files): not FineGym's, no warning.
    small = _generated_split(tmp_path / "gym99_val_element.txt", 128)
    assert build(categories=[cats], splits=[small]).summary["count_warnings"] == []


def _routines_annotations(folder: Path, events: list[int]) -> str:
    """A FineGym annotation JSON with two routines of each event id in ``events`` (one
    sub-action each for the women's 1-4, ``segments: null`` for the others, as FineGym
    annotates the men's), over two videos."""
    from finegym_ray.dataset.annotations import Event, SubAction, format_annotations

    routines = []
    for i, label in enumerate(e for e in events for _ in range(2)):
        video, start = ("vidA_000001", "vidB-000002")[i % 2], 100.0 * (i + 1)
        event_id = f"E_{int(start):06d}_{int(start) + 60:06d}"
        subs = (SubAction(video, event_id, "A_0003_0005", start, ((3.2, 5.1),)),) if label <= 4 else None
        routines.append(Event(video, event_id, label, start, start + 60.5, subs))
    path = folder / "finegym_annotation_info_v1.1.json"
    path.write_text(format_annotations(routines))
    return str(path)


def test_event_task_labels_routines_into_the_ten_events(tmp_path):
    from finegym_ray.train.data import load_split_labels

    write_manifest(build(annotations=_routines_annotations(tmp_path, list(range(1, 11))), splits=[]),
                   str(tmp_path / "data" / "manifest"))
    data = str(tmp_path / "data")
    train, val = (load_split_labels(data, "event", s) for s in ("train", "val"))
    assert train.num_classes == val.num_classes == 10
    assert train.class_names == ("VT", "FX", "BB", "UB", *(f"event_{i}" for i in range(5, 11)))
    events = {r["event_key"]: r["event_label"] for r in
              pq.read_table(tmp_path / "data" / "manifest" / "events.parquet").to_pylist()}
    # Every routine, the men's too, in one split, labelled with its event id - 1; one of
    # each event's two routines in val.
    assert {**train.labels, **val.labels} == {k: e - 1 for k, e in events.items()} and len(events) == 20
    assert sorted(val.labels.values()) == list(range(10)) == sorted(train.labels.values())
    assert all("_A_" not in k for k in events)  # routine keys, not sub-action keys
    # Routines need no split file; the sub-action variant labels only the sub-actions split files list.
    with pytest.raises(ValueError, match="no sub-action of split 'train' has a label for task 'subaction_event'"):
        load_split_labels(data, "subaction_event", "train")


def test_event_ids_outside_the_ten_are_refused_not_dropped(tmp_path):
    from finegym_ray.train.data import load_split_labels

    write_manifest(build(annotations=_routines_annotations(tmp_path, [1, 5, 11]), splits=[]),
                   str(tmp_path / "data" / "manifest"))
    with pytest.raises(ValueError, match="event ids 11 are none of the event task's 10"):
        load_split_labels(str(tmp_path / "data"), "event", "train")
