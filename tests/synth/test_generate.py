"""SynGym end to end on a tiny config: files in FineGym's formats, real H.264 videos,
frames that match the annotations, determinism per seed."""

import hashlib
import json
import re
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from finegym_ray.dataset.annotations import format_annotations, parse_annotations
from finegym_ray.dataset.categories import (
    format_element_categories,
    format_set_categories,
    parse_element_categories,
    parse_set_categories,
)
from finegym_ray.dataset.manifest import build_manifest
from finegym_ray.dataset.splits import format_split, parse_split
from finegym_ray.synth.config import PRESETS, SynthConfig
from finegym_ray.synth.generate import CONFIG_FILE, SPLIT_FILES, generate, plan_dataset

TINY = SynthConfig(videos=3, seed=7, width=192, height=108, events_per_video=[2, 3], subactions_per_event=[2, 4],
                   idle_range_s=[1.0, 3.0], mens_event_fraction=0.3, clutter=10)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syngym")
    generate(TINY, str(out))
    return out


def _manifest(folder: Path):
    ann = folder / "annotations"
    return build_manifest(
        str(ann / "finegym_annotation_info_v1.1.json"),
        [str(ann / f"{n}_categories.txt") for n in ("gym99", "gym288", "gym530")],
        [str(ann / name) for name in SPLIT_FILES.values()],
        sets=str(ann / "set_categories.txt"))


def test_files_parse_with_the_finegym_parsers(tiny):
    m = _manifest(tiny)
    s = m.summary
    assert s["unmatched_keys"] == 0
    assert s["subsets"] == {"gym99": 99, "gym288": 288, "gym530": 530}
    assert s["videos"] == TINY.videos and s["events_without_subactions"] >= 1  # men's events kept
    assert s["labelled_subactions"] > 0 and set(s["per_split"]) <= {"train", "val"}
    # Absolute times = event start + stage times; vaults have 3 stages, others 1.
    rows = m.subactions.to_pylist()
    for r in rows:
        assert r["start_s"] == pytest.approx(r["event_start_s"] + r["rel_start_s"])
        assert r["num_stages"] == (3 if r["event_label"] == 1 else 1)
        assert r["event_start_s"] <= r["start_s"] < r["end_s"] <= r["event_end_s"]
    assert {r["event_label"] for r in rows} <= {1, 2, 3, 4}


def test_files_are_byte_for_byte_what_the_formatters_write(tiny):
    """Parse and format again: the same bytes (the formatters are FineGym's layout)."""
    ann = tiny / "annotations"
    text = (ann / "finegym_annotation_info_v1.1.json").read_text()
    assert format_annotations(parse_annotations(text)) == text
    sets_text = (ann / "set_categories.txt").read_text()
    assert format_set_categories(parse_set_categories(sets_text)) == sets_text
    assert sets_text.splitlines()[0] == "set: 1; vault" and "set: 42; UB_fligh_same_bar" in sets_text
    for name in ("gym99", "gym288"):
        t = (ann / f"{name}_categories.txt").read_text()
        assert format_element_categories(parse_element_categories(t)) == t
        assert re.fullmatch(r"Clabel:\s+0; set:\s+1; Glabel:\s+0; \(VT\) .+", t.splitlines()[0])
    t530 = (ann / "gym530_categories.txt").read_text()
    assert format_element_categories(parse_element_categories(t530), glabel_only=True) == t530
    for name in SPLIT_FILES.values():
        t = (ann / name).read_text()
        entries = parse_split(t, name, 99 if name.startswith("gym99") else 288)
        assert format_split((e.key, e.label) for e in entries) == t
        assert all(len(e.key) == 39 for e in entries)  # 11-char ids, as FineGym's keys


def test_train_and_val_share_no_keys_and_agree_across_subsets(tiny):
    ann = tiny / "annotations"
    keys = {name: {line.split()[0] for line in (ann / name).read_text().splitlines()} for name in SPLIT_FILES.values()}
    assert not keys["gym99_train_element_v1.1.txt"] & keys["gym99_val_element.txt"]
    assert not keys["gym288_train_element_v1.1.txt"] & keys["gym288_val_element.txt"]
    assert keys["gym99_train_element_v1.1.txt"] <= keys["gym288_train_element_v1.1.txt"]


