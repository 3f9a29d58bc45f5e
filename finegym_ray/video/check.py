"""``finegym-ray check``: can every annotated video be cut, before the long job starts.

For each video the annotations name: is its file there (``<video_id>.<ext>`` under the
videos folder, as preprocessing finds it) and a regular file (a FIFO would wait for a
writer forever), does it open, are its frames within ``decode.MAX_FRAME_PIXELS`` (checked
before any frame is decoded: 8 videos are checked at once), does a frame decode near its
start and near the end of its last annotated event, does it last as long as its
annotations reach, its frame rate, and whether that rate varies. Seconds per video, not
a full demux: packet timestamps are sampled in a few stretches (the start, the middle
and the end of the annotated part), which finds the dropped and irregular frames of
screen and phone recordings though not a single glitch elsewhere (preprocessing, which
reads every timestamp, still refuses those).

No ray or torch here (a local folder needs neither; s3:// objects are read in place
with ranged reads through pyarrow).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from fractions import Fraction
from typing import Any

import av
import numpy as np

from .. import storage
from ..errors import InputError
from .decode import VideoError, check_frame_size, open_bounded
from .files import VIDEO_EXTENSIONS, find_videos

# Statuses, worst first: the one a video gets is the first that applies.
MISSING, UNREADABLE, TOO_SHORT, VFR, OK = "missing", "unreadable", "too_short", "vfr", "ok"
STATUSES = (MISSING, UNREADABLE, TOO_SHORT, VFR, OK)
# Packets read per sampled stretch, and how many at either end of a stretch are left out
# of the frame gaps: with B-frames, packets come in decode order, and a stretch cut from
# the stream lacks some frames at its edges whose packets lie outside it.
SAMPLE_PACKETS = 64
EDGE_PACKETS = 8
# A decodable frame within this many seconds before the last annotated end counts as
# reaching it (the annotations' own precision is 10 ms; a GOP can be seconds long).
END_SLACK_S = 1.0
DEFAULT_CSV = "finegym_video_check.csv"


@dataclass(frozen=True)
class VideoCheck:
    """One annotated video. Times in seconds, sizes in pixels; None where unknown."""

    video_id: str
    status: str  # one of STATUSES
    uri: str | None
    events: int  # annotated events in it
    annotated_end_s: float  # the latest end of its annotated events
    duration_s: float | None  # the container's stream duration
    decoded_end_s: float | None  # the time of the last frame decoded near annotated_end_s
    fps: float | None  # frames per second, the stream's declared average
    vfr: bool | None  # sampled frame gaps vary (None: not sampled)
    width: int | None
    height: int | None
    codec: str | None
    problem: str  # why it cannot be cut ("" for ok)


def annotated_videos(manifest) -> dict[str, tuple[int, float]]:
    """video id -> (number of annotated events, latest event end in seconds)."""
    ids = manifest.events.column("video_id").to_pylist()
    ends = manifest.events.column("end_s").to_pylist()
    out: dict[str, tuple[int, float]] = {}
    for vid, end in zip(ids, ends):
        n, last = out.get(vid, (0, 0.0))
        out[vid] = (n + 1, max(last, float(end)))
    return out


def check_videos(annotations: str, videos: str, *, allow_vfr: bool = False, threads: int = 8,
                 progress: Callable[[int, int], None] | None = None) -> list[VideoCheck]:
    """Check every video ``annotations`` (a FineGym annotation folder or JSON, local or
    s3://) names against the files under ``videos`` (local or s3://), ``threads`` at a
    time. ``allow_vfr``: a variable frame rate is not a problem (preprocessing's
    allow_vfr). ValueError when ``videos`` is a local folder that does not exist."""
    from ..dataset.manifest import build_manifest_from

    loc = storage.parse_uri(videos)
    if not loc.is_s3 and not os.path.isdir(loc.key):
        raise InputError(f"--videos {videos}: no such folder")
    wanted = annotated_videos(build_manifest_from(annotations))
    found = find_videos(videos)
    items = sorted(wanted.items())
    done = 0

    def one(item: tuple[str, tuple[int, float]]) -> VideoCheck:
        vid, (events, end) = item
        if vid not in found:
            return VideoCheck(vid, MISSING, None, events, end, None, None, None, None, None, None, None,
                              f"no file {vid}.* under {videos} ({', '.join(VIDEO_EXTENSIONS)})")
        return check_video(found[vid], vid, events=events, annotated_end_s=end, allow_vfr=allow_vfr)

    results = []
    with ThreadPoolExecutor(max(1, min(threads, len(items)))) as pool:
        for result in pool.map(one, items):
            results.append(result)
            done += 1
            if progress:
                progress(done, len(items))
    return results


def _open(uri: str):
    """An open PyAV container of ``uri`` and what must be closed with it."""
    loc = storage.parse_uri(uri)
    if not loc.is_s3:
        if not os.path.isfile(loc.key):  # a FIFO or device named like a video: opening it could wait forever
            raise VideoError(loc.key, "not a regular file (a FIFO, device or folder named like a video)")
        return open_bounded(loc.key), None
    fs, path = storage.pyarrow_filesystem(uri)
    f = fs.open_input_file(path)  # seekable: the demuxer reads the index and seeks with ranged GETs
    return open_bounded(f), f


def check_video(uri: str, video_id: str, *, events: int, annotated_end_s: float,
                allow_vfr: bool = False) -> VideoCheck:
    """Check one video file (see the module docstring); never raises for a bad file."""
    base: dict[str, Any] = dict(video_id=video_id, uri=uri, events=events, annotated_end_s=annotated_end_s,
                                duration_s=None, decoded_end_s=None, fps=None, vfr=None, width=None, height=None,
                                codec=None)

    def result(status: str, problem: str = "") -> VideoCheck:
        return VideoCheck(status=status, problem=problem, **base)

    try:
        container, extra = _open(uri)
    except VideoError as e:
        return result(UNREADABLE, e.reason)
    except (av.FFmpegError, OSError) as e:
        return result(UNREADABLE, f"does not open as a video (truncated download, corrupt or not a video): "
                                  f"{_reason(e)}")
    try:
        if not container.streams.video:
            return result(UNREADABLE, "no video stream")
        stream = container.streams.video[0]
        tb = stream.time_base
        if not tb:
            return result(UNREADABLE, "the video stream has no time base")
        origin = stream.start_time or 0
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate
        base.update(fps=round(float(rate), 3) if rate else None, width=cc.width or None, height=cc.height or None,
                    codec=cc.name)
        if stream.duration:
            base["duration_s"] = round(float((stream.duration) * tb), 3)
        elif container.duration:
            base["duration_s"] = round(container.duration / 1e6, 3)
        try:
            check_frame_size(uri, cc.width, cc.height)
        except VideoError as e:
            return result(UNREADABLE, e.reason)

        gaps: list[np.ndarray] = []
        try:
            first, pts = _sample(container, stream, origin, tb, at_s=None, want_s=0.0)
        except (av.FFmpegError, _Corrupt) as e:
            return result(UNREADABLE, f"no frame decodes at the start: {_reason(e)}")
        gaps.append(pts)
        if first is None:
            return result(UNREADABLE, "no frame decodes at the start")
        duration = base["duration_s"]
        if duration is not None and duration + 1e-3 < annotated_end_s:
            return result(TOO_SHORT, f"lasts {duration:.2f} s, its annotated events reach {annotated_end_s:.2f} s")
        target = max(annotated_end_s - END_SLACK_S, 0.0)
        if annotated_end_s > 2 * END_SLACK_S:
            try:
                _, pts = _sample(container, stream, origin, tb, at_s=annotated_end_s / 2, want_s=None)
                gaps.append(pts)
            except (av.FFmpegError, _Corrupt):
                pass  # the end below says whether the file is whole
        try:
            last, pts = _sample(container, stream, origin, tb, at_s=target, want_s=target)
        except (av.FFmpegError, _Corrupt) as e:
            return result(UNREADABLE, f"no frame decodes near {target:.2f} s, before the end of its last annotated "
                                      f"event (truncated or corrupt?): {_reason(e)}")
        gaps.append(pts)
        base["decoded_end_s"] = None if last is None else round(last, 3)
        if last is None:
            return result(TOO_SHORT, f"no frame decodes after {target:.2f} s (its annotated events reach "
                                     f"{annotated_end_s:.2f} s): a partial download?")
        base["vfr"] = _varies(gaps)
        if base["vfr"] and not allow_vfr:
            return result(VFR, "variable frame rate: preprocessing refuses it unless allow_vfr=true "
                               "(re-encode at a constant rate, e.g. ffmpeg -vsync cfr)")
        return result(OK)
    finally:
        container.close()
        if extra is not None:
            extra.close()


class _Corrupt(Exception):
    pass


def _sample(container, stream, origin: int, tb: Fraction, *, at_s: float | None,
            want_s: float | None) -> tuple[float | None, np.ndarray]:
    """Seek to ``at_s`` seconds (None: the start, no seek), read SAMPLE_PACKETS packets;
    with ``want_s`` also decode until a frame at or after ``want_s`` seconds (or the
    stretch ends). Returns (that frame's time in seconds, or None; the stretch's packet
    timestamps, sorted, in ticks)."""
    if at_s is not None:
        container.seek(origin + int(Fraction(at_s) / tb), stream=stream, backward=True, any_frame=False)
    pts: list[int] = []
    frame_s = None
    decoding = want_s is not None
    read = 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        read += 1
        if packet.is_corrupt:
            raise _Corrupt("an incomplete packet: the file is truncated or corrupt")
        if packet.pts is not None and not packet.is_discard:
            pts.append(packet.pts)
        if decoding:
            for frame in packet.decode():
                t = float((frame.pts - origin) * tb) if frame.pts is not None else None
                if t is not None and t + 1e-6 >= want_s:
                    frame_s, decoding = t, False
                    break
        if read >= SAMPLE_PACKETS and not decoding:
            break
        if read >= 20 * SAMPLE_PACKETS:  # a long GOP: enough
            break
    return frame_s, np.sort(np.array(pts, dtype=np.int64))


def _varies(stretches: list[np.ndarray]) -> bool | None:
    """Whether frame gaps vary: some gap differs from the typical one by more than half
    of it (decode.probe's rule), over the inner part of each sampled stretch."""
    gaps = [np.diff(s[EDGE_PACKETS:len(s) - EDGE_PACKETS]) for s in stretches if len(s) > 2 * EDGE_PACKETS + 2]
    gaps = [g for g in gaps if len(g)]
    if not gaps:
        return None
    every = np.concatenate(gaps)
    typical = float(np.median(every))
    return bool(typical > 0 and np.any(np.abs(every - typical) > typical / 2))


def _reason(e: BaseException) -> str:
    return " ".join(str(getattr(e, "strerror", None) or e).split())


def cuttable(check: VideoCheck) -> bool:
    return check.status == OK


def write_csv(results: list[VideoCheck], uri: str) -> None:
    """One row per video (the fields of VideoCheck), local or s3://."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(VideoCheck)])
    writer.writeheader()
    for r in results:
        writer.writerow({k: ("" if v is None else v) for k, v in asdict(r).items()})
    storage.write_text(uri, buf.getvalue())


def format_report(results: list[VideoCheck], *, seconds: float, shown: int = 10) -> str:
    """The problems (``shown`` per kind at most) and a one-line summary."""
    lines = []
    for status in STATUSES[:-1]:
        bad = [r for r in results if r.status == status]
        for r in bad[:shown]:
            lines.append(f"{status:<10} {r.video_id}: {r.problem}")
        if len(bad) > shown:
            lines.append(f"{status:<10} ... and {len(bad) - shown} more (see the CSV)")
    count = {s: sum(r.status == s for r in results) for s in STATUSES}
    lines.append(f"{len(results)} annotated videos checked in {seconds:.1f} s: {count[OK]} ok, {count[MISSING]} "
                 f"missing, {count[UNREADABLE]} unreadable, {count[TOO_SHORT]} too short, {count[VFR]} variable "
                 f"frame rate")
    return "\n".join(lines)


def coverage_csv_uri(csv_uri: str) -> str:
    """Where the coverage table goes beside the per-video CSV: ``check.csv`` -> ``check_coverage.csv``."""
    return (csv_uri[:-len(".csv")] if csv_uri.endswith(".csv") else csv_uri) + "_coverage.csv"


def write_coverage_csv(rows, uri: str) -> None:
    """One row per task and split (``dataset.coverage.Coverage.record``), local or s3://."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["task", "split", "labelled", "present", "missing", "percent",
                                             "missing_videos"])
    writer.writeheader()
    writer.writerows(r.record() for r in rows)
    storage.write_text(uri, buf.getvalue())


