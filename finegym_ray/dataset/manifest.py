"""The manifest: FineGym annotations, categories and splits joined into Arrow tables.

``build_manifest`` reads the files, ``write_manifest`` stores under one URI:
- ``events.parquet``: one row per event (routine), men's events included.
- ``subactions.parquet``: one row per sub-action with absolute times, stage times,
  split and element labels where a split file gives them.
- ``categories.parquet``: the element classes of every loaded subset and the sets, so
  that training can build any label view from the manifest alone.
- ``unmatched_keys.parquet``: split keys the annotations do not have, with the reason.
- ``summary.json``: the counts printed by ``format_summary``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import pyarrow as pa

from .. import storage
from .annotations import Event, parse_annotations
from .categories import (ElementCategories, ElementCategory, SetCategory, parse_element_categories,
                         parse_set_categories)
from .errors import FormatError
from .keys import legacy_subaction_id, instance_key, parse_instance_key
from .splits import parse_split, split_name_from_path, subset_from_path

EXAMPLES = 5  # unmatched keys shown in the summary; all of them go to unmatched_keys.parquet


@dataclass(frozen=True)
class SplitSpec:
    """A split file and what its labels mean: split name and the subset they index."""

    path: str
    split: str
    subset: str


@dataclass
class Manifest:
    events: pa.Table
    subactions: pa.Table
    categories: pa.Table
    unmatched: pa.Table
    summary: dict[str, Any] = field(default_factory=dict)


def parse_split_spec(spec: str, subsets: Sequence[str]) -> SplitSpec:
    """``[SPLIT=]PATH``: the split name defaults to train/val/test found in the file name,
    the subset to the ``gymNN_`` prefix of the file name, else the first loaded subset."""
    name, sep, path = spec.partition("=")
    if not sep or "/" in name or ":" in name:
        name, path = "", spec
    split = name or split_name_from_path(path)
    if not split:
        raise ValueError(f"cannot tell the split of {path!r} from its name: pass it as train={path}")
    subset = subset_from_path(path)
    if subset is None or subset not in subsets:
        if subset is not None:
            raise ValueError(f"{path} holds {subset} labels but no {subset} categories file was given")
        if not subsets:
            raise ValueError(f"{path}: split labels need a categories file (--categories)")
        subset = subsets[0]
    return SplitSpec(path, split, subset)


def build_manifest(
    annotations: str,
    categories: Sequence[str],
    splits: Sequence[str],
    sets: str | None = None,
) -> Manifest:
    """Read the FineGym files (local paths or URIs) and join them.

    ``splits`` are ``[SPLIT=]PATH`` specs (see :func:`parse_split_spec`). Raises
    FormatError for a file that does not parse and for a key given two labels; split
    keys missing from the annotations are reported, not raised.
    """
    set_cats = parse_set_categories(storage.read_text(sets), sets) if sets else None
    set_map = {s.set_id: s for s in set_cats} if set_cats else None
    subsets: dict[str, ElementCategories] = {}
    for path in categories:
        cats = parse_element_categories(storage.read_text(path), path, set_map)
        if cats.subset in subsets:
            raise FormatError(path, None, f"a second {cats.subset} categories file")
        subsets[cats.subset] = cats
    events = parse_annotations(storage.read_text(annotations), annotations)
    specs = [parse_split_spec(s, list(subsets)) for s in splits]

    labels, unmatched = _match_splits(events, subsets, specs)
    return Manifest(
        events=_events_table(events),
        subactions=_subactions_table(events, subsets, labels),
        categories=_categories_table(subsets, set_cats),
        unmatched=pa.Table.from_pylist(unmatched, schema=_UNMATCHED_SCHEMA),
        summary=_summary(events, subsets, specs, labels, unmatched),
    )


# key -> (split, glabel, set_id, where) for every matched split line
_Labels = dict[str, tuple[str, int, int, str]]


def _match_splits(events: list[Event], subsets: dict[str, ElementCategories],
                  specs: list[SplitSpec]) -> tuple[_Labels, list[dict[str, Any]]]:
    keys = {s.key for ev in events for s in ev.subactions or ()}
    event_keys = {ev.key for ev in events}
    video_ids = {ev.video_id for ev in events}
    # Split files made before 16 April 2020 ended vault keys at the first stage.
    legacy = {}
    for ev in events:
        for s in ev.subactions or ():
            old = instance_key(s.video_id, s.event_id, legacy_subaction_id(s.stages))
            if old not in keys:
                legacy[old] = s.key

    labels: _Labels = {}
    unmatched: list[dict[str, Any]] = []
    for spec in specs:
        cats = subsets[spec.subset]
        for entry in parse_split(storage.read_text(spec.path), spec.path, cats.num_classes):
            where = f"{spec.path}:{entry.line}"
            if entry.key not in keys:
                parsed = parse_instance_key(entry.key)
                if entry.key in legacy:
                    reason = "pre-2020-04-16 vault key (end of first stage); current key given"
                elif parsed.video_id not in video_ids:
                    reason = "video not in the annotations"
                elif parsed.event_key not in event_keys:
                    reason = "event not in the annotations"
                else:
                    reason = "sub-action not in the event"
                unmatched.append(dict(key=entry.key, file=spec.path, line=entry.line, label=entry.label,
                                      split=spec.split, reason=reason, current_key=legacy.get(entry.key)))
                continue
            cat = cats.classes[entry.label]
            prev = labels.get(entry.key)
            if prev is not None and (prev[0], prev[1]) != (spec.split, cat.glabel):
                raise FormatError(spec.path, entry.line,
                                  f"{entry.key} is {spec.split}/Glabel {cat.glabel} here but "
                                  f"{prev[0]}/Glabel {prev[1]} at {prev[3]}")
            labels.setdefault(entry.key, (spec.split, cat.glabel, cat.set_id, where))
    return labels, unmatched


_UNMATCHED_SCHEMA = pa.schema([
    ("key", pa.string()), ("file", pa.string()), ("line", pa.int32()), ("label", pa.int32()),
    ("split", pa.string()), ("reason", pa.string()), ("current_key", pa.string()),
])


def _events_table(events: list[Event]) -> pa.Table:
    return pa.Table.from_pylist([
        dict(event_key=ev.key, video_id=ev.video_id, event_id=ev.event_id, event_label=ev.label,
             event_name=ev.name, start_s=ev.start_s, end_s=ev.end_s,
             has_subactions=ev.subactions is not None, num_subactions=len(ev.subactions or ()))
        for ev in events
    ], schema=pa.schema([
        ("event_key", pa.string()), ("video_id", pa.string()), ("event_id", pa.string()),
        ("event_label", pa.int16()), ("event_name", pa.string()), ("start_s", pa.float64()),
        ("end_s", pa.float64()), ("has_subactions", pa.bool_()), ("num_subactions", pa.int32()),
    ]))


def subset_label_column(subset: str) -> str:
    """Name of the subactions column holding labels of ``subset`` (e.g. ``gym99_label``)."""
    return f"{subset}_label"


def _subactions_table(events: list[Event], subsets: dict[str, ElementCategories], labels: _Labels) -> pa.Table:
    by_glabel = {name: cats.by_glabel() for name, cats in subsets.items()}
    rows = []
    for ev in events:
        for s in ev.subactions or ():
            split, glabel, set_id, _ = labels.get(s.key, (None, None, None, None))
            row = dict(
                key=s.key, video_id=s.video_id, event_id=s.event_id, event_key=ev.key,
                subaction_id=s.subaction_id, event_label=ev.label, event_name=ev.name,
                event_start_s=ev.start_s, event_end_s=ev.end_s,
                start_s=s.start_s, end_s=s.end_s, rel_start_s=s.rel_start_s, rel_end_s=s.rel_end_s,
                num_stages=len(s.stages),
                stage_start_s=[ev.start_s + a for a, _ in s.stages],
                stage_end_s=[ev.start_s + b for _, b in s.stages],
                split=split, glabel=glabel, set_id=set_id,
            )
            for name, table in by_glabel.items():
                cat = table.get(glabel) if glabel is not None else None
                row[subset_label_column(name)] = None if cat is None else cat.label
            rows.append(row)
    schema = pa.schema([
        ("key", pa.string()), ("video_id", pa.string()), ("event_id", pa.string()),
        ("event_key", pa.string()), ("subaction_id", pa.string()), ("event_label", pa.int16()),
        ("event_name", pa.string()), ("event_start_s", pa.float64()), ("event_end_s", pa.float64()),
        ("start_s", pa.float64()), ("end_s", pa.float64()), ("rel_start_s", pa.float64()),
        ("rel_end_s", pa.float64()), ("num_stages", pa.int8()),
        ("stage_start_s", pa.list_(pa.float64())), ("stage_end_s", pa.list_(pa.float64())),
        ("split", pa.string()), ("glabel", pa.int32()), ("set_id", pa.int32()),
        *[(subset_label_column(name), pa.int32()) for name in subsets],
    ])
    return pa.Table.from_pylist(rows, schema=schema)


_CATEGORIES_SCHEMA = pa.schema([
    ("subset", pa.string()), ("label", pa.int32()), ("glabel", pa.int32()),
    ("set_id", pa.int32()), ("event_label", pa.int16()), ("name", pa.string()),
])


def _categories_table(subsets: dict[str, ElementCategories], sets: list[SetCategory] | None) -> pa.Table:
    """Element classes per subset, plus the sets as rows of subset ``sets`` (label = set id)."""
    rows = [dict(subset=name, label=c.label, glabel=c.glabel, set_id=c.set_id, event_label=c.event, name=c.name)
            for name, cats in subsets.items() for c in cats.classes]
    rows += [dict(subset="sets", label=s.set_id, glabel=None, set_id=s.set_id, event_label=s.event, name=s.name)
             for s in sets or ()]
    return pa.Table.from_pylist(rows, schema=_CATEGORIES_SCHEMA)


def _summary(events: list[Event], subsets: dict[str, ElementCategories], specs: list[SplitSpec],
             labels: _Labels, unmatched: list[dict[str, Any]]) -> dict[str, Any]:
    per_event: dict[str, dict[str, int]] = {}
    for ev in events:
        c = per_event.setdefault(ev.name, {"events": 0, "subactions": 0, "labelled": 0})
        c["events"] += 1
        c["subactions"] += len(ev.subactions or ())
        c["labelled"] += sum(s.key in labels for s in ev.subactions or ())
    per_split = Counter(split for split, *_ in labels.values())
    per_set = Counter(set_id for _, _, set_id, _ in labels.values())
    reasons = Counter(u["reason"] for u in unmatched)
    return {
        "videos": len({ev.video_id for ev in events}),
        "events": len(events),
        "events_without_subactions": sum(ev.subactions is None for ev in events),
        "subactions": sum(len(ev.subactions or ()) for ev in events),
        "labelled_subactions": len(labels),
        "per_event": dict(sorted(per_event.items())),
        "per_split": dict(sorted(per_split.items())),
        "per_set": {str(k): v for k, v in sorted(per_set.items())},
        "subsets": {name: cats.num_classes for name, cats in subsets.items()},
        "split_files": [{"path": s.path, "split": s.split, "subset": s.subset} for s in specs],
        "unmatched_keys": len(unmatched),
        "unmatched_reasons": dict(reasons),
        "unmatched_examples": [f"{u['key']} ({u['file']}:{u['line']}: {u['reason']})" for u in unmatched[:EXAMPLES]],
    }


def write_manifest(manifest: Manifest, out: str) -> dict[str, str]:
    """Write the manifest tables and summary under ``out`` (local folder or s3:// prefix).

    Returns name -> URI of what was written. Each object is written atomically.
    """
    written = {}
    for name, table in [("events", manifest.events), ("subactions", manifest.subactions),
                        ("categories", manifest.categories), ("unmatched_keys", manifest.unmatched)]:
        uri = storage.join(out, f"{name}.parquet")
        storage.write_parquet(table, uri)
        written[name] = uri
    written["summary"] = storage.join(out, "summary.json")
    storage.write_text(written["summary"], json.dumps(manifest.summary, indent=2) + "\n")
    return written


def load_manifest(out: str) -> Manifest:
    """Read back a manifest written by :func:`write_manifest`."""
    return Manifest(
        events=storage.read_parquet(storage.join(out, "events.parquet")),
        subactions=storage.read_parquet(storage.join(out, "subactions.parquet")),
        categories=storage.read_parquet(storage.join(out, "categories.parquet")),
        unmatched=storage.read_parquet(storage.join(out, "unmatched_keys.parquet")),
        summary=json.loads(storage.read_text(storage.join(out, "summary.json"))),
    )


def categories_from_table(table: pa.Table) -> tuple[dict[str, ElementCategories], list[SetCategory]]:
    """The subsets and sets stored in ``categories.parquet``, for :func:`labels.label_view`."""
    subsets: dict[str, list[ElementCategory]] = {}
    sets: list[SetCategory] = []
    for row in table.to_pylist():
        if row["subset"] == "sets":
            sets.append(SetCategory(row["set_id"], row["name"]))
        else:
            subsets.setdefault(row["subset"], []).append(
                ElementCategory(row["label"], row["set_id"], row["glabel"], row["name"]))
    return {k: ElementCategories(k, tuple(v)) for k, v in subsets.items()}, sets


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable summary lines of a manifest."""
    lines = [
        f"videos {summary['videos']}, events {summary['events']} "
        f"({summary['events_without_subactions']} without sub-actions), "
        f"sub-actions {summary['subactions']} ({summary['labelled_subactions']} labelled)",
        "per event: " + ", ".join(
            f"{name} {c['events']} events / {c['subactions']} sub-actions / {c['labelled']} labelled"
            for name, c in summary["per_event"].items()),
        "per split: " + (", ".join(f"{k} {v}" for k, v in summary["per_split"].items()) or "none"),
        "per set: " + (", ".join(f"{k}: {v}" for k, v in summary["per_set"].items()) or "none"),
        "subsets: " + (", ".join(f"{k} ({v} classes)" for k, v in summary["subsets"].items()) or "none"),
    ]
    n = summary["unmatched_keys"]
    if n:
        lines.append(f"WARNING: {n} split keys do not match the annotations: "
                     + "; ".join(f"{r}: {c}" for r, c in summary["unmatched_reasons"].items()))
        lines += [f"  e.g. {e}" for e in summary["unmatched_examples"]]
        lines.append("  (all of them are listed in unmatched_keys.parquet)")
    else:
        lines.append("unmatched split keys: 0")
    return "\n".join(lines)


_SPLIT_FILE = re.compile(r"^gym\d+_(train|val|test)_element.*\.txt$")
_CATEGORY_FILE = re.compile(r"^gym\d+_categories\.txt$")


def build_manifest_from(annotations: str) -> Manifest:
    """The manifest of a FineGym annotation folder, or of a bare annotation JSON file.

    In a folder (local or ``s3://``): ``finegym_annotation_info_v1.1.json`` (else v1.0),
    every ``gymNNN_categories.txt``, ``set_categories.txt`` when present, and every
    ``gymNNN_{train,val,test}_element*.txt`` split file. A bare JSON gives events and
    sub-actions without element labels (enough to preprocess).
    """
    if annotations.endswith(".json"):
        return build_manifest(annotations, categories=[], splits=[])
    names = {uri.rsplit("/", 1)[-1]: uri for uri in storage.list_uris(annotations)}
    json_name = next((n for n in ("finegym_annotation_info_v1.1.json", "finegym_annotation_info_v1.0.json")
                      if n in names), None)
    if json_name is None:
        raise FileNotFoundError(storage.join(annotations, "finegym_annotation_info_v1.1.json"))
    return build_manifest(
        names[json_name],
        categories=[names[n] for n in sorted(names) if _CATEGORY_FILE.match(n)],
        splits=[names[n] for n in sorted(names) if _SPLIT_FILE.match(n)],
        sets=names.get("set_categories.txt"),
    )
