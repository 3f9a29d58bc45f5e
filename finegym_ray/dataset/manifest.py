"""The manifest: FineGym annotations, categories and splits joined into Arrow tables.

``build_manifest`` reads the files, ``write_manifest`` stores under one URI:
- ``events.parquet``: one row per event (routine), men's events included.
- ``subactions.parquet``: one row per sub-action with absolute times, stage times,
  split and element labels where a split file gives them: ``split`` is the key's split
  in any loaded file (they must agree); ``<subset>_label`` and ``<subset>_split`` come
  only from that subset's own split files (a key in ``gym288_val_element.txt`` alone
  has no gym99 label, even when its element is a Gym99 class).
- ``categories.parquet``: the element classes of every loaded subset and the sets, so
  that training can build any label view from the manifest alone.
- ``unmatched_keys.parquet``: split keys the annotations do not have, with the reason.
- ``summary.json``: the counts printed by ``format_summary``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .. import storage
from ..errors import InputError
from ..store import manifest_table, summary_uri
from .annotations import Event, parse_annotations
from .categories import ElementCategories, ElementCategory, SetCategory, parse_element_categories, parse_set_categories
from .errors import FormatError
from .jsonfile import parse_json, read_json_text
from .keys import instance_key, legacy_subaction_id, parse_instance_key
from .splits import parse_split, split_name_from_path, subset_from_path

EXAMPLES = 5  # unmatched keys shown in the summary; all of them go to unmatched_keys.parquet

# Lines of FineGym's own split files (FINEGYM.md). A file with one of these names and at
# least a tenth of these lines is taken for FineGym's, and another count is warned about
# (a truncated download, another release); smaller files under these names are someone
# else's (SynGym writes its splits under FineGym's names).
FINEGYM_SPLIT_LINES = {
    "gym99_train_element_v1.0.txt": 20484, "gym99_train_element_v1.1.txt": 26320, "gym99_val_element.txt": 8521,
    "gym288_train_element_v1.0.txt": 22671, "gym288_train_element_v1.1.txt": 29334, "gym288_val_element.txt": 9646,
}


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
        raise InputError(f"cannot tell the split of {path!r} from its name: pass it as train={path}")
    subset = subset_from_path(path)
    if subset is None or subset not in subsets:
        if subset is not None:
            raise InputError(f"{path} holds {subset} labels but no {subset} categories file was given")
        if not subsets:
            raise InputError(f"{path}: split labels need a categories file (--categories)")
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
    events = parse_annotations(read_json_text(annotations), annotations)
    specs = [parse_split_spec(s, list(subsets)) for s in splits]
    _refuse_two_files_per_split(specs)

    matched = _match_splits(events, subsets, specs)
    return Manifest(
        events=_events_table(events),
        subactions=_subactions_table(events, subsets, matched),
        categories=_categories_table(subsets, set_cats),
        unmatched=pa.Table.from_pylist(matched.unmatched, schema=_UNMATCHED_SCHEMA),
        summary=_summary(events, subsets, specs, matched, set_cats),
    )


def _refuse_two_files_per_split(specs: list[SplitSpec]) -> None:
    """One file per subset and split: the v1.0 and v1.1 train files of a subset list
    different keys (v1.1 has 28 % more), and their union is neither release."""
    by_split: dict[tuple[str, str], list[str]] = {}
    for spec in specs:
        by_split.setdefault((spec.subset, spec.split), []).append(spec.path)
    for (subset, split), paths in by_split.items():
        if len(paths) > 1:
            raise InputError(f"{subset} {split}: {len(paths)} split files ({', '.join(paths)}), e.g. FineGym's "
                             f"v1.0 and v1.1: give one of them")


# key -> (split, glabel, set_id, where) for every matched split line
_Labels = dict[str, tuple[str, int, int, str]]


@dataclass
class _Matched:
    """What the split files say about the annotated sub-actions."""

    labels: _Labels  # over all files: each key's split and element (the files must agree)
    members: dict[str, dict[str, str]]  # subset -> key -> split, from that subset's own files only
    counts: dict[str, dict[str, dict[str, int]]]  # subset -> split -> files, keys listed, keys matched
    lines: dict[str, int]  # split file path -> non-blank lines
    unmatched: list[dict[str, Any]]


def _is_glabel_list(cats: ElementCategories) -> bool:
    """True for the full category list (``gym530_categories.txt``: its labels are Glabels)."""
    return all(c.label == c.glabel for c in cats.classes)


def _match_splits(events: list[Event], subsets: dict[str, ElementCategories],
                  specs: list[SplitSpec]) -> _Matched:
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
    members: dict[str, dict[str, str]] = {name: {} for name in subsets}
    counts: dict[str, dict[str, dict[str, int]]] = {}
    lines: dict[str, int] = {}
    unmatched: list[dict[str, Any]] = []
    for spec in specs:
        cats = subsets[spec.subset]
        text = storage.read_text(spec.path)
        lines[spec.path] = sum(1 for line in text.splitlines() if line.strip())
        entries = parse_split(text, spec.path, cats.num_classes)
        count = counts.setdefault(spec.subset, {}).setdefault(spec.split, {"files": 0, "keys": 0, "matched": 0})
        count["files"] += 1
        count["keys"] += len(entries)
        for entry in entries:
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
            members[spec.subset][entry.key] = spec.split
            count["matched"] += 1
    for name, cats in subsets.items():
        # FineGym has no Gym530 split files. The full list's labels are the Glabels every
        # split line carries, so without files of its own it takes every listed key, in
        # the split the listing files give. Any other subset takes only its own files' keys.
        if name not in counts and _is_glabel_list(cats):
            members[name] = {key: split for key, (split, *_) in labels.items()}
    return _Matched(labels, members, counts, lines, unmatched)


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


def subset_split_column(subset: str) -> str:
    """Name of the subactions column holding a key's split in ``subset``'s own split files
    (e.g. ``gym99_split``; null where they do not list it)."""
    return f"{subset}_split"


def _subactions_table(events: list[Event], subsets: dict[str, ElementCategories], matched: _Matched) -> pa.Table:
    by_glabel = {name: cats.by_glabel() for name, cats in subsets.items()}
    rows = []
    for ev in events:
        for s in ev.subactions or ():
            split, glabel, set_id, _ = matched.labels.get(s.key, (None, None, None, None))
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
                member = matched.members[name].get(s.key)
                cat = table.get(glabel) if member is not None else None
                row[subset_label_column(name)] = None if cat is None else cat.label
                row[subset_split_column(name)] = None if cat is None else member
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
        *[(subset_split_column(name), pa.string()) for name in subsets],
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
             matched: _Matched, sets: list[SetCategory] | None = None) -> dict[str, Any]:
    labels, unmatched = matched.labels, matched.unmatched
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
        # Per subset and split, from that subset's own files: on FineGym's, keys = their lines.
        "per_subset": {name: dict(sorted(by_split.items())) for name, by_split in matched.counts.items()},
        "count_warnings": _count_warnings(matched.lines),
        "per_set": {str(k): v for k, v in sorted(per_set.items())},
        # Names of the sets counted (set_categories.txt; without it, none).
        "set_names": {str(s.set_id): s.name for s in sets or () if s.set_id in per_set},
        "subsets": {name: cats.num_classes for name, cats in subsets.items()},
        "split_files": [{"path": s.path, "split": s.split, "subset": s.subset} for s in specs],
        "unmatched_keys": len(unmatched),
        "unmatched_reasons": dict(reasons),
        "unmatched_examples": [f"{u['key']} ({u['file']}:{u['line']}: {u['reason']})" for u in unmatched[:EXAMPLES]],
    }


def _count_warnings(lines: dict[str, int]) -> list[str]:
    """A line per split file named as one of FineGym's whose line count is not FineGym's
    (ignoring files under a tenth of it: those are not FineGym's, see FINEGYM_SPLIT_LINES)."""
    out = []
    for path, n in lines.items():
        expected = FINEGYM_SPLIT_LINES.get(path.rsplit("/", 1)[-1])
        if expected is not None and n != expected and n >= expected / 10:
            out.append(f"{path} has {n} lines; FineGym's file of that name has {expected} "
                       f"(truncated, edited or another release?)")
    return out


def write_manifest(manifest: Manifest, out: str) -> dict[str, str]:
    """Write the manifest tables and summary under ``out`` (local folder or s3:// prefix).

    Returns name -> URI of what was written. Each object is written atomically.
    """
    written = {}
    for name, table in [("events", manifest.events), ("subactions", manifest.subactions),
                        ("categories", manifest.categories), ("unmatched_keys", manifest.unmatched)]:
        uri = manifest_table(out, name)
        storage.write_parquet(table, uri)
        written[name] = uri
    written["summary"] = summary_uri(out)
    storage.write_text(written["summary"], json.dumps(manifest.summary, indent=2) + "\n")
    return written


def load_manifest(out: str) -> Manifest:
    """Read back a manifest written by :func:`write_manifest`."""
    return Manifest(
        events=storage.read_parquet(manifest_table(out, "events")),
        subactions=storage.read_parquet(manifest_table(out, "subactions")),
        categories=storage.read_parquet(manifest_table(out, "categories")),
        unmatched=storage.read_parquet(manifest_table(out, "unmatched_keys")),
        summary=_read_summary(summary_uri(out)),
    )


def _read_summary(uri: str) -> dict[str, Any]:
    """summary.json: a JSON object within jsonfile's bounds, else FormatError naming it."""
    summary = parse_json(read_json_text(uri), uri)
    if not isinstance(summary, dict):
        raise FormatError(uri, None, "not a JSON object")
    return summary


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


def _set_label(set_id: str, names: dict[str, str]) -> str:
    """``21 (VT_0 round-off ...)``: a set id with its name when known."""
    return f"{set_id} ({names[set_id]})" if set_id in names else set_id


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
        "per subset and split: " + ("; ".join(
            f"{name} " + ", ".join(f"{split} {c['keys']} keys ({c['matched']} matched)"
                                   for split, c in by_split.items())
            for name, by_split in summary.get("per_subset", {}).items()) or "none"),
        "per set: " + (", ".join(_set_label(k, summary.get("set_names", {})) + f": {v}"
                                 for k, v in summary["per_set"].items()) or "none"),
        "subsets: " + (", ".join(f"{k} ({v} classes)" for k, v in summary["subsets"].items()) or "none"),
    ]
    lines += [f"WARNING: {w}" for w in summary.get("count_warnings", [])]
    n = summary["unmatched_keys"]
    if n:
        lines.append(f"WARNING: {n} split keys do not match the annotations: "
                     + "; ".join(f"{r}: {c}" for r, c in summary["unmatched_reasons"].items()))
        lines += [f"  e.g. {e}" for e in summary["unmatched_examples"]]
        lines.append("  (all of them are listed in unmatched_keys.parquet)")
    else:
        lines.append("unmatched split keys: 0")
    return "\n".join(lines)


