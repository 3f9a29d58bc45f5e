"""``generate``: SynGym's annotations (FineGym's exact file formats) and videos.

Writes under ``out``:
- ``annotations/finegym_annotation_info_v1.1.json``, ``set_categories.txt``,
  ``gym99/gym288/gym530_categories.txt``, ``gym99_train_element_v1.1.txt``,
  ``gym99_val_element.txt``, ``gym288_train_element_v1.1.txt``, ``gym288_val_element.txt``,
  formatted by the same functions the parsers are tested against;
- ``annotations/syngym_element_attributes.json``: each Glabel's attribute path (the
  decision-tree analogue), with which attributes a single frame can show;
- ``annotations/gym_2d.pkl``: every sub-action's 2-D poses as drawn (COCO-17 joints in
  pixels, as a pose estimator reports them: ``poses.py``), in mmaction2's layout of
  FineGym's poses (``dataset/poses.py``); labels are Glabels, the splits those of the
  split files;
- ``videos/<video_id>.mp4``: H.264, yuv420p;
- ``syngym.yaml``: the config, written last: its presence marks a complete dataset.

With ``val_videos_seed`` the val split is videos of its own (planned and rendered from
that seed), written in the same files: one annotation file for all videos, and split
files in which each video's keys are all train or all val.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import to_yaml
from ..dataset.annotations import Event, SubAction, format_annotations
from ..dataset.categories import format_element_categories, format_set_categories
from ..dataset.keys import event_id, instance_key, subaction_id
from ..dataset.poses import write_pose_pickle
from ..dataset.splits import format_split
from ..errors import InputError
from .config import SynthConfig
from .render import render_video_poses
from .schedule import VideoPlan, plan_video
from .taxonomy import SET_FAMILIES, Element, build_elements, element_categories, set_categories

CONFIG_FILE = "syngym.yaml"
ANNOTATIONS = "finegym_annotation_info_v1.1.json"
POSES = "gym_2d.pkl"  # mmaction2's name for FineGym's
SPLIT_FILES = {("gym99", "train"): "gym99_train_element_v1.1.txt", ("gym99", "val"): "gym99_val_element.txt",
               ("gym288", "train"): "gym288_train_element_v1.1.txt", ("gym288", "val"): "gym288_val_element.txt"}

MapFn = Callable[..., list]


@dataclass(frozen=True)
class SynthSummary:
    videos: int
    hours: float
    frames: int
    events: int
    mens_events: int
    subactions: int
    labelled: dict[str, int]  # split -> labelled sub-actions (Gym288 keys)
    classes_seen: int  # Gym530 classes with at least one instance
    seconds: float  # wall time
    val_videos: int = 0  # videos of the val split's own (val_videos_seed), 0: val shares the videos

    def describe(self) -> str:
        split = ", ".join(f"{k} {v}" for k, v in sorted(self.labelled.items()))
        if self.val_videos:
            split += f" (val: {self.val_videos} videos of its own)"
        return (f"{self.videos} videos ({self.hours * 60:.1f} min, {self.frames} frames), {self.events} routines "
                f"({self.mens_events} men's, without sub-actions), {self.subactions} sub-actions "
                f"({self.classes_seen} of 530 element classes), labelled: {split}; {self.seconds:.1f} s")


def plan_dataset(config: SynthConfig) -> list[VideoPlan]:
    """The plans of every video; cheap (no pixels), deterministic per config. With
    ``val_videos_seed`` the last ``config.val_videos`` are the val split's own videos,
    drawn from that seed; the others are the first videos of the dataset without it."""
    elements = build_elements()
    n_train = config.videos - config.val_videos
    plans = [plan_video(config, i, elements) for i in range(n_train)]
    plans += [plan_video(config, i, elements, seed=config.val_videos_seed, val=True)
              for i in range(n_train, config.videos)]
    ids = [p.video_id for p in plans]
    if len(set(ids)) < len(ids):  # two videos would share one file and one key prefix
        raise InputError("synth config: two videos drew the same id; change seed or val_videos_seed")
    return plans


def annotation_events(plans: Sequence[VideoPlan]) -> list[Event]:
    """The plans as the annotation parser's records."""
    events = []
    for plan in plans:
        for ev in plan.events:
            eid = event_id(ev.start_s, ev.end_s)
            subs = None
            if ev.subactions is not None:
                subs = tuple(SubAction(plan.video_id, eid, subaction_id(s.stages), ev.start_s, s.stages)
                             for s in ev.subactions)
            events.append(Event(plan.video_id, eid, ev.label, ev.start_s, ev.end_s, subs))
    return events


def assign_splits(plans: Sequence[VideoPlan], val_fraction: float, seed: int) -> dict[str, tuple[str, int]]:
    """key -> (split, glabel) for every sub-action: per class, ``val_fraction`` of the
    instances (at least one when a class has two or more) go to val. Train and val share
    videos and routines, as in FineGym. Where plans are marked ``val`` (the val split's
    own videos), their sub-actions are val and all others train."""
    by_class: dict[int, list[str]] = defaultdict(list)
    by_video: dict[str, tuple[str, int]] = {}
    separate = any(plan.val for plan in plans)
    for plan in plans:
        for ev in plan.events:
            for s in ev.subactions or ():
                key = instance_key(plan.video_id, event_id(ev.start_s, ev.end_s), subaction_id(s.stages))
                by_class[s.glabel].append(key)
                by_video[key] = ("val" if plan.val else "train", s.glabel)
    if separate:
        return by_video
    rng = np.random.default_rng([seed, 1 << 20])
    out = {}
    for glabel in sorted(by_class):
        keys = sorted(by_class[glabel])
        rng.shuffle(keys)
        n_val = 0 if len(keys) < 2 else max(1, int(round(val_fraction * len(keys))))
        for i, key in enumerate(keys):
            out[key] = ("val" if i < n_val else "train", glabel)
    return out


