"""Label views: which class a clip belongs to for each task of the paper.

A task maps a clip to a contiguous class id. ``event`` classifies whole routines
(action instances, the clips of kind ``event``); every other task classifies sub-actions
(clips of kind ``subaction``):
- ``event``: the paper's event-level recognition, a routine -> one of FineGym's 10
  events: 1 VT, 2 FX, 3 BB, 4 UB (women's) -> 0..3, and the men's events, annotation
  ids 5..10 (FX, PH, SR, VT, PB, HB in some order FineGym's documentation does not
  give: named ``event_5`` .. ``event_10`` as in the manifest) -> 4..9.
- ``subaction_event``: a sub-action -> the women's event of its routine (VT, FX, BB,
  UB) -> 0..3. (Called ``event`` before the routine-level task took that name: see
  ``train.config.TASK_VERSION``.)
- ``set``: the sets of the set categories file, in id order -> 0..14 for FineGym.
- ``gym99``, ``gym288``, ``gym530`` (any loaded subset): the element's label in that subset.
- the paper's sub-tasks, over the Gym99 classes: within-event ``vt`` (6 classes) and
  ``fx`` (35), within-set ``fx_s1`` (FX leap-jump-hop, 11) and ``ub_s1`` (UB circles, 15),
  relabelled contiguously in Gym99 label order.

Element labels travel as Glabels (Gym530 ids), the one id shared by every subset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import InputError
from .annotations import EVENT_NAMES, event_name
from .categories import ElementCategories, SetCategory


@dataclass(frozen=True)
class SubTask:
    """A paper sub-task: the classes of ``base`` restricted to one event or one set."""

    name: str
    base: str
    event: int | None = None
    set_id: int | None = None


SUB_TASKS = {
    "vt": SubTask("vt", "gym99", event=1),
    "fx": SubTask("fx", "gym99", event=2),
    "fx_s1": SubTask("fx_s1", "gym99", set_id=21),
    "ub_s1": SubTask("ub_s1", "gym99", set_id=41),
}

TASK_NAMES = ("event", "subaction_event", "set", "gym99", "gym288", "gym530", *SUB_TASKS)

# The routine-level task's classes: FineGym's 10 event ids in the annotation JSON (1-4
# the women's events, 5-10 the men's; FINEGYM.md).
EVENT_IDS = tuple(range(1, 11))

# Share of each event's routines in the ``val`` split of the event task. FineGym's split
# files list sub-actions only (train and val share whole routines), so routines get a
# split of their own; 0.25 is about Gym99's (8,521 val of 34,841 keys in v1.1).
EVENT_VAL_FRACTION = 0.25


def task_kind(task: str) -> str:
    """The clip kind a task classifies: ``event`` (whole routines) for the event task,
    ``subaction`` for every other."""
    return "event" if task == "event" else "subaction"


def routine_splits(routines: Iterable[tuple[str, int]], val_fraction: float = EVENT_VAL_FRACTION) -> dict[str, str]:
    """Event key -> ``train`` or ``val`` for routines given as (event key, event id).

    Per event, the routines are ordered by a hash of their key (the same on every
    machine and run) and the first round(``val_fraction`` x n) go to val, at least one
    where an event has two routines or more (a lone routine trains). Stratified, so
    that every event with two routines is in both splits."""
    by_event: dict[int, list[str]] = {}
    for key, event in routines:
        by_event.setdefault(event, []).append(key)
    splits = {}
    for keys in by_event.values():
        ordered = sorted(set(keys), key=lambda k: (hashlib.sha256(k.encode()).hexdigest(), k))
        n_val = 0 if len(ordered) < 2 else max(1, int(round(val_fraction * len(ordered))))
        splits.update({k: "val" if i < n_val else "train" for i, k in enumerate(ordered)})
    return splits


@dataclass(frozen=True)
class LabelView:
    """Class ids of one task. ``by_glabel`` maps Glabels to class ids (element tasks);
    ``by_event`` / ``by_set`` do the same for the event tasks and the set task."""

    task: str
    class_names: tuple[str, ...]
    by_glabel: dict[int, int] | None = None
    by_event: dict[int, int] | None = None
    by_set: dict[int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def kind(self) -> str:
        """The clip kind this task classifies (``task_kind``)."""
        return task_kind(self.task)

    def label(self, *, event: int | None = None, set_id: int | None = None,
              glabel: int | None = None) -> int | None:
        """The class id of a clip in this task (a routine: its ``event`` alone), or None
        if the task does not cover it."""
        if self.by_event is not None:
            return None if event is None else self.by_event.get(event)
        if self.by_set is not None:
            return None if set_id is None else self.by_set.get(set_id)
        assert self.by_glabel is not None
        return None if glabel is None else self.by_glabel.get(glabel)


def label_view(
    task: str,
    subsets: dict[str, ElementCategories],
    sets: list[SetCategory] | None = None,
) -> LabelView:
    """Build the view for ``task`` from the loaded subsets (name -> categories) and sets.

    Raises ValueError naming what is missing (e.g. the gym99 categories for ``fx_s1``).
    """
    if task == "event":
        return LabelView(task, tuple(event_name(e) for e in EVENT_IDS),
                         by_event={e: i for i, e in enumerate(EVENT_IDS)})
    if task == "subaction_event":
        return LabelView(task, tuple(EVENT_NAMES.values()), by_event={e: i for i, e in enumerate(EVENT_NAMES)})
    if task == "set":
        if not sets:
            raise InputError("the 'set' task needs the set categories file")
        ordered = sorted(sets, key=lambda s: s.set_id)
        return LabelView(task, tuple(s.name for s in ordered), by_set={s.set_id: i for i, s in enumerate(ordered)})
    sub = SUB_TASKS.get(task)
    base = sub.base if sub else task
    if base not in subsets:
        known = ", ".join(TASK_NAMES)
        if sub is None and not base.startswith("gym"):
            raise InputError(f"unknown task {task!r}; tasks: {known}")
        raise InputError(f"task {task!r} needs the {base} categories file (loaded: {sorted(subsets) or 'none'})")
    classes = subsets[base].classes
    if sub is not None:
        classes = tuple(c for c in classes
                        if (sub.event is None or c.event == sub.event)
                        and (sub.set_id is None or c.set_id == sub.set_id))
        if not classes:
            raise InputError(f"task {task!r}: the {base} categories have no class in it")
    return LabelView(task, tuple(c.name for c in classes), by_glabel={c.glabel: i for i, c in enumerate(classes)})
