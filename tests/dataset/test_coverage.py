"""What the videos or clips at hand cover of the labelled keys, per task and split (no Ray)."""

import pytest

from finegym_ray.dataset.coverage import coverage, format_coverage, task_labels
from finegym_ray.dataset.labels import routine_splits
from finegym_ray.dataset.manifest import build_manifest_from


@pytest.fixture(scope="module")
def manifest(tiny_gym):
    return build_manifest_from(str(tiny_gym / "annotations"))


def _labels(manifest, task):
    return task_labels(task, subactions=manifest.subactions, events=manifest.events, categories=manifest.categories)


def test_every_video_at_hand_covers_every_labelled_key(manifest):
    videos = set(manifest.events.column("video_id").to_pylist())
    rows = coverage(manifest, videos=videos)
    assert [(r.task, r.split) for r in rows] == [(t, s) for t in ("gym99", "gym288", "gym530", "set", "event")
                                                 for s in ("train", "val")]
    assert all(r.present == r.labelled > 0 and r.missing == r.missing_videos == 0 and r.percent == 100
               for r in rows)
    # The counts are the keys each task labels, as training reads them.
    gym99 = {r.split: r.labelled for r in rows if r.task == "gym99"}
    assert gym99 == {split: len(keys) for split, keys in _labels(manifest, "gym99").items()}
    routines = manifest.events.select(["event_key", "event_label"]).to_pylist()
    splits = routine_splits((r["event_key"], r["event_label"]) for r in routines)
    assert {r.split: r.labelled for r in rows if r.task == "event"} == {
        s: sum(v == s for v in splits.values()) for s in ("train", "val")}


def test_a_missing_video_takes_its_keys_out_of_each_task_and_split(manifest):
    subactions = manifest.subactions.to_pylist()
    gone = sorted({r["video_id"] for r in subactions})[0]
    videos = set(manifest.events.column("video_id").to_pylist()) - {gone}
    rows = {(r.task, r.split): r for r in coverage(manifest, videos=videos)}
    for task in ("gym99", "set", "event"):
        for split, labels in _labels(manifest, task).items():
            row = rows[task, split]
            video_of = {r["key"]: r["video_id"] for r in subactions} if task != "event" else dict(
                zip(manifest.events.column("event_key").to_pylist(), manifest.events.column("video_id").to_pylist()))
            lost = sum(video_of[k] == gone for k in labels)
            assert (row.labelled, row.missing, row.missing_videos) == (len(labels), lost, min(lost, 1))
            assert row.percent == pytest.approx(100 * (len(labels) - lost) / len(labels))
    # The same keys given as the clips cut.
    cut = [r["key"] for r in subactions if r["video_id"] != gone]
    cut += [k for k, v in zip(manifest.events.column("event_key").to_pylist(),
                              manifest.events.column("video_id").to_pylist()) if v != gone]
    assert {(r.task, r.split): r for r in coverage(manifest, keys=cut)} == rows
    # Only the tasks asked for; the event task of sub-action clips alone has none present.
    only = coverage(manifest, keys=[r["key"] for r in subactions], tasks=("gym99", "event"))
    assert [r.task for r in only] == ["gym99", "gym99", "event", "event"]
    assert all(r.present == 0 for r in only if r.task == "event")


def test_the_table_and_the_records(manifest):
    rows = coverage(manifest, videos=sorted(set(manifest.events.column("video_id").to_pylist()))[1:])
    text = format_coverage(rows, present="cuttable")
    head, *lines = text.splitlines()
    assert head.split()[:5] == ["task", "split", "cuttable", "labelled", "missing"] and len(lines) == len(rows)
    missing = [r for r in rows if r.missing]
    assert missing and all(f"{r.missing_videos} video" in line for r, line in zip(rows, lines) if r.missing)
    record = missing[0].record()
    assert record["missing"] == missing[0].missing and record["percent"] == round(missing[0].percent, 1)
    assert "no labelled keys" in format_coverage([])


def test_exactly_one_of_videos_or_keys(manifest):
    with pytest.raises(ValueError, match="exactly one"):
        coverage(manifest)
    with pytest.raises(ValueError, match="exactly one"):
        coverage(manifest, videos=[], keys=[])


def test_without_split_files_only_the_routines_are_labelled(tiny_gym):
    bare = build_manifest_from(str(tiny_gym / "annotations" / "finegym_annotation_info_v1.1.json"))
    assert {r.task for r in coverage(bare, videos=[])} == {"event"}
