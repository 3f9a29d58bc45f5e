"""Work units: the clips of one video, grouped so that units balance across workers.

Planned on the driver from the manifest, before any video is opened. A unit's id is
derived from the keys and window times it holds, so the same manifest and settings give
the same units on every run, and a corrected annotation gives a new unit. A unit is
done when its shard is complete and carries the unit's fingerprint (``fingerprint``:
its windows and the settings hash), which resume checks from the shard's footer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from ..dataset.keys import check_video_id
from ..errors import InputError


@dataclass(frozen=True)
class Window:
    """One clip to cut: ``start_s``..``end_s`` absolute seconds in the raw video.

    kind: "subaction" (key is the sub-action key) or "event" (key is the event key).
    """

    key: str
    video_id: str
    start_s: float
    end_s: float
    event_id: str
    event_label: int
    kind: str = "subaction"


@dataclass(frozen=True)
class WorkUnit:
    unit_id: str
    video_id: str
    windows: tuple[Window, ...]

    @property
    def seconds(self) -> float:
        """Seconds of video the unit decodes."""
        return sum(w.end_s - w.start_s for w in self.windows)

    def fingerprint(self, settings_hash: str) -> str:
        """64 hex digits naming exactly what this unit's shard holds: its id, every
        window (key, kind, start and end seconds, label) and the preprocessing settings."""
        blob = json.dumps({"unit": self.unit_id, "settings": settings_hash,
                           "windows": [_window_identity(w) for w in self.windows]}).encode()
        return hashlib.sha256(blob).hexdigest()


def _window_identity(w: Window) -> list:
    # repr() keeps every digit of the float seconds: annotations corrected by a
    # millisecond give another identity.
    return [w.key, w.kind, repr(float(w.start_s)), repr(float(w.end_s)), w.event_id, int(w.event_label)]


def _unit_id(video_id: str, windows: Iterable[Window]) -> str:
    # The unit id names the unit's shard and error record: checked here too, since a
    # manifest need not come from the annotation parser that checks video ids.
    check_video_id(video_id)
    digest = hashlib.sha1(json.dumps([_window_identity(w)[:4] for w in windows]).encode()).hexdigest()[:12]
    return f"{video_id}-{digest}"


def subaction_windows(subactions: pa.Table) -> dict[str, list[Window]]:
    """video id -> its sub-action windows in time order, from ``subactions.parquet``."""
    rows = subactions.select(["key", "video_id", "event_id", "event_label", "start_s", "end_s"]).to_pylist()
    return _by_video(Window(r["key"], r["video_id"], r["start_s"], r["end_s"], r["event_id"], r["event_label"])
                     for r in rows)


def event_windows(events: pa.Table) -> dict[str, list[Window]]:
    """video id -> its whole-event (routine) windows in time order, from ``events.parquet``."""
    rows = events.select(["event_key", "video_id", "event_id", "event_label", "start_s", "end_s"]).to_pylist()
    return _by_video(Window(r["event_key"], r["video_id"], r["start_s"], r["end_s"], r["event_id"], r["event_label"],
                            "event")
                     for r in rows)


def merge_windows(*parts: dict[str, list[Window]]) -> dict[str, list[Window]]:
    """Union of per-video window lists, each video's windows in time order."""
    return _by_video(w for part in parts for ws in part.values() for w in ws)


def _by_video(windows: Iterable[Window]) -> dict[str, list[Window]]:
    by_video: dict[str, list[Window]] = {}
    for w in windows:
        by_video.setdefault(w.video_id, []).append(w)
    return {v: sorted(ws, key=lambda w: (w.start_s, w.kind, w.key)) for v, ws in sorted(by_video.items())}


def plan_units(windows_by_video: dict[str, list[Window]], seconds_per_unit: float = 60.0) -> list[WorkUnit]:
    """Cut each video's windows, in time order, into units of about ``seconds_per_unit``
    seconds of clips (a unit never spans two videos: a worker opens its video once).
    Largest units first, so that long tails do not finish last."""
    if seconds_per_unit <= 0:
        raise InputError(f"seconds_per_unit must be > 0, got {seconds_per_unit}")
    units = []
    for video_id, windows in windows_by_video.items():
        group: list[Window] = []
        total = 0.0
        for w in windows:
            if group and total + (w.end_s - w.start_s) > seconds_per_unit:
                units.append(WorkUnit(_unit_id(video_id, group), video_id, tuple(group)))
                group, total = [], 0.0
            group.append(w)
            total += w.end_s - w.start_s
        if group:
            units.append(WorkUnit(_unit_id(video_id, group), video_id, tuple(group)))
    return sorted(units, key=lambda u: (-u.seconds, u.unit_id))