def run_check(annotations: str, videos: str, csv_uri: str, *, allow_vfr: bool = False,
              say: Callable[[str], None] = print) -> int:
    """Check, print the report and what the videos that can be cut give each task and
    split (``dataset.coverage``), write the CSV and the coverage CSV beside it; the exit
    status: 0 when every annotated video can be cut, else 1."""
    from ..dataset.coverage import coverage, format_coverage
    from ..dataset.manifest import build_manifest_from

    t0 = time.monotonic()
    results = check_videos(annotations, videos, allow_vfr=allow_vfr)
    say(format_report(results, seconds=time.monotonic() - t0))
    rows = coverage(build_manifest_from(annotations), videos=[r.video_id for r in results if cuttable(r)])
    say("labelled keys of the videos that can be cut, per task and split:\n"
        + format_coverage(rows, present="cuttable"))
    if not storage.parse_uri(csv_uri).is_s3:
        csv_uri = os.path.abspath(csv_uri)
    write_csv(results, csv_uri)
    write_coverage_csv(rows, coverage_csv_uri(csv_uri))
    say(f"csv: {csv_uri} (per video), {coverage_csv_uri(csv_uri)} (per task and split)")
    ok = all(cuttable(r) for r in results)
    say("every annotated video can be cut" if ok else
        "some annotated videos cannot be cut: their clips would fail in preprocessing (see above and the CSV)")
    return 0 if ok else 1
