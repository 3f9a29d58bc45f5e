"""FineGym identifiers: event ids, sub-action ids and instance keys, built and parsed
exactly as the dataset does.

- event id ``E_XXXXXX_YYYYYY``: event start and end in whole seconds (truncated), absolute
  in the raw video, 6 digits.
- sub-action id ``A_ZZZZ_WWWW``: sub-action start (first stage) and end (LAST stage) in
  whole seconds (truncated) relative to the event start, 4 digits.
- instance key ``{youtube_id}_E_XXXXXX_YYYYYY_A_ZZZZ_WWWW``. YouTube ids may contain
  ``_`` and ``-``, so keys are parsed from the right.
- video id: FineGym's are 11-character YouTube ids of ``[A-Za-z0-9_-]``. Accepted is
  the wider grammar ``[A-Za-z0-9_-]{1,64}`` (YouTube's alphabet, 1 to 64 characters,
  ``-`` or ``_`` first allowed as in YouTube), so that other video collections keep
  their own names. It has no ``/``, ``\\``, ``.`` or NUL: a video id is always one
  plain file name, never ``..`` or an absolute path.

Every file name built from a video id or a unit id goes through :func:`safe_name`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError

EVENT_ID_RE = re.compile(r"E_(\d{6})_(\d{6})")
SUBACTION_ID_RE = re.compile(r"A_(\d{4})_(\d{4})")
_VIDEO_ID = r"[A-Za-z0-9_-]{1,64}"
VIDEO_ID_RE = re.compile(_VIDEO_ID)
_KEY_RE = re.compile(rf"(?P<video>{_VIDEO_ID})_(?P<event>E_\d{{6}}_\d{{6}})_(?P<sub>A_\d{{4}}_\d{{4}})")
_EVENT_KEY_RE = re.compile(rf"(?P<video>{_VIDEO_ID})_(?P<event>E_\d{{6}}_\d{{6}})")


def check_video_id(video_id: object) -> str:
    """Return ``video_id`` if it fits the video id grammar (see the module docstring),
    else raise ValueError saying why."""
    if not isinstance(video_id, str) or VIDEO_ID_RE.fullmatch(video_id) is None:
        raise InputError(f"video id {video_id!r} must be 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-' "
                         "(FineGym: 11-character YouTube ids)")
    return video_id


def safe_name(folder: str, name: str, suffix: str = "") -> str:
    """``folder/<name><suffix>``: a file directly inside ``folder`` (a path or URI).

    Raises ValueError when the file name could leave the folder or does not name a file:
    empty, holding ``/``, ``\\``, ``..`` or NUL (so also never absolute). ``folder`` is
    trusted (it comes from the user's command line); the name is data.
    """
    file_name = f"{name}{suffix}" if isinstance(name, str) and isinstance(suffix, str) else None
    if (not file_name or not name or file_name == "." or "/" in file_name or "\\" in file_name
            or ".." in file_name or "\x00" in file_name):
        raise InputError(f"unsafe file name {file_name if file_name is not None else name!r} in {folder}: "
                         "it must be one plain name, without '/', '\\', '..' or NUL")
    if not folder:
        raise InputError(f"no folder given for {file_name!r}")  # "" + "/" + name would be absolute
    return f"{folder.rstrip('/')}/{file_name}"


def _whole_seconds(t: float, digits: int) -> str:
    if not t >= 0:  # also rejects NaN
        raise InputError(f"time must be >= 0 seconds, got {t!r}")
    whole = int(t)  # FineGym truncates, it does not round
    if whole >= 10**digits:
        raise InputError(f"time {t!r} s does not fit in {digits} digits")
    return f"{whole:0{digits}d}"


def event_id(start_s: float, end_s: float) -> str:
    """``E_XXXXXX_YYYYYY`` for an event from ``start_s`` to ``end_s`` (absolute seconds)."""
    return f"E_{_whole_seconds(start_s, 6)}_{_whole_seconds(end_s, 6)}"


def subaction_id(stages: Sequence[Sequence[float]]) -> str:
    """``A_ZZZZ_WWWW`` from stage times in seconds relative to the event start.

    The start comes from the first stage and the end from the last one (split files
    made before 16 April 2020 used the first stage's end for vaults; see
    :func:`legacy_subaction_id`).
    """
    if not stages:
        raise InputError("a sub-action needs at least one stage")
    return f"A_{_whole_seconds(stages[0][0], 4)}_{_whole_seconds(stages[-1][1], 4)}"


def legacy_subaction_id(stages: Sequence[Sequence[float]]) -> str:
    """The pre-April-2020 sub-action id: end taken from the FIRST stage."""
    if not stages:
        raise InputError("a sub-action needs at least one stage")
    return f"A_{_whole_seconds(stages[0][0], 4)}_{_whole_seconds(stages[0][1], 4)}"


def event_key(video_id: str, event: str) -> str:
    """``{video_id}_{event_id}``: one event of one video (27 characters for YouTube ids)."""
    return f"{video_id}_{event}"


def instance_key(video_id: str, event: str, subaction: str) -> str:
    """The sub-action instance key used by the split files."""
    return f"{video_id}_{event}_{subaction}"


@dataclass(frozen=True)
class ParsedKey:
    """An instance key taken apart; times are whole seconds, as in the key."""

    video_id: str
    event_id: str
    subaction_id: str
    event_start_s: int
    event_end_s: int
    subaction_start_s: int
    subaction_end_s: int

    @property
    def event_key(self) -> str:
        return event_key(self.video_id, self.event_id)

    @property
    def key(self) -> str:
        return instance_key(self.video_id, self.event_id, self.subaction_id)


def parse_instance_key(key: str) -> ParsedKey:
    """Parse ``{video_id}_E_XXXXXX_YYYYYY_A_ZZZZ_WWWW``; raises ValueError if it is not one."""
    m = _KEY_RE.fullmatch(key)
    if m is None:
        raise InputError(
            f"not a FineGym instance key: {key!r} "
            "(expected <youtube_id>_E_XXXXXX_YYYYYY_A_ZZZZ_WWWW)"
        )
    ev = EVENT_ID_RE.fullmatch(m["event"])
    sub = SUBACTION_ID_RE.fullmatch(m["sub"])
    assert ev is not None and sub is not None
    return ParsedKey(
        video_id=m["video"],
        event_id=m["event"],
        subaction_id=m["sub"],
        event_start_s=int(ev[1]),
        event_end_s=int(ev[2]),
        subaction_start_s=int(sub[1]),
        subaction_end_s=int(sub[2]),
    )


def parse_event_key(key: str) -> tuple[str, str]:
    """Split ``{video_id}_E_XXXXXX_YYYYYY`` into (video_id, event_id)."""
    m = _EVENT_KEY_RE.fullmatch(key)
    if m is None:
        raise InputError(f"not a FineGym event key: {key!r} (expected <youtube_id>_E_XXXXXX_YYYYYY)")
    return m["video"], m["event"]
