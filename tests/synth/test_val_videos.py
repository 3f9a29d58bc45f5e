"""SynGym's separate validation videos (``val_videos_seed``): the val split is videos of
its own, planned and rendered from another seed, in FineGym's file formats."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from finegym_ray.dataset.keys import parse_instance_key
from finegym_ray.dataset.manifest import build_manifest
from finegym_ray.synth.config import SynthConfig
from finegym_ray.synth.generate import ANNOTATIONS, SPLIT_FILES, assign_splits, generate, plan_dataset
from finegym_ray.synth.render import render_video

BASE = SynthConfig(videos=8, seed=3, width=128, height=72, events_per_video=[2, 3], subactions_per_event=[3, 5],
                   idle_range_s=[1.0, 2.0], mens_event_fraction=0.2, clutter=5, noise=0.0)
SEPARATE = replace(BASE, val_videos_seed=11)


def _annotations_only(fn, *iterables):
    return []  # skip rendering: these tests read the annotation files


@pytest.fixture(scope="module")
def separate(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("separate")
    generate(SEPARATE, str(out), map_fn=_annotations_only)
    return out


def _split_keys(folder: Path) -> dict[str, set[str]]:
    ann = folder / "annotations"
    return {name: {line.split()[0] for line in (ann / name).read_text().splitlines()} for name in SPLIT_FILES.values()}


def _video(key: str) -> str:
    return parse_instance_key(key).video_id


def test_val_videos_are_their_own_and_from_another_seed():
    plans = plan_dataset(SEPARATE)
    train, val = [p for p in plans if not p.val], [p for p in plans if p.val]
    assert len(plans) == 8 and len(val) == 2  # round(val_fraction 0.25 * 8 videos)
    assert {p.seed for p in train} == {3} and {p.seed for p in val} == {11}
    assert not {p.video_id for p in train} & {p.video_id for p in val}
    # The training videos are the default dataset's first ones, unchanged.
    assert train == plan_dataset(BASE)[:6]
    assert {p.video_id for p in val}.isdisjoint(p.video_id for p in plan_dataset(BASE))


def test_split_files_put_each_video_in_one_split(separate):
    keys = _split_keys(separate)
    val_ids = {p.video_id for p in plan_dataset(SEPARATE) if p.val}
    for subset in ("gym99", "gym288"):
        train = keys[SPLIT_FILES[(subset, "train")]]
        val = keys[SPLIT_FILES[(subset, "val")]]
        assert train and val and not train & val
        assert {_video(k) for k in val} <= val_ids
        assert not {_video(k) for k in train} & {_video(k) for k in val}
    assert keys[SPLIT_FILES[("gym99", "val")]] <= keys[SPLIT_FILES[("gym288", "val")]]
    assert keys[SPLIT_FILES[("gym99", "train")]] <= keys[SPLIT_FILES[("gym288", "train")]]
    # Every labelled sub-action of a val video is in val: nothing of it is left out.
    splits = assign_splits(plan_dataset(SEPARATE), SEPARATE.val_fraction, SEPARATE.seed)
    assert {k for k, (s, _) in splits.items() if s == "val"} == {k for k in splits if _video(k) in val_ids}


def test_the_manifest_reads_them_as_finegym(separate):
    ann = separate / "annotations"
    categories = [str(ann / f"{n}_categories.txt") for n in ("gym99", "gym288", "gym530")]
    m = build_manifest(str(ann / ANNOTATIONS), categories, [str(ann / name) for name in SPLIT_FILES.values()],
                       sets=str(ann / "set_categories.txt"))
    rows = m.subactions.select(["video_id", "gym288_split"]).to_pylist()
    val_ids = {p.video_id for p in plan_dataset(SEPARATE) if p.val}
    assert {r["video_id"] for r in rows if r["gym288_split"] == "val"} == val_ids
    assert all(r["video_id"] not in val_ids for r in rows if r["gym288_split"] == "train")
    assert set(json.loads((ann / ANNOTATIONS).read_text())) == {p.video_id for p in plan_dataset(SEPARATE)}


def test_val_videos_are_rendered_from_their_seed(tmp_path):
    """Another seed draws other athletes' colours, backdrops and camera: the same plan
    rendered with the val seed is another video."""
    small = replace(SEPARATE, videos=2, events_per_video=[1, 1], subactions_per_event=[1, 1], idle_range_s=[0.5, 0.5],
                    val_fraction=0.5, mens_event_fraction=0.0)
    val = next(p for p in plan_dataset(small) if p.val)
    a = Path(render_video(val, small, str(tmp_path / "a.mp4"))).read_bytes()
    b = Path(render_video(replace(val, seed=small.seed), small, str(tmp_path / "b.mp4"))).read_bytes()
    assert a != b


@pytest.mark.parametrize("bad, msg", [(dict(val_videos_seed=3), "val_videos_seed"),
                                      (dict(val_videos_seed=-1), "val_videos_seed"),
                                      (dict(val_videos_seed=4, videos=1), "val_videos_seed"),
                                      (dict(val_videos_seed=4, val_fraction=0.0), "val_videos_seed")])
def test_bad_val_videos_are_refused(bad, msg):
    with pytest.raises(ValueError, match=msg):
        replace(BASE, **bad)