def write_annotations(plans: Sequence[VideoPlan], config: SynthConfig, folder: str) -> dict[str, str]:
    """Write every annotation file; returns file name -> path."""
    os.makedirs(folder, exist_ok=True)
    elements = build_elements()
    files: dict[str, str] = {}

    def put(name: str, text: str) -> None:
        path = os.path.join(folder, name)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        files[name] = path

    put(ANNOTATIONS, format_annotations(annotation_events(plans)))
    put("set_categories.txt", format_set_categories(set_categories()))
    subsets = {name: element_categories(elements, name) for name in ("gym99", "gym288", "gym530")}
    put("gym99_categories.txt", format_element_categories(subsets["gym99"]))
    put("gym288_categories.txt", format_element_categories(subsets["gym288"]))
    put("gym530_categories.txt", format_element_categories(subsets["gym530"], glabel_only=True))
    splits = assign_splits(plans, config.val_fraction, config.seed)
    for (subset, split), name in SPLIT_FILES.items():
        label_of = {c.glabel: c.label for c in subsets[subset].classes}
        put(name, format_split((key, label_of[g]) for key, (s, g) in sorted(splits.items())
                               if s == split and g in label_of))
    put("syngym_element_attributes.json", json.dumps(_attribute_paths(elements), indent=1) + "\n")
    return files


def pose_splits(plans: Sequence[VideoPlan], config: SynthConfig) -> dict[str, list[str]]:
    """split -> the sub-action keys the split files list in it (Gym288's, which hold
    Gym99's), sorted: the poses' splits, as mmaction2's file lists its Gym99 split."""
    labelled = {c.glabel for c in element_categories(build_elements(), "gym288").classes}
    out: dict[str, list[str]] = defaultdict(list)
    for key, (split, glabel) in sorted(assign_splits(plans, config.val_fraction, config.seed).items()):
        if glabel in labelled:
            out[split].append(key)
    return dict(out)


def _attribute_paths(elements: Iterable[Element]) -> dict[str, Any]:
    out = {}
    for e in elements:
        visible = {a.name for a in SET_FAMILIES[e.set_id][1] if a.visible}
        out[str(e.glabel)] = {"set": e.set_id, "family": e.family, "name": e.name,
                              "path": [{"question": k, "answer": v, "visible_in_one_frame": k in visible}
                                       for k, v in e.attributes]}
    return out


def process_map(workers: int | None = None, progress: Callable[[int, int], None] | None = None) -> MapFn:
    """A ``map`` over worker processes (one per core by default), results in input
    order; ``progress(done, total)`` is called as calls finish."""
    def run(fn: Callable[..., Any], *iterables: Iterable[Any]) -> list:
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            futures = [pool.submit(fn, *args) for args in zip(*iterables)]
            for done, _ in enumerate(as_completed(futures), start=1):
                if progress:
                    progress(done, len(futures))
            return [f.result() for f in futures]
    return run


def generate(config: SynthConfig, out: str, *, map_fn: MapFn | None = None,
             progress: Callable[[int, int], None] | None = None) -> SynthSummary:
    """Generate SynGym into the local folder ``out``; returns what was made.

    ``map_fn(fn, *iterables)`` renders the videos and returns their poses, in order
    (default: one process per core, reporting to ``progress(done, total)``; the demo
    passes Ray tasks). Everything is
    rewritten; ``out/syngym.yaml`` is removed first and written last, so it exists only
    beside a complete dataset.
    """
    config.validate()
    t0 = time.time()
    marker = os.path.join(out, CONFIG_FILE)
    if os.path.exists(marker):
        os.remove(marker)  # incomplete until written again at the end
    plans = plan_dataset(config)
    write_annotations(plans, config, os.path.join(out, "annotations"))
    video_dir = os.path.join(out, "videos")
    os.makedirs(video_dir, exist_ok=True)
    paths = [os.path.join(video_dir, f"{p.video_id}.mp4") for p in plans]
    poses = (map_fn or process_map(progress=progress))(render_video_poses, plans, [config] * len(plans), paths)
    write_pose_pickle(os.path.join(out, "annotations", POSES), [r for video in poses for r in video],
                      pose_splits(plans, config))
    with open(marker, "w") as f:
        f.write(to_yaml(config))
    return _summary(plans, config, time.time() - t0)


def _summary(plans: Sequence[VideoPlan], config: SynthConfig, seconds: float) -> SynthSummary:
    splits = assign_splits(plans, config.val_fraction, config.seed)
    labelled_glabels = {c.glabel for c in element_categories(build_elements(), "gym288").classes}
    labelled: dict[str, int] = defaultdict(int)
    for split, glabel in splits.values():
        if glabel in labelled_glabels:
            labelled[split] += 1
    events = [ev for p in plans for ev in p.events]
    return SynthSummary(
        videos=len(plans),
        hours=sum(p.duration_s for p in plans) / 3600,
        frames=sum(p.num_frames for p in plans),
        events=len(events),
        mens_events=sum(ev.subactions is None for ev in events),
        subactions=sum(len(ev.subactions or ()) for ev in events),
        labelled=dict(labelled),
        classes_seen=len({g for _, g in splits.values()}),
        seconds=seconds,
        val_videos=sum(p.val for p in plans),
    )
