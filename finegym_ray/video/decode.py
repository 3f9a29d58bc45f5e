"""Probe a video and decode exact time windows of it, resized at decode.

Contracts callers can rely on:

- Times are seconds from the video stream's start time (``stream.start_time``, normally
  0): a frame's time is ``(pts - start_time) * time_base``, computed exactly.
- A window ``[start_s, end_s)`` holds exactly the frames whose time ``t`` satisfies
  ``start_s <= t < end_s``. Boundaries are compared with a tolerance of 1 microsecond
  (``BOUNDARY_TOLERANCE_S``): a boundary computed in floating point from a frame time
  (``k / fps``) selects that frame as if it were exact. Frames are always at least
  ~1 ms apart, so the tolerance never changes which frames a real window holds.
- A window inside the video that holds no frame start (shorter than a frame, between
  two frames) returns 0 frames; it is not an error. A window that starts before 0,
  starts at or after the end of the video, or ends after the end (even partly) raises
  ``VideoError``: the caller records it, it never gets a silently shorter clip.
- Missing, truncated, corrupt and non-video files raise ``VideoError`` naming the path
  and the reason, from ``probe`` and from every decode.
- Frames are uint8 RGB ``(N, H, W, 3)``; sizes are stored pixels (sample aspect ratio
  and rotation metadata are ignored, as FineGym's YouTube videos carry neither).
- A video whose frames hold more than ``MAX_FRAME_PIXELS`` pixels (4096x4096) raises
  ``VideoError`` before any frame is decoded; FFmpeg's probe and the decoder get the
  same bound (its ``max_pixels``), which they check on every frame they allocate.
- Decoders run single-threaded: one decoder per worker process scales better on many
  cores than FFmpeg's threads (measured in shared/README.md).

No ray or torch here (see docs/architecture.md). decord is imported only when its backend is
used, so the PyAV path works where decord has no wheel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import av
import numpy as np

from ..errors import InputError

BOUNDARY_TOLERANCE_S = Fraction(1, 1_000_000)

# swscale's bicubic is also what decord's and ffmpeg's scale filter use, so both backends
# give the same pixels. "AREA" scaled 640x360 -> 456x256 about 1.5x faster here, with
# slightly different (sharper) pixels than decord.
PYAV_INTERPOLATION = "BICUBIC"

# The largest frame, in pixels, any video may have: 4096x4096 holds 4K (3840x2160, DCI
# 4096x2160); 8K does not pass. A decoder holds several frames at once (references,
# reordering, the RGB copy) and `check` runs 8 of them: at the bound that is ~25 MB a
# yuv420p frame; a 12000x12000 video took ~1 GB a decoder. Preprocessing resizes to a
# short side of 256 anyway.
MAX_FRAME_PIXELS = 4096 * 4096

# Maximum number of earlier keyframes to try when a container seek lands after the
# wanted frame (B-frame files whose index is keyed on decode time can do that), before
# decoding from the first keyframe of the file.
_SEEK_RETRIES = 3


class VideoError(Exception):
    """A video that cannot give what was asked: names the file and says why.

    Raised for missing, truncated, corrupt or non-video files and for windows outside
    the video. The preprocessing stage records it per video or window and carries on.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` found in the first video stream of a file.

    width, height: stored frame size in pixels.
    fps: mean frame rate in frames per second; ``fps_num / fps_den`` is the same rate as
        an exact fraction (e.g. 30000/1001 for NTSC 29.97).
    num_frames: frames in the stream (every packet the demuxer returns).
    duration_s: seconds from the stream start to the end of the last frame.
    codec: FFmpeg's decoder name, e.g. ``h264``.
    is_vfr: True when some gap between consecutive frame times differs from the typical
        gap (the median) by more than half of it: dropped, doubled or irregular frames.
    """

    width: int
    height: int
    fps: float
    fps_num: int
    fps_den: int
    num_frames: int
    duration_s: float
    codec: str
    is_vfr: bool


@dataclass(frozen=True)
class Frames:
    """Decoded frames of one window.

    rgb: (N, H, W, 3) uint8 RGB, H and W in pixels after resizing.
    times_s: (N,) float64 seconds from the stream start, increasing.
    indices: (N,) int64 frame numbers in presentation order (0 = first frame).
    """

    rgb: np.ndarray
    times_s: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class _Index:
    """The frame table from one demux pass, in stream time_base ticks."""

    time_base: Fraction
    origin: int  # ticks of time 0: the stream start time
    pts: np.ndarray  # (num_frames,) int64, every frame's pts, sorted
    keyframe_pts: np.ndarray  # (num_keyframes,) int64, sorted


def resized_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """Output (width, height) in pixels for a frame scaled to ``short_side`` pixels.

    The short side becomes exactly ``short_side`` and the long side keeps the aspect
    ratio, rounded to the nearest even number (yuv420 encoders and many models need even
    sizes): 1280x720 at 256 gives (456, 256). ``short_side`` None or 0 keeps the native
    size. ``short_side`` must be even; upscaling is allowed.
    """
    if width <= 0 or height <= 0:
        raise InputError(f"frame size must be positive, got {width}x{height}")
    if not short_side:
        return width, height
    if short_side < 0 or short_side % 2:
        raise InputError(f"short_side must be a positive even number of pixels, got {short_side}")
    short, long = min(width, height), max(width, height)
    new_long = max(2, 2 * round(long * short_side / short / 2))
    return (new_long, short_side) if width >= height else (short_side, new_long)


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read the first video stream's properties and check that every frame is present.

    Demuxes every packet of the stream (no decoding: about 15 us a frame, ~3 s for a
    two-hour video) so that the frame count, duration and VFR flag come from the real
    timestamps rather than from the container's header. Raises VideoError for missing,
    truncated, corrupt or non-video files.
    """
    return _scan(os.fspath(path))[0]


def open_bounded(source) -> av.container.InputContainer:
    """``av.open(source)`` (a path or a seekable file object) with FFmpeg's probe and the
    video decoders refusing frames above ``MAX_FRAME_PIXELS``: opening a file decodes a
    frame to learn its format, which for a 12000x12000 frame took 300 MB."""
    bound = {"max_pixels": str(MAX_FRAME_PIXELS)}
    container = av.open(source, metadata_errors="ignore", options=bound)
    for stream in container.streams.video:
        if stream.codec_context is not None:
            stream.codec_context.options = {**stream.codec_context.options, **bound}
    return container


def check_frame_size(path: str, width: int, height: int) -> None:
    """Raise VideoError when a ``width`` x ``height`` pixel frame is above ``MAX_FRAME_PIXELS``."""
    if width * height > MAX_FRAME_PIXELS:
        side = math.isqrt(MAX_FRAME_PIXELS)
        raise VideoError(path, f"frame size {width}x{height} ({width * height / 1e6:.1f} Mpixels) is above the "
                               f"{MAX_FRAME_PIXELS / 1e6:.1f} Mpixels ({side}x{side}) a video may have: "
                               f"decoding it would take too much memory (scale it down, e.g. ffmpeg -vf scale)")


def _open(path: str) -> av.container.InputContainer:
    if not os.path.exists(path):
        raise VideoError(path, "file not found")
    if not os.path.isfile(path):
        raise VideoError(path, "not a regular file")
    try:
        container = open_bounded(path)
    except (av.FFmpegError, OSError) as e:
        # FFmpeg's message repeats the path; its strerror is the useful part.
        detail = getattr(e, "strerror", None) or str(e)
        raise VideoError(path, f"not a readable video container (truncated, corrupt or not a video): "
                               f"{detail}") from e
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        container.close()
        raise VideoError(path, f"no video stream (streams: {', '.join(kinds)})")
    cc = container.streams.video[0].codec_context
    try:
        check_frame_size(path, cc.width, cc.height)
    except VideoError:
        container.close()
        raise
    return container


@dataclass
class _Packets:
    pts: list[int]  # presentation ticks in decode order
    keyframes: list[int]
    count: int  # every packet read, discarded ones included
    last_duration: int  # ticks, of the frame with the largest pts (0: unknown)


def _read_packets(path: str, container: av.container.InputContainer, stream) -> _Packets:
    start = stream.start_time or 0
    found = _Packets([], [], 0, 0)
    last_pts = None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the empty packet PyAV appends at the end of the file
                continue
            found.count += 1
            if packet.is_discard:  # outside the edit list: never presented
                continue
            ts = packet.pts if packet.pts is not None else packet.dts
            if ts is None:
                raise VideoError(path, f"frame {len(found.pts)} has no timestamp")
            if packet.is_corrupt:
                raise VideoError(path, f"frame {len(found.pts)} at {float((ts - start) * stream.time_base):.3f} s "
                                       "is incomplete: the file is truncated or corrupt")
            found.pts.append(ts)
            if packet.is_keyframe:
                found.keyframes.append(ts)
            if last_pts is None or ts > last_pts:
                last_pts, found.last_duration = ts, packet.duration or 0
    except av.FFmpegError as e:
        raise VideoError(path, f"unreadable data after {len(found.pts)} frames (truncated or corrupt?): "
                               f"{getattr(e, 'strerror', None) or e}") from e
    return found


def _scan(path: str) -> tuple[VideoInfo, _Index]:
    container = _open(path)
    try:
        stream = container.streams.video[0]
        time_base = stream.time_base
        if not time_base:
            raise VideoError(path, "video stream has no time base")
        packets = _read_packets(path, container, stream)
        if not packets.pts:
            raise VideoError(path, "video stream holds no frames")
        if stream.frames and stream.frames > packets.count:
            raise VideoError(path, f"truncated: the container lists {stream.frames} frames, "
                                   f"only {packets.count} are in the file")
        if not packets.keyframes:
            raise VideoError(path, "video stream has no keyframe: cannot seek or decode")
        table = np.array(sorted(packets.pts), dtype=np.int64)
        if np.any(np.diff(table) == 0):
            raise VideoError(path, "two frames share a timestamp: frame times are ambiguous")
        origin = stream.start_time if stream.start_time is not None else int(table[0])

        # The container's declared rate cannot reveal VFR: the gaps between frames can.
        gaps = np.diff(table)  # ticks
        typical_gap = float(np.median(gaps)) if len(gaps) else 0.0
        is_vfr = bool(len(gaps) and np.any(np.abs(gaps - typical_gap) > typical_gap / 2))
        last_duration = packets.last_duration or max(round(typical_gap), 1)
        end = int(table[-1]) + last_duration
        fps = _frame_rate(stream, table, time_base)

        cc = stream.codec_context
        if cc.width <= 0 or cc.height <= 0:
            raise VideoError(path, f"video stream has no frame size ({cc.width}x{cc.height})")
        info = VideoInfo(width=cc.width, height=cc.height, fps=float(fps), fps_num=fps.numerator,
                         fps_den=fps.denominator, num_frames=len(table),
                         duration_s=float((end - origin) * time_base), codec=cc.name, is_vfr=is_vfr)
        index = _Index(time_base=time_base, origin=origin, pts=table,
                       keyframe_pts=np.array(sorted(packets.keyframes), dtype=np.int64))
        return info, index
    finally:
        container.close()


def _frame_rate(stream: av.video.stream.VideoStream, table: np.ndarray, time_base: Fraction) -> Fraction:
    # The mean rate over the timestamps is what the file really holds. FFmpeg's
    # average_rate is usually the same rate as a tidy fraction (30000/1001 rather than
    # whatever 1 ms timestamps give); trust it only where the two agree.
    if len(table) < 2:
        rate = stream.average_rate or stream.guessed_rate
        return Fraction(rate) if rate else Fraction(0)
    measured = Fraction(len(table) - 1) / (int(table[-1] - table[0]) * time_base)
    declared = stream.average_rate
    if declared and abs(Fraction(declared) - measured) <= measured / 1000:
        return Fraction(declared)
    return measured.limit_denominator(1001)


class _Backend(Protocol):
    def frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        """(H, W, 3) uint8 RGB frames, one per sorted frame number in ``indices``, decoded
        in one forward pass after one seek."""

    def close(self) -> None: ...


class _PyAVBackend:
    """Seek to the keyframe before the first wanted frame, decode forward, stop after the last."""

    def __init__(self, path: str, size: tuple[int, int], index: _Index):
        self._path = path
        self._size = size
        self._index = index
        self._container = _open(path)
        self._stream = self._container.streams.video[0]
        cc = self._stream.codec_context
        cc.thread_count = 1
        cc.thread_type = "NONE"

    def frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        want = self._index.pts[indices]  # (N,) ticks, increasing
        keyframes = self._index.keyframe_pts
        k = max(int(np.searchsorted(keyframes, want[0], side="right")) - 1, 0)
        tries = [int(p) for p in keyframes[max(k - _SEEK_RETRIES, 0):k + 1][::-1]]
        if tries[-1] != keyframes[0]:
            tries.append(int(keyframes[0]))
        try:
            for seek_pts in tries:
                decoded = self._decode_from(seek_pts, want)
                first = next(decoded)
                if first is None:
                    continue  # the seek landed after the first wanted frame: try an earlier keyframe
                yield first
                yield from decoded
                return
        except av.FFmpegError as e:
            raise VideoError(self._path, f"decoding failed near {self._seconds(int(want[0])):.3f} s "
                                         f"(corrupt data?): {e}") from e
        raise VideoError(self._path, f"cannot seek to {self._seconds(int(want[0])):.3f} s: the decoder "
                                     "starts after it even from the first keyframe")

    def _decode_from(self, seek_pts: int, want: np.ndarray) -> Iterator[np.ndarray | None]:
        """Frames at ticks ``want``; a single None when the seek landed after ``want[0]``."""
        width, height = self._size
        self._container.seek(seek_pts, stream=self._stream, backward=True, any_frame=False)
        j = 0
        first = True
        for packet in self._container.demux(self._stream):
            for frame in packet.decode():
                if frame.pts is None:
                    raise VideoError(self._path, "decoder returned a frame without timestamp")
                if first and frame.pts > want[0]:
                    yield None
                    return
                first = False
                if frame.pts < want[j]:
                    continue  # before the window, or dropped by max_fps: decoded, never converted
                if frame.pts > want[j]:
                    raise VideoError(self._path, f"frame at {self._seconds(int(want[j])):.3f} s is in the "
                                                 "index but the decoder skipped it (corrupt data?)")
                yield frame.reformat(width=width, height=height, format="rgb24",
                                     interpolation=PYAV_INTERPOLATION, threads=1).to_ndarray()
                j += 1
                if j == len(want):
                    return
        raise VideoError(self._path, f"decoder stopped before {self._seconds(int(want[j])):.3f} s, "
                                     "which the index lists (truncated or corrupt data?)")

    def _seconds(self, pts: int) -> float:
        return float((pts - self._index.origin) * self._index.time_base)

    def close(self) -> None:
        self._container.close()


class _DecordBackend:
    """decord's VideoReader, addressed by frame number.

    decord's own timestamps (get_frame_timestamp) are float32, ~0.5 ms coarse two hours
    into a video: not exact enough to select frames at a boundary. Frame numbers come
    from the exact PyAV index instead, and decord's timestamps are checked against it
    once at open, so both backends select the same frames by construction.
    """

    def __init__(self, path: str, size: tuple[int, int], index: _Index):
        import decord  # lazy: only this backend needs it

        self._path = path
        width, height = size
        try:
            # Both dimensions: decord stretches when given only one (shared/README.md).
            self._reader = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height,
                                              num_threads=1)
            count = len(self._reader)
            stamps = self._reader.get_frame_timestamp(np.arange(count))[:, 0].astype(np.float64) if count else []
        except Exception as e:  # decord raises DECORDError or a bare RuntimeError
            raise VideoError(path, f"decord cannot open the video: {_first_line(e)}") from e
        if count != len(index.pts):
            raise VideoError(path, f"decord sees {count} frames, the container index {len(index.pts)}")
        expected = index.pts.astype(np.float64) * float(index.time_base)  # decord: absolute pts
        gaps = np.diff(index.pts)
        half_gap = float(np.min(gaps)) * float(index.time_base) / 2 if len(gaps) else math.inf
        if count and np.max(np.abs(stamps - expected)) >= half_gap:
            raise VideoError(path, "decord's frame order disagrees with the container timestamps")

    def frames(self, indices: np.ndarray) -> Iterator[np.ndarray]:
        wanted = set(indices.tolist())
        first, last = int(indices[0]), int(indices[-1])
        try:
            # seek + next decodes sequentially with little memory; get_batch held far
            # more memory for no speed gain (shared/README.md).
            self._reader.seek_accurate(first)
            for i in range(first, last + 1):
                frame = self._reader.next()
                if i in wanted:
                    yield frame.asnumpy() if hasattr(frame, "asnumpy") else np.asarray(frame)
        except Exception as e:
            raise VideoError(self._path, f"decord failed decoding frames {first}..{last}: "
                                         f"{_first_line(e)}") from e

    def close(self) -> None:
        self._reader = None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# Backend name -> opener(path, (width, height), index). One more decoder is one more entry.
BACKENDS: dict[str, Callable[[str, tuple[int, int], _Index], _Backend]] = {
    "pyav": _PyAVBackend,
    "decord": _DecordBackend,
}


class WindowDecoder:
    """One open video serving many ``decode(start_s, end_s)`` calls, each seeking anew.

    For a long-lived worker that cuts many windows (sub-actions) out of one video: the
    file is probed and opened once. ``short_side`` in pixels (None or 0: native size);
    ``backend`` one of ``BACKENDS``. Use as a context manager or call ``close()``.
    Not thread-safe: one decoder per thread.
    """

    def __init__(self, path: str | os.PathLike, short_side: int | None = 256, backend: str = "pyav"):
        if backend not in BACKENDS:
            raise InputError(f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)}")
        self.path = os.fspath(path)
        self.backend = backend
        self.info, self._index = _scan(self.path)
        self.size = resized_size(self.info.width, self.info.height, short_side)  # (width, height) pixels
        self._decoder: _Backend | None = BACKENDS[backend](self.path, self.size, self._index)

    def decode(self, start_s: float, end_s: float, *, max_fps: float | None = None) -> Frames:
        """Frames whose time is in ``[start_s, end_s)`` seconds (see the module docstring).

        ``max_fps`` (frames per second) keeps at most one frame in each interval
        ``[k / max_fps, (k + 1) / max_fps)`` of stream time, the earliest one, so the
        selection is deterministic and the same whichever window contains the frames
        (after the window's first frame). Raises VideoError for a window outside the video.
        """
        indices = self.select(start_s, end_s, max_fps=max_fps)
        chunks = list(self._chunks(indices, max(len(indices), 1)))
        return chunks[0] if chunks else self._frames(indices, self._empty())

    def iter_decode(self, start_s: float, end_s: float, *, max_fps: float | None = None,
                    chunk_frames: int = 128) -> Iterator[Frames]:
        """The frames of ``decode(start_s, end_s, max_fps=...)`` in consecutive chunks of at
        most ``chunk_frames`` frames, from one seek and one forward decoding pass: memory
        stays bounded for long windows (a 90 s routine at 30 fps and 456x256 is 0.9 GB of
        RGB). Yields nothing for a window that holds no frame."""
        if chunk_frames < 1:
            raise InputError(f"chunk_frames must be >= 1, got {chunk_frames}")
        return self._chunks(self.select(start_s, end_s, max_fps=max_fps), chunk_frames)

    def _empty(self, n: int = 0) -> np.ndarray:
        width, height = self.size
        return np.empty((n, height, width, 3), dtype=np.uint8)

    def _chunks(self, indices: np.ndarray, chunk_frames: int) -> Iterator[Frames]:
        if self._decoder is None:
            raise InputError(f"{self.path}: decoder is closed")
        if len(indices) == 0:
            return
        decoded = self._decoder.frames(indices)
        for lo in range(0, len(indices), chunk_frames):
            part = indices[lo:lo + chunk_frames]
            rgb = self._empty(len(part))
            for j in range(len(part)):
                frame = next(decoded, None)
                if frame is None or frame.shape != rgb.shape[1:] or frame.dtype != np.uint8:
                    got = "no frame" if frame is None else f"a frame of shape {frame.shape} {frame.dtype}"
                    raise VideoError(self.path, f"{self.backend} returned {got} for frame {part[j]}, "
                                                f"expected {rgb.shape[1:]} uint8")
                rgb[j] = frame
            yield self._frames(part, rgb)

    def _frames(self, indices: np.ndarray, rgb: np.ndarray) -> Frames:
        ticks = self._index.pts[indices] - self._index.origin
        times = np.array([float(int(t) * self._index.time_base) for t in ticks], dtype=np.float64)
        return Frames(rgb=rgb, times_s=times, indices=indices.astype(np.int64))

    def select(self, start_s: float, end_s: float, *, max_fps: float | None = None) -> np.ndarray:
        """Frame numbers (0 = first frame, presentation order) that ``decode`` would return."""
        return self._select(start_s, end_s, max_fps)

    def _select(self, start_s: float, end_s: float, max_fps: float | None) -> np.ndarray:
        """Frame numbers in the window, after the max_fps thinning."""
        start_s, end_s = float(start_s), float(end_s)
        if not (math.isfinite(start_s) and math.isfinite(end_s)) or start_s >= end_s:
            raise InputError(f"window must satisfy start_s < end_s, both finite; got [{start_s}, {end_s})")
        if max_fps is not None and not (max_fps > 0 and math.isfinite(max_fps)):
            raise InputError(f"max_fps must be a positive number of frames per second, got {max_fps}")
        duration = self.info.duration_s
        window = f"window [{start_s:.3f}, {end_s:.3f}) s"
        if start_s < -BOUNDARY_TOLERANCE_S:
            raise VideoError(self.path, f"{window} starts before the video (0 s)")
        if start_s >= duration - BOUNDARY_TOLERANCE_S:
            raise VideoError(self.path, f"{window} starts at or after the end of the video ({duration:.3f} s)")
        if end_s > duration + BOUNDARY_TOLERANCE_S:
            raise VideoError(self.path, f"{window} ends after the end of the video ({duration:.3f} s)")

        tb, origin = self._index.time_base, self._index.origin
        lo = origin + math.ceil((Fraction(start_s) - BOUNDARY_TOLERANCE_S) / tb)  # ticks, inclusive
        hi = origin + math.ceil((Fraction(end_s) - BOUNDARY_TOLERANCE_S) / tb)  # ticks, exclusive
        first, stop = np.searchsorted(self._index.pts, [lo, hi], side="left")
        indices = np.arange(first, stop, dtype=np.int64)
        if max_fps is None or len(indices) < 2:
            return indices
        rate = Fraction(float(max_fps))
        bins = [math.floor(int(self._index.pts[i] - origin) * tb * rate) for i in indices]
        keep = [0] + [k for k in range(1, len(bins)) if bins[k] != bins[k - 1]]
        return indices[keep]

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    def __enter__(self) -> WindowDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_window(path: str | os.PathLike, start_s: float, end_s: float, *, short_side: int | None = 256,
                  backend: str = "pyav", max_fps: float | None = None) -> Frames:
    """Frames of ``path`` whose time is in ``[start_s, end_s)`` seconds, resized at decode
    to ``short_side`` pixels. One-off form of ``WindowDecoder``; see it for the contract."""
    with WindowDecoder(path, short_side=short_side, backend=backend) as decoder:
        return decoder.decode(start_s, end_s, max_fps=max_fps)
