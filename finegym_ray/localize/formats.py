"""Detection file formats: ground truth and results, as the metric (``metric.py``) takes them.

Ground truth, read by :func:`read_ground_truth` from one of:
- ActivityNet's ground truth JSON: ``{"database": {video_id: {"annotations":
  [{"segment": [start_s, end_s], "label": str}, ...], ...}, ...}, ...}``. Other keys
  (``subset``, ``duration``, ``url``, ``version``) are allowed; ``subset=`` keeps only
  the videos of one subset (e.g. ``validation``).
- FineGym's annotation JSON (``finegym_annotation_info_v1.1.json``, parsed by
  ``dataset.annotations``; a file whose top level has a ``database`` key is taken for
  ActivityNet's). Level ``action``: each routine (event instance) is a segment of its
  whole video, absolute seconds, labelled with its event's name (``VT``, ``FX``, ``BB``,
  ``UB``, ``event_5`` .. ``event_10``). Level ``subaction``: the "videos" are the
  routines, named by their event key (``<youtube id>_E_XXXXXX_YYYYYY``), with each
  sub-action's span (first stage start to last stage end) in seconds relative to the
  routine start, as FineGym stores them. The annotation JSON carries no element labels,
  so from the bare file every sub-action is labelled ``subaction`` (class-agnostic).
- A FineGym annotation folder (local or ``s3://``; what ``finegym-ray manifest`` reads):
  at level ``subaction`` each sub-action is labelled with its set's name from the split
  and category files (``FX_leap_jump_hop``; ``set_<id>`` without ``set_categories.txt``);
  sub-actions no split file lists are left out. Level ``action`` is as for the JSON.
  Zero-length routines or sub-actions (FineGym's JSON allows end == start) are left out
  of FineGym ground truth, with a note: no detection can match one.

Detections (ActivityNet's results format), :func:`read_detections` /
:func:`write_detections`: ``{"results": {video_id: [{"label": str, "segment": [start_s,
end_s], "score": float}, ...]}, ...}``; other top-level keys (``version``,
``external_data``) are allowed.

Every reader raises :class:`FormatError` (a ValueError) naming the file, the line where
it can tell, and the entry (``results['vid'][3]``). No Ray, no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import storage
from ..dataset.annotations import Event, event_name, parse_annotations
from ..dataset.errors import FormatError
from ..dataset.jsonfile import parse_json, read_json_text
from ..errors import InputError
from .metric import Detections, GroundTruth, check_segment, finite_number

__all__ = ["FormatError", "LEVELS", "AGNOSTIC_LABEL", "LoadedGroundTruth", "read_ground_truth", "load_ground_truth",
           "parse_ground_truth", "finegym_ground_truth", "manifest_ground_truth", "set_labels",
           "read_detections", "parse_detections", "write_detections", "format_detections"]

LEVELS = ("action", "subaction")
# The one label of sub-actions scored without classes (FineGym's JSON has no element labels).
AGNOSTIC_LABEL = "subaction"


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise InputError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    return level


@dataclass
class LoadedGroundTruth:
    """Ground truth as read: ``segments`` for the metric, what the file was (``source``:
    ``activitynet``, ``finegym-json``, ``finegym-folder``), whether its labels are the
    class-agnostic :data:`AGNOSTIC_LABEL`, and notes for the user (what was left out)."""

    segments: dict[str, list[tuple[str, float, float]]]
    source: str
    class_agnostic: bool = False
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ JSON helpers


def _line_of(text: str, needle: str, start: int = 0) -> int | None:
    pos = text.find(needle, start)
    return None if pos < 0 else text.count("\n", 0, pos) + 1


def _video_lines(text: str, videos: Iterable[str]) -> list[int | None]:
    """The line of each video key, searched in file order (a key's text can also occur
    in an earlier value; searching on from the previous key finds the key itself)."""
    lines, pos = [], 0
    for vid in videos:
        found = text.find(json.dumps(vid) + ":", pos)
        if found < 0:
            found = text.find(json.dumps(vid), pos)
        lines.append(None if found < 0 else text.count("\n", 0, found) + 1)
        pos = max(pos, found)
    return lines


def _label(x: Any) -> str | None:
    # ActivityNet labels are names; numeric class ids are taken as their decimal text.
    if isinstance(x, str) and x:
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        return str(x)
    return None


def _segment(entry: Any, where: str, fail) -> tuple[float, float]:
    seg = entry.get("segment")
    if not isinstance(seg, list) or len(seg) != 2:
        raise fail(f"{where}: 'segment' must be [start, end] in seconds, got {seg!r}")
    try:
        return check_segment(seg[0], seg[1], where)
    except ValueError as e:
        raise fail(str(e)) from None


# ------------------------------------------------------------------ ground truth


def parse_ground_truth(text: str, path: str = "<ground truth>", *, level: str = "action",
                       subset: str | None = None) -> LoadedGroundTruth:
    """Ground truth from JSON text: ActivityNet's (top-level ``database``) or FineGym's
    annotation JSON at ``level`` (see the module docstring). ``subset`` keeps only the
    ActivityNet videos of that subset (ignored for FineGym's JSON)."""
    _check_level(level)
    data = parse_json(text, path)
    if not isinstance(data, dict):
        raise FormatError(path, 1, f"expected a JSON object (ActivityNet's {{\"database\": ...}} or FineGym's "
                                   f"annotation JSON), got {type(data).__name__}")
    if "database" in data:
        return LoadedGroundTruth(_activitynet_ground_truth(text, path, data["database"], subset), "activitynet")
    events = parse_annotations(text, path)
    loaded = LoadedGroundTruth(finegym_ground_truth(events, level=level), "finegym-json",
                               class_agnostic=level == "subaction")
    if level == "action":
        spans = [(ev.start_s, ev.end_s) for ev in events]
    else:
        spans = [(s.rel_start_s, s.rel_end_s) for ev in events for s in ev.subactions or ()]
    loaded.notes += _zero_length_note(path, level, spans)
    if level == "subaction":
        loaded.notes.append(f"{path}: FineGym's annotation JSON has no element labels: sub-actions are scored "
                            f"class-agnostic (give the annotation folder with split and set files for set labels)")
    return loaded


def _activitynet_ground_truth(text: str, path: str, database: Any,
                              subset: str | None) -> dict[str, list[tuple[str, float, float]]]:
    if not isinstance(database, dict):
        raise FormatError(path, _line_of(text, '"database"'), "'database' must be an object of videos")
    out: dict[str, list[tuple[str, float, float]]] = {}
    for (vid, video), line in zip(database.items(), _video_lines(text, database)):

        def fail(msg: str, line=line) -> FormatError:
            return FormatError(path, line, msg)

        if not vid:
            raise fail("database: empty video id")
        if not isinstance(video, dict):
            raise fail(f"database[{vid!r}]: expected an object with 'annotations'")
        if subset is not None and video.get("subset") != subset:
            continue
        anns = video.get("annotations")
        if not isinstance(anns, list):
            raise fail(f"database[{vid!r}]: 'annotations' must be a list, got {anns!r}")
        rows = out.setdefault(vid, [])
        for j, ann in enumerate(anns):
            where = f"database[{vid!r}].annotations[{j}]"
            if not isinstance(ann, dict):
                raise fail(f"{where}: expected an object with 'segment' and 'label'")
            label = _label(ann.get("label"))
            if label is None:
                raise fail(f"{where}: 'label' must be a non-empty string, got {ann.get('label')!r}")
            rows.append((label, *_segment(ann, where, fail)))
    if subset is not None and not out:
        raise FormatError(path, None, f"no video of subset {subset!r} in the database")
    return out


def finegym_ground_truth(annotations: Iterable[Event], *, level: str = "action",
                         labels: Mapping[str, str] | None = None) -> dict[str, list[tuple[str, float, float]]]:
    """Ground truth from parsed FineGym annotations (``dataset.annotations.parse_annotations``).

    ``action``: ``{youtube_id: [(event name, start_s, end_s)]}``, absolute seconds, every
    routine (men's events too). ``subaction``: ``{event key: [(label, rel_start_s,
    rel_end_s)]}`` for every routine with sub-actions, seconds relative to the routine
    start; a sub-action's label is ``labels[instance key]`` (e.g. :func:`set_labels`),
    sub-actions missing from ``labels`` are left out, and without ``labels`` every
    sub-action is :data:`AGNOSTIC_LABEL`. A routine whose sub-actions are all left out
    stays, with an empty list (detections there are false positives). Segments of zero
    length (FineGym's JSON allows end == start) are left out: no detection can match one,
    and the metric refuses them.
    """
    _check_level(level)
    out: dict[str, list[tuple[str, float, float]]] = {}
    for ev in annotations:
        if level == "action":
            rows = out.setdefault(ev.video_id, [])
            if ev.end_s > ev.start_s:
                rows.append((ev.name, ev.start_s, ev.end_s))
            continue
        if ev.subactions is None:
            continue
        rows = out.setdefault(ev.key, [])
        for s in ev.subactions:
            label = AGNOSTIC_LABEL if labels is None else labels.get(s.key)
            if label is not None and s.rel_end_s > s.rel_start_s:
                rows.append((label, s.rel_start_s, s.rel_end_s))
    return out


def set_labels(manifest: Any) -> dict[str, str]:
    """Instance key -> set name for the sub-actions a manifest's split files label
    (``dataset.manifest.Manifest``); ``set_<id>`` where no set categories were loaded."""
    names = {row["set_id"]: row["name"] for row in manifest.categories.to_pylist() if row["subset"] == "sets"}
    cols = manifest.subactions.select(["key", "set_id"]).to_pydict()
    return {key: names.get(set_id, f"set_{set_id}")
            for key, set_id in zip(cols["key"], cols["set_id"]) if set_id is not None}


def manifest_ground_truth(manifest: Any, *, level: str = "action",
                          class_agnostic: bool = False) -> dict[str, list[tuple[str, float, float]]]:
    """Ground truth from a manifest (``dataset.manifest``), as :func:`finegym_ground_truth`
    gives it: ``action`` from the events table; ``subaction`` from the sub-actions table,
    labelled by set name (:func:`set_labels`; unlabelled sub-actions left out) or, with
    ``class_agnostic``, every sub-action as :data:`AGNOSTIC_LABEL`. Zero-length segments
    are left out."""
    _check_level(level)
    out: dict[str, list[tuple[str, float, float]]] = {}
    if level == "action":
        ev = manifest.events.select(["video_id", "event_label", "start_s", "end_s"]).to_pydict()
        for vid, label, start, end in zip(ev["video_id"], ev["event_label"], ev["start_s"], ev["end_s"]):
            rows = out.setdefault(vid, [])
            if end > start:
                rows.append((event_name(label), start, end))
        return out
    ev = manifest.events.select(["event_key", "has_subactions"]).to_pydict()
    for key, has in zip(ev["event_key"], ev["has_subactions"]):
        if has:
            out[key] = []
    labels = None if class_agnostic else set_labels(manifest)
    sub = manifest.subactions.select(["key", "event_key", "rel_start_s", "rel_end_s"]).to_pydict()
    for key, event_key, start, end in zip(sub["key"], sub["event_key"], sub["rel_start_s"], sub["rel_end_s"]):
        label = AGNOSTIC_LABEL if labels is None else labels.get(key)
        if label is not None and end > start:
            out.setdefault(event_key, []).append((label, start, end))
    return out


def _zero_length_note(path: str, level: str, spans: Iterable[tuple[float, float]]) -> list[str]:
    n = sum(end <= start for start, end in spans)
    what = "routine" if level == "action" else "sub-action"
    return [f"{path}: {n} {what}{'s' if n != 1 else ''} of zero length left out of the ground truth "
            f"(no detection can match one)"] if n else []


def _is_local_file(path: str) -> bool:
    loc = storage.parse_uri(path)
    return not loc.is_s3 and os.path.isfile(loc.key)


def load_ground_truth(path: str, *, level: str = "action", subset: str | None = None) -> LoadedGroundTruth:
    """Read ground truth from a ``.json`` file (ActivityNet's or FineGym's) or a FineGym
    annotation folder, local or ``s3://`` (see the module docstring)."""
    _check_level(level)
    path = os.fspath(path)
    if path.endswith(".json") or _is_local_file(path):
        if not path.endswith(".json"):
            raise FormatError(path, None, "expected a .json file (ActivityNet ground truth or FineGym's annotation "
                                          "JSON) or a FineGym annotation folder")
        return parse_ground_truth(read_json_text(path), path, level=level, subset=subset)

    from ..dataset.manifest import build_manifest_from

    manifest = build_manifest_from(path)
    gt = manifest_ground_truth(manifest, level=level)
    loaded = LoadedGroundTruth(gt, "finegym-folder")
    table = manifest.events if level == "action" else manifest.subactions
    cols = ("start_s", "end_s") if level == "action" else ("rel_start_s", "rel_end_s")
    spans = table.select(list(cols)).to_pydict()
    if level == "subaction":
        total = manifest.subactions.num_rows
        labelled = len(set_labels(manifest))
        if labelled == 0 and total:
            loaded.segments = manifest_ground_truth(manifest, level=level, class_agnostic=True)
            loaded.class_agnostic = True
            loaded.notes.append(f"{path}: no split file labels a sub-action: sub-actions are scored class-agnostic")
        elif labelled < total:
            loaded.notes.append(f"{path}: {total - labelled} of {total} sub-actions have no set label in the split "
                                f"files and are left out of the ground truth")
    loaded.notes += _zero_length_note(path, level, zip(spans[cols[0]], spans[cols[1]]))
    return loaded


def read_ground_truth(path: str, *, level: str = "action", subset: str | None = None) -> GroundTruth:
    """``{video_id: [(label, start_s, end_s)]}`` from ActivityNet's ground truth JSON,
    FineGym's annotation JSON or a FineGym annotation folder (see :func:`load_ground_truth`)."""
    return load_ground_truth(path, level=level, subset=subset).segments


# ------------------------------------------------------------------ detections


def parse_detections(text: str, path: str = "<detections>") -> dict[str, list[tuple[str, float, float, float]]]:
    """``{video_id: [(label, start_s, end_s, score)]}`` from ActivityNet results JSON text."""
    data = parse_json(text, path)
    if not isinstance(data, dict) or "results" not in data:
        raise FormatError(path, 1, "expected ActivityNet's results format: {\"results\": {video_id: "
                                   "[{\"label\", \"segment\": [start, end], \"score\"}]}}")
    results = data["results"]
    if not isinstance(results, dict):
        raise FormatError(path, _line_of(text, '"results"'), "'results' must be an object of videos")
    out: dict[str, list[tuple[str, float, float, float]]] = {}
    for (vid, entries), line in zip(results.items(), _video_lines(text, results)):

        def fail(msg: str, line=line) -> FormatError:
            return FormatError(path, line, msg)

        if not vid:
            raise fail("results: empty video id")
        if not isinstance(entries, list):
            raise fail(f"results[{vid!r}]: expected a list of detections")
        rows = out.setdefault(vid, [])
        for j, entry in enumerate(entries):
            where = f"results[{vid!r}][{j}]"
            if not isinstance(entry, dict):
                raise fail(f"{where}: expected an object with 'label', 'segment' and 'score'")
            label = _label(entry.get("label"))
            if label is None:
                raise fail(f"{where}: 'label' must be a non-empty string, got {entry.get('label')!r}")
            start, end = _segment(entry, where, fail)
            score = finite_number(entry.get("score"))
            if score is None:
                raise fail(f"{where}: 'score' must be a finite number, got {entry.get('score')!r}")
            rows.append((label, start, end, score))
    return out


def read_detections(path: str) -> dict[str, list[tuple[str, float, float, float]]]:
    """Detections from an ActivityNet results JSON file (local path or ``s3://`` URI)."""
    path = os.fspath(path)
    return parse_detections(read_json_text(path), path)


def format_detections(detections: Detections) -> str:
    """ActivityNet results JSON text for ``detections`` (``version`` names this project)."""
    results: dict[str, list[dict[str, Any]]] = {}
    for vid, rows in detections.items():
        out = results.setdefault(str(vid), [])
        for j, row in enumerate(rows):
            label, start, end, score = row
            where = f"detections[{vid!r}][{j}]"
            s, e = check_segment(start, end, where)
            value = finite_number(score)  # numpy scalars (float32) too
            if value is None:
                raise InputError(f"{where}: score must be a finite number, got {score!r}")
            out.append({"label": str(label), "segment": [s, e], "score": value})
    return json.dumps({"version": "finegym-ray", "results": results, "external_data": {}}, indent=1) + "\n"


def write_detections(path_or_uri: str, detections: Detections) -> None:
    """Write ``detections`` (``{video_id: [(label, start_s, end_s, score)]}``) as an
    ActivityNet results JSON file to a local path or ``s3://`` URI, atomically. Raises
    ValueError for a bad segment or score (nothing is written)."""
    storage.write_text(path_or_uri, format_detections(detections))
