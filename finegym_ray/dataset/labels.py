"""Label views: which class a sub-action belongs to for each task of the paper.

A task maps a sub-action to a contiguous class id:
- ``event``: the 4 women's events (VT, FX, BB, UB) -> 0..3.
- ``set``: the sets of the set categories file, in id order -> 0..14 for FineGym.
- ``gym99``, ``gym288``, ``gym530`` (any loaded subset): the element's label in that subset.
- the paper's sub-tasks, over the Gym99 classes: within-event ``vt`` (6 classes) and
  ``fx`` (35), within-set ``fx_s1`` (FX leap-jump-hop, 11) and ``ub_s1`` (UB circles, 15),
  relabelled contiguously in Gym99 label order.

Element labels travel as Glabels (Gym530 ids), the one id shared by every subset.
"""

from __future__ import annotations

from dataclasses import dataclass

from .annotations import EVENT_NAMES
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

TASK_NAMES = ("event", "set", "gym99", "gym288", "gym530", *SUB_TASKS)


@dataclass(frozen=True)
class LabelView:
    """Class ids of one task. ``by_glabel`` maps Glabels to class ids (element tasks);
    ``by_event`` / ``by_set`` do the same for the event and set tasks."""

    task: str
    class_names: tuple[str, ...]
    by_glabel: dict[int, int] | None = None
    by_event: dict[int, int] | None = None
    by_set: dict[int, int] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def label(self, *, event: int | None = None, set_id: int | None = None,
              glabel: int | None = None) -> int | None:
        """The class id of a sub-action in this task, or None if the task does not cover it."""
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
        return LabelView(task, tuple(EVENT_NAMES.values()), by_event={e: i for i, e in enumerate(EVENT_NAMES)})
    if task == "set":
        if not sets:
            raise ValueError("the 'set' task needs the set categories file")
        ordered = sorted(sets, key=lambda s: s.set_id)
        return LabelView(task, tuple(s.name for s in ordered), by_set={s.set_id: i for i, s in enumerate(ordered)})
    sub = SUB_TASKS.get(task)
    base = sub.base if sub else task
    if base not in subsets:
        known = ", ".join(TASK_NAMES)
        if sub is None and not base.startswith("gym"):
            raise ValueError(f"unknown task {task!r}; tasks: {known}")
        raise ValueError(f"task {task!r} needs the {base} categories file (loaded: {sorted(subsets) or 'none'})")
    classes = subsets[base].classes
    if sub is not None:
        classes = tuple(c for c in classes
                        if (sub.event is None or c.event == sub.event)
                        and (sub.set_id is None or c.set_id == sub.set_id))
        if not classes:
            raise ValueError(f"task {task!r}: the {base} categories have no class in it")
    return LabelView(task, tuple(c.name for c in classes), by_glabel={c.glabel: i for i, c in enumerate(classes)})