_SPLIT_FILE = re.compile(r"^gym\d+_(train|val|test)_element(?:_(v[\d.]+))?\.txt$")
_CATEGORY_FILE = re.compile(r"^gym\d+_categories\.txt$")


def build_manifest_from(annotations: str, *, split_version: str | None = None) -> Manifest:
    """The manifest of a FineGym annotation folder, or of a bare annotation JSON file.

    In a folder (local or ``s3://``): ``finegym_annotation_info_v1.1.json`` (else v1.0),
    every ``gymNNN_categories.txt``, ``set_categories.txt`` when present, and every
    ``gymNNN_{train,val,test}_element*.txt`` split file. A folder holding two versions of
    a subset's split (``gym99_train_element_v1.0.txt`` and ``_v1.1.txt``) is refused
    unless ``split_version`` (``v1.0``, ``v1.1``) chooses: then versioned split files
    of other versions are left out (unversioned ones, such as the val files, are kept).
    A bare JSON gives events and sub-actions without element labels (enough to preprocess).
    """
    if annotations.endswith(".json"):
        return build_manifest(annotations, categories=[], splits=[])
    names = {uri.rsplit("/", 1)[-1]: uri for uri in storage.list_uris(annotations)}
    json_name = next((n for n in ("finegym_annotation_info_v1.1.json", "finegym_annotation_info_v1.0.json")
                      if n in names), None)
    if json_name is None:
        raise FileNotFoundError(storage.join(annotations, "finegym_annotation_info_v1.1.json"))
    split_names = [n for n in sorted(names) if _SPLIT_FILE.match(n)]
    if split_version is not None:
        versions = sorted({v for n in split_names if (v := _SPLIT_FILE.match(n)[2])})
        if split_version not in versions:
            raise InputError(f"{annotations}: no split file of version {split_version!r} "
                             f"(versions there: {', '.join(versions) or 'none'})")
        split_names = [n for n in split_names if _SPLIT_FILE.match(n)[2] in (None, split_version)]
    by_split: dict[tuple[str, str], list[str]] = {}
    for n in split_names:
        by_split.setdefault((n.split("_", 1)[0], _SPLIT_FILE.match(n)[1]), []).append(n)
    for (subset, split), found in by_split.items():
        if len(found) > 1:
            raise InputError(f"{annotations} holds {len(found)} {subset} {split} split files ({', '.join(found)}): "
                             f"choose one version (split_version), or move the others out of the folder")
    return build_manifest(
        names[json_name],
        categories=[names[n] for n in sorted(names) if _CATEGORY_FILE.match(n)],
        splits=[names[n] for n in split_names],
        sets=names.get("set_categories.txt"),
    )
