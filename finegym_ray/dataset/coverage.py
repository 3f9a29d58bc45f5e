"""What the videos (or clips) at hand cover of FineGym's labelled keys, per task and split.

FineGym's videos are YouTube ids and some are gone: a missing video takes every key of
its routines out of every subset and split that lists them. :func:`coverage` counts,
for each task of ``COVERAGE_TASKS`` that the manifest can label and each of its splits,
the labelled keys that are present and those that are missing, given either the video
ids at hand (``check``, ``download``) or the clip keys cut (preprocessing's summary).
:func:`task_labels` is the one place that says which keys a task labels in which split;
training reads its labels through it too (``train/data.py``), so the counts here are
the clips training and evaluation would use.

No Ray, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa

from ..errors import InputError
from .labels import SUB_TASKS, label_view, routine_splits
from .manifest import Manifest, categories_from_table, subset_split_column

# The tasks a coverage report covers: the three element subsets, the sets, and whole
# routines (the event task). The sub-tasks (vt, fx, ...) are parts of gym99.
COVERAGE_TASKS = ("gym99", "gym288", "gym530", "set", "event")


def task_labels(task: str, *, subactions: pa.Table, events: pa.Table,
                categories: pa.Table) -> dict[str, dict[str, int]]:
    """split -> {key: class id} of ``task`` over the manifest's tables.

    An element task (gym99, gym288, ..., and the sub-tasks over gym99) takes the keys
    that its subset's own split files list (``<subset>_split``); the subaction_event and
    set tasks every key listed by any file (``split``); the event task labels routines
    (event keys, men's included) in the split ``labels.routine_splits`` gives them,
    leaving out event ids outside its classes. InputError when the categories cannot
    build the task (``labels.label_view``) or the sub-action table lacks the split
    column (a manifest written by an older version)."""
    subsets, sets = categories_from_table(categories)
    view = label_view(task, subsets, sets)
    out: dict[str, dict[str, int]] = {}
    if view.kind == "event":
        rows = events.select(["event_key", "event_label"]).to_pylist()
        splits = routine_splits((r["event_key"], r["event_label"]) for r in rows)
        for r in rows:
            y = view.label(event=r["event_label"])
            if y is not None:
                out.setdefault(splits[r["event_key"]], {})[r["event_key"]] = y
        return out
    base = SUB_TASKS[task].base if task in SUB_TASKS else task
    column = subset_split_column(base) if view.by_glabel is not None else "split"
    if column not in subactions.column_names:
        raise InputError(f"the manifest's sub-actions have no {column} column: it was written before a subset's "
                         f"labels came from its own split files only; run preprocessing again to rewrite it")
    for r in subactions.select(["key", column, "event_label", "set_id", "glabel"]).to_pylist():
        if r[column] is None:
            continue
        y = view.label(event=r["event_label"], set_id=r["set_id"], glabel=r["glabel"])
        if y is not None:
            out.setdefault(r[column], {})[r["key"]] = y
    return out


@dataclass(frozen=True)
class Coverage:
    """One task and split: ``labelled`` keys, of which ``present`` are at hand;
    ``missing_videos``: how many videos the missing ones come from."""

    task: str
    split: str
    labelled: int
    present: int
    missing_videos: int

    @property
    def missing(self) -> int:
        return self.labelled - self.present

    @property
    def percent(self) -> float:
        """Present keys as a percentage of the labelled ones (100 when none is labelled)."""
        return 100.0 * self.present / self.labelled if self.labelled else 100.0

    @classmethod
    def from_record(cls, record: dict) -> Coverage:
        """The row a :meth:`record` holds."""
        return cls(record["task"], record["split"], record["labelled"], record["present"], record["missing_videos"])

    def record(self) -> dict:
        """The row as JSON and CSV take it: the fields, ``missing`` and ``percent`` (rounded to 0.1)."""
        return {**asdict(self), "missing": self.missing, "percent": round(self.percent, 1)}


def coverage(manifest: Manifest, *, videos: Iterable[str] | None = None, keys: Iterable[str] | None = None,
             tasks: Sequence[str] = COVERAGE_TASKS) -> list[Coverage]:
    """Per task of ``tasks`` and split (in that order; splits sorted), the labelled keys
    present and missing.

    ``manifest``: what ``dataset.manifest.build_manifest_from(annotations)`` or
    ``load_manifest`` gives. Give exactly one of ``videos`` (the video ids at hand: a
    key is present when its video is) or ``keys`` (the clip keys cut: sub-action keys,
    and event keys for the event task's routines). A task the manifest cannot label
    (no gym288 categories, no set categories, no split file of the subset) has no rows;
    the event task needs no split file."""
    if (videos is None) == (keys is None):
        raise InputError("coverage takes the videos at hand or the clip keys cut: give exactly one")
    video_of = dict(zip(manifest.subactions.column("key").to_pylist(),
                        manifest.subactions.column("video_id").to_pylist()))
    video_of.update(zip(manifest.events.column("event_key").to_pylist(),
                        manifest.events.column("video_id").to_pylist()))
    if videos is not None:
        at_hand = set(videos)
        present = {k for k, v in video_of.items() if v in at_hand}
    else:
        present = set(keys)
    rows = []
    for task in tasks:
        try:
            by_split = task_labels(task, subactions=manifest.subactions, events=manifest.events,
                                   categories=manifest.categories)
        except InputError:
            continue
        for split, labels in sorted(by_split.items()):
            missing = set(labels) - present
            rows.append(Coverage(task, split, len(labels), len(labels) - len(missing),
                                 len({video_of.get(k) for k in missing})))
    return rows


def format_coverage(rows: list[Coverage], *, present: str = "present") -> str:
    """A table of ``rows``, one line each, thousands separated; ``present`` names the
    column of keys at hand (e.g. ``cuttable``, ``cut``). One line saying so when there
    are no rows."""
    if not rows:
        return "no labelled keys"
    head = f"{'task':<8} {'split':<6} {present:>9} {'labelled':>9} {'missing':>9} {'share':>7}  missing from"
    lines = [head]
    for r in rows:
        source = f"{r.missing_videos} video{'s' if r.missing_videos != 1 else ''}" if r.missing else ""
        lines.append(f"{r.task:<8} {r.split:<6} {r.present:>9,} {r.labelled:>9,} {r.missing:>9,} "
                     f"{r.percent:>6.1f}%  {source}".rstrip())
    return "\n".join(lines)