def test_attribute_paths_exported(tiny):
    attrs = json.loads((tiny / "annotations" / "syngym_element_attributes.json").read_text())
    assert len(attrs) == 530
    vt = attrs["0"]
    assert vt["set"] == 1 and vt["family"] == "vault"
    assert {"question", "answer", "visible_in_one_frame"} <= set(vt["path"][0])


def test_videos_are_h264_with_the_planned_frames(tiny):
    plans = plan_dataset(TINY)
    assert sorted(p.name for p in (tiny / "videos").iterdir()) == sorted(f"{p.video_id}.mp4" for p in plans)
    assert len({p.fps for p in plans}) >= 2  # several frame rates
    for plan in plans:
        assert re.fullmatch(r"[A-Za-z0-9_-]{11}", plan.video_id) and re.search(r"[_-]", plan.video_id)
        with av.open(str(tiny / "videos" / f"{plan.video_id}.mp4")) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
            assert (s.width, s.height) == (TINY.width, TINY.height)
            pts = [f.pts for f in c.decode(s)]
            # Read while the file is open: a closed container's streams refuse.
            rate, time_base = Fraction(s.average_rate), s.time_base
        assert rate == plan.fps
        assert len(pts) == plan.num_frames
        # Constant frame rate: every frame one frame duration after the previous.
        assert np.all(np.diff(np.array(pts) * time_base * plan.fps) == 1)
        assert plan.num_frames / plan.fps >= max(ev.end_s for ev in plan.events)


def _frame_at(path: Path, t: float) -> np.ndarray:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            if f.pts * s.time_base >= t:
                return f.to_ndarray(format="rgb24").astype(np.int16)
    raise AssertionError(f"no frame at {t} s")


def test_routines_are_drawn_where_the_annotations_say(tiny):
    """Inside a routine the apparatus is on screen; idle footage has none: frames of a
    routine are closer to each other than to idle frames of the same video."""
    plan = plan_dataset(TINY)[0]
    path = tiny / "videos" / f"{plan.video_id}.mp4"
    ev = plan.events[0]
    inside = [_frame_at(path, ev.start_s + d) for d in (0.3, 0.9)]
    idle = _frame_at(path, ev.start_s - 0.5)
    within = np.abs(inside[0] - inside[1]).mean()
    across = np.abs(inside[0] - idle).mean()
    assert across > 3 * within


def test_deterministic_per_seed(tiny, tmp_path):
    again = tmp_path / "again"
    generate(TINY, str(again))
    assert _digest(again) == _digest(tiny)
    other = plan_dataset(replace(TINY, seed=8))
    assert [p.video_id for p in other] != [p.video_id for p in plan_dataset(TINY)]


def test_config_marker_written_last(tiny):
    assert (tiny / CONFIG_FILE).read_text().startswith("videos: 3")


@pytest.mark.parametrize("override, msg", [
    (dict(videos=0), "videos must be >= 1"),
    (dict(fps=24.0), "fps must be one of"),
    (dict(width=101), "even"),
    (dict(subaction_range_s=[3.0, 1.0]), "subaction_range_s"),
])
def test_bad_config_is_refused_before_anything_is_written(tmp_path, override, msg):
    with pytest.raises(ValueError, match=msg):
        generate(replace(TINY, **override), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_small_preset_matches_the_readme_promise():
    """The demo's preset: a few videos, tens of sub-actions, FineGym-like durations."""
    plans = plan_dataset(PRESETS["small"])
    durations = [s.stages[-1][1] - s.stages[0][0] for p in plans for ev in p.events for s in ev.subactions or ()
                 if len(s.stages) == 1]
    assert len(durations) >= 20
    assert 0.5 - 1e-9 <= min(durations) and max(durations) <= 3.5 + 1e-9 and 0.8 < float(np.median(durations)) < 2.0
    assert sum(p.num_frames for p in plans) < 12_000  # generated in ~20 s on 2 cores
