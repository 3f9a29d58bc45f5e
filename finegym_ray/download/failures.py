"""The ids that could not be had: ``OUT/download_failures.csv``, and why, in classes.

One row per id whose latest attempt failed: ``video_id``, ``reason_class``, ``reason``
(yt-dlp's own message, or the probe's, in one line, credentials removed) and
``failed_at`` (UTC, ISO 8601). A later run that gets the video removes its row; ids a
run did not ask for keep theirs. This module is the file's one owner. No Ray, no
yt-dlp.

Classes, from yt-dlp's messages (YouTube's wording as yt-dlp reports it):

- ``private``: the uploader made it private;
- ``removed``: taken down (by the uploader, for a copyright claim or a terms-of-service
  violation, or its account was terminated): gone for good;
- ``unavailable``: not here for this request: blocked in this country (geo-blocked),
  age-restricted or sign-in only (``--cookies``), YouTube's bare "Video unavailable",
  or not on a mirror (HTTP 404/410);
- ``network``: timeouts, refused or cut connections, server errors (5xx), throttling
  (HTTP 429, "confirm you're not a bot"): worth another run later, slower;
- ``other``: anything else (an unsupported URL, no format that ``--format`` accepts, a
  download that arrived but is not a whole video).
"""

from __future__ import annotations

import csv
import io
import re
import time

from .. import storage

FAILURES = "download_failures.csv"
PRIVATE, REMOVED, UNAVAILABLE, NETWORK, OTHER = "private", "removed", "unavailable", "network", "other"
CLASSES = (PRIVATE, REMOVED, UNAVAILABLE, NETWORK, OTHER)
COLUMNS = ("video_id", "reason_class", "reason", "failed_at")

# The first class whose pattern matches a message wins: "Video unavailable. This video
# has been removed by the uploader" is removed, a bare "Video unavailable" unavailable,
# "HTTP Error 503: Service Unavailable" network.
_PATTERNS = (
    (OTHER, r"requested format|unsupported url"),
    (PRIVATE, r"\bprivate video\b|\bvideo is private\b"),
    (NETWORK, r"HTTP Error (?:5\d\d|429)|too many requests|not a bot"),
    (REMOVED, r"\bremoved\b|\bterminated\b|copyright claim|terms of service|no longer available|\bdeleted\b"),
    (UNAVAILABLE, r"in your country|geo.?restrict|geo.?block|confirm your age|age.?restrict|inappropriate for "
                  r"some users|members.?only|join this channel|HTTP Error (?:401|403|404|410)|unavailable|"
                  r"not available|isn't available"),
    (NETWORK, r"timed? ?out|timeout|connection|network|unreachable|name resolution|name or service|"
              r"temporary failure|reset by peer|broken pipe|remote end closed|incomplete ?read|bytes read|"
              r"more expected|content too short|\bssl\b|certificate|eof occurred"),
)


def classify(reason: str) -> str:
    """The class of a failure's message (see the module docstring); OTHER when none fits."""
    for name, pattern in _PATTERNS:
        if re.search(pattern, reason, re.IGNORECASE):
            return name
    return OTHER


def one_line(message: str) -> str:
    """yt-dlp's message as one line, without its ``ERROR:`` prefix and terminal codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", message)
    text = " ".join(text.split())
    return re.sub(r"^ERROR:\s*", "", text)


def failures_uri(out: str) -> str:
    """``OUT/download_failures.csv``."""
    return storage.join(out, FAILURES)


def read_failures(out: str) -> dict[str, dict[str, str]]:
    """video id -> its row, from ``OUT/download_failures.csv`` ({} without one). A row
    that is not one of ours (another file under that name) is left out."""
    try:
        text = storage.read_text(failures_uri(out))
    except FileNotFoundError:
        return {}
    rows = {}
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("video_id") and row.get("reason_class") in CLASSES:
            rows[row["video_id"]] = {k: row.get(k) or "" for k in COLUMNS}
    return rows


def failure_row(video_id: str, reason: str, *, reason_class: str | None = None,
                at: float | None = None) -> dict[str, str]:
    """A row for ``video_id``: its reason in one line, its class (``classify``'s unless
    given), at ``at`` (seconds since the epoch; now by default)."""
    reason = one_line(reason)
    return {"video_id": video_id, "reason_class": reason_class or classify(reason), "reason": reason,
            "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if at is None else at))}


def write_failures(out: str, rows: dict[str, dict[str, str]]) -> None:
    """Replace ``OUT/download_failures.csv`` with ``rows`` (by video id, sorted); remove
    it when there are none."""
    uri = failures_uri(out)
    if not rows:
        storage.delete(uri)
        return
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for video_id in sorted(rows):
        writer.writerow(rows[video_id])
    storage.write_text(uri, buf.getvalue())
