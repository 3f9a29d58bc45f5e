"""The FineGym annotation JSON (``finegym_annotation_info_v1.0.json`` / ``v1.1.json``).

Layout: ``{youtube_id: {event_id: {"event": int, "timestamps": [[start, end]],
"segments": {subaction_id: {"stages": n, "timestamps": [[s, e], ...]}} | null}}}``.
Event timestamps are absolute seconds in the raw video; stage timestamps are seconds
relative to the event start. ``segments`` is null for the men's events, which are kept
as events without sub-actions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import FormatError
from .jsonfile import parse_json
from .keys import EVENT_ID_RE, SUBACTION_ID_RE, check_video_id, event_key, instance_key

# Women's events carry sets and elements; the other ids are the men's events.
EVENT_NAMES = {1: "VT", 2: "FX", 3: "BB", 4: "UB"}


def event_name(label: int) -> str:
    """Short name of an event label (``VT``, ``FX``, ``BB``, ``UB``; ``event_<n>`` otherwise)."""
    return EVENT_NAMES.get(label, f"event_{label}")


@dataclass(frozen=True)
class SubAction:
    """One element instance. ``stages`` are (start, end) seconds relative to the event start."""

    video_id: str
    event_id: str
    subaction_id: str
    event_start_s: float
    stages: tuple[tuple[float, float], ...]

    @property
    def key(self) -> str:
        return instance_key(self.video_id, self.event_id, self.subaction_id)

    @property
    def rel_start_s(self) -> float:
        return self.stages[0][0]

    @property
    def rel_end_s(self) -> float:
        return self.stages[-1][1]

    @property
    def start_s(self) -> float:
        """Absolute start in the raw video, seconds."""
        return self.event_start_s + self.rel_start_s

    @property
    def end_s(self) -> float:
        """Absolute end in the raw video (end of the last stage), seconds."""
        return self.event_start_s + self.rel_end_s


@dataclass(frozen=True)
class Event:
    """One routine (action). ``subactions`` is None where the JSON has ``segments: null``."""

    video_id: str
    event_id: str
    label: int
    start_s: float
    end_s: float
    subactions: tuple[SubAction, ...] | None

    @property
    def key(self) -> str:
        return event_key(self.video_id, self.event_id)

    @property
    def name(self) -> str:
        return event_name(self.label)


def _line_of(text: str, needle: str) -> int | None:
    pos = text.find(needle)
    return None if pos < 0 else text.count("\n", 0, pos) + 1


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _pair(x: Any) -> tuple[float, float] | None:
    if not isinstance(x, list) or len(x) != 2:
        return None
    a, b = _number(x[0]), _number(x[1])
    if a is None or b is None or a < 0 or b < a:
        return None
    return (a, b)


def parse_annotations(text: str, path: str = "<annotations>") -> list[Event]:
    """Parse the annotation JSON text into events, in file order.

    Raises FormatError naming ``path`` and the line of the offending entry (see
    ``jsonfile`` for the bounds of the JSON itself).
    """
    data = parse_json(text, path)
    if not isinstance(data, dict):
        raise FormatError(path, 1, f"expected a JSON object of videos, got {type(data).__name__}")

    events: list[Event] = []
    for video_id, video_events in data.items():
        try:
            # Video ids become file names (videos/<id>.mp4, clips/<id>-<hash>.parquet):
            # one outside the grammar, such as ../../x, could name a path elsewhere.
            check_video_id(video_id)
        except ValueError as e:
            raise FormatError(path, _line_of(text, json.dumps(video_id)), str(e)) from None
        if not isinstance(video_events, dict):
            raise FormatError(path, _line_of(text, json.dumps(video_id)),
                              f"video {video_id!r}: expected an object of events")
        for ev_id, ev in video_events.items():
            events.append(_parse_event(text, path, video_id, ev_id, ev))
    return events


def _parse_event(text: str, path: str, video_id: str, ev_id: str, ev: Any) -> Event:
    where = f"video {video_id!r} event {ev_id!r}"

    def fail(msg: str) -> FormatError:
        return FormatError(path, _line_of(text, json.dumps(ev_id)), f"{where}: {msg}")

    if EVENT_ID_RE.fullmatch(ev_id) is None:
        raise fail("event id must look like E_XXXXXX_YYYYYY")
    if not isinstance(ev, dict):
        raise fail("expected an object")
    label = ev.get("event")
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise fail(f"'event' must be a non-negative integer, got {label!r}")
    ts = ev.get("timestamps")
    span = _pair(ts[0]) if isinstance(ts, list) and len(ts) == 1 else None
    if span is None:
        raise fail(f"'timestamps' must be one [start, end] pair of seconds, got {ts!r}")
    if "segments" not in ev:
        raise fail("missing 'segments' (null for events without sub-actions)")
    segments = ev["segments"]
    if segments is None:
        return Event(video_id, ev_id, label, span[0], span[1], None)
    if not isinstance(segments, dict):
        raise fail("'segments' must be an object or null")
    subs = []
    for sub_id, seg in segments.items():
        if SUBACTION_ID_RE.fullmatch(sub_id) is None:
            raise fail(f"sub-action id {sub_id!r} must look like A_ZZZZ_WWWW")
        if not isinstance(seg, dict):
            raise fail(f"sub-action {sub_id}: expected an object")
        n = seg.get("stages")
        stage_ts = seg.get("timestamps")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise fail(f"sub-action {sub_id}: 'stages' must be a positive integer, got {n!r}")
        if not isinstance(stage_ts, list) or len(stage_ts) != n:
            raise fail(f"sub-action {sub_id}: 'timestamps' must hold {n} [start, end] pairs")
        stages = tuple(_pair(p) for p in stage_ts)
        if any(p is None for p in stages):
            raise fail(f"sub-action {sub_id}: bad stage timestamps {stage_ts!r}")
        subs.append(SubAction(video_id, ev_id, sub_id, span[0], stages))  # type: ignore[arg-type]
    return Event(video_id, ev_id, label, span[0], span[1], tuple(subs))


def format_annotations(events: Iterable[Event]) -> str:
    """The annotation JSON text for ``events`` (grouped by video in first-seen order)."""
    data: dict[str, dict[str, Any]] = {}
    for ev in events:
        segments = None
        if ev.subactions is not None:
            segments = {
                s.subaction_id: {"stages": len(s.stages), "timestamps": [list(p) for p in s.stages]}
                for s in ev.subactions
            }
        data.setdefault(ev.video_id, {})[ev.event_id] = {
            "event": ev.label,
            "timestamps": [[ev.start_s, ev.end_s]],
            "segments": segments,
        }
    return json.dumps(data)
