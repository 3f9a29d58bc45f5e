"""Window decoding against frame times known independently (written by the fixtures)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from finegym_ray.video import (
    BACKENDS,
    BOUNDARY_TOLERANCE_S,
    VideoError,
    WindowDecoder,
    decode_window,
    probe,
    resized_size,
)
from tests.support.media import read_numbers, write_blank_video

BACKEND_NAMES = sorted(BACKENDS)


def expected_frames(clip, start_s: float, end_s: float) -> list[int]:
    """Frame numbers with start <= t < end, from the times the fixture wrote."""
    lo = Fraction(start_s) - BOUNDARY_TOLERANCE_S
    hi = Fraction(end_s) - BOUNDARY_TOLERANCE_S
    return [i for i, t in enumerate(clip.times) if lo <= t < hi]


def assert_window(clip, frames, start_s, end_s):
    want = expected_frames(clip, start_s, end_s)
    assert frames.indices.tolist() == want
    assert read_numbers(frames.rgb) == want, "pixels show other frames than the indices claim"
    np.testing.assert_allclose(frames.times_s, [float(clip.times[i]) for i in want], rtol=0, atol=1e-9)
    assert frames.rgb.dtype == np.uint8 and frames.rgb.shape[0] == len(want)
    assert frames.times_s.dtype == np.float64 and frames.indices.dtype == np.int64


# ---------------------------------------------------------------------------------- sizes

@pytest.mark.parametrize("size, short_side, expected", [
    ((1280, 720), 256, (456, 256)),   # 455.1 rounds to the even 456
    ((1920, 1080), 256, (456, 256)),
    ((720, 1280), 256, (256, 456)),   # portrait: the width is the short side
    ((640, 480), 256, (342, 256)),    # 341.3 -> 342
    ((160, 90), 64, (114, 64)),
    ((256, 256), 128, (128, 128)),
    ((1281, 721), None, (1281, 721)),  # native, even when odd
    ((1280, 720), 0, (1280, 720)),
])
def test_resized_size(size, short_side, expected):
    assert resized_size(*size, short_side) == expected


@pytest.mark.parametrize("short_side", [255, -256])
def test_resized_size_rejects_odd_or_negative(short_side):
    with pytest.raises(ValueError, match="even"):
        resized_size(1280, 720, short_side)


@given(st.integers(16, 4096), st.integers(16, 4096), st.integers(1, 512).map(lambda k: 2 * k))
def test_resized_size_keeps_aspect_and_even(width, height, short_side):
    w, h = resized_size(width, height, short_side)
    assert w % 2 == 0 and h % 2 == 0
    assert min(w, h) == short_side
    exact_long = max(width, height) * short_side / min(width, height)
    assert abs(max(w, h) - exact_long) <= 1 or max(w, h) == 2
    if width != height:  # orientation kept (rounding may make a near-square frame square)
        assert (w >= h) if width > height else (h >= w)


# ---------------------------------------------------------------------------------- probe

def test_probe_constant_rate(cfr_clip):
    info = probe(cfr_clip.path)
    assert (info.width, info.height, info.codec) == (160, 90, "h264")
    assert Fraction(info.fps_num, info.fps_den) == cfr_clip.fps
    assert info.fps == pytest.approx(float(cfr_clip.fps))
    assert info.num_frames == len(cfr_clip.times)
    assert info.duration_s == pytest.approx(float(cfr_clip.duration), abs=1e-9)
    assert info.is_vfr is False


def test_probe_detects_variable_rate(vfr_clip):
    info = probe(vfr_clip.path)
    assert info.is_vfr is True
    assert info.num_frames == len(vfr_clip.times)
    assert info.duration_s == pytest.approx(float(vfr_clip.duration), abs=1e-9)
    # The mean rate over the file, not the nominal 30 the stream was created with.
    assert info.fps == pytest.approx((len(vfr_clip.times) - 1) / float(vfr_clip.times[-1]), rel=1e-3)


# ---------------------------------------------------------------------------------- windows

def cfr_windows(clip):
    d = float(1 / clip.fps)  # seconds per frame
    end = float(clip.duration)
    return {
        "from_start": (0.0, 1.0),
        "mid_gop": (1.3, 1.9),  # keyframes every 25 frames: 1.0 s at 25 fps, 0.83 s at 30
        "across_keyframe": (0.9, 1.2),
        "between_frames": (0.051, 0.13),
        "exact_frame_times": (10 * d, 20 * d),  # frames 10..19, boundaries from floats
        "sub_frame_empty": (30.2 * d, 30.8 * d),  # inside the file, no frame starts: 0 frames
        "sub_frame_one": (30.9 * d, 31.5 * d),
        "to_the_end": (end - 0.5, end),
        "whole": (0.0, end),
    }


WINDOW_NAMES = ["from_start", "mid_gop", "across_keyframe", "between_frames", "exact_frame_times",
                "sub_frame_empty", "sub_frame_one", "to_the_end", "whole"]


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("window", WINDOW_NAMES)
def test_constant_rate_windows_are_exact(cfr_clip, window, backend):
    start, end = cfr_windows(cfr_clip)[window]
    frames = decode_window(cfr_clip.path, start, end, short_side=None, backend=backend)
    assert_window(cfr_clip, frames, start, end)


def test_documented_edge_counts(cfr_clips):
    clip = cfr_clips["25"]  # frames every 0.04 s
    assert decode_window(clip.path, 0.04, 0.12, short_side=None).indices.tolist() == [1, 2]
    assert len(decode_window(clip.path, 0.041, 0.079, short_side=None)) == 0
    empty = decode_window(clip.path, 0.041, 0.079, short_side=64)
    assert empty.rgb.shape == (0, 64, 114, 3) and empty.times_s.shape == (0,)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_variable_rate_windows_are_exact(vfr_clip, backend):
    end = float(vfr_clip.duration)
    t = [float(x) for x in vfr_clip.times]
    windows = [(0.0, 1.0), (1.234, 2.5), (t[40], t[60]), (t[40] + 1e-3, t[41] - 1e-3), (end - 1.0, end)]
    with WindowDecoder(vfr_clip.path, short_side=None, backend=backend) as decoder:
        for start, stop in windows:
            assert_window(vfr_clip, decoder.decode(start, stop), start, stop)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_random_windows_on_one_open_decoder(cfr_clips, backend):
    """The long-lived worker pattern: many windows, seeking back and forth."""
    clip = cfr_clips["29.97"]
    duration = float(clip.duration)
    with WindowDecoder(clip.path, short_side=None, backend=backend) as decoder:

        @settings(max_examples=60, deadline=None, derandomize=True)
        @given(st.floats(0, duration, exclude_max=True), st.floats(0.001, 1.5))
        def check(start, length):
            end = start + length
            if end > duration:
                with pytest.raises(VideoError, match="end of the video"):
                    decoder.decode(start, end)
            else:
                assert_window(clip, decoder.decode(start, end), start, end)

        check()
        # after reading to the very end, the decoder must still seek back
        assert_window(clip, decoder.decode(duration - 0.2, duration), duration - 0.2, duration)
        assert_window(clip, decoder.decode(0.0, 0.2), 0.0, 0.2)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("chunk_frames", [1, 7, 1000])
def test_iter_decode_chunks_join_to_the_window(cfr_clips, vfr_clip, backend, chunk_frames):
    """Chunked decoding (for long event windows) gives the same frames as one decode,
    in chunks of at most chunk_frames, and then still seeks back for the next window."""
    for clip in (cfr_clips["29.97"], vfr_clip):
        with WindowDecoder(clip.path, short_side=None, backend=backend) as decoder:
            for start, end in [(0.3, 2.9), (1.0, 1.01)]:
                chunks = list(decoder.iter_decode(start, end, chunk_frames=chunk_frames))
                assert all(0 < len(c) <= chunk_frames for c in chunks)
                whole = decoder.decode(start, end)
                joined = np.concatenate([c.indices for c in chunks]) if chunks else np.empty(0, np.int64)
                assert joined.tolist() == whole.indices.tolist() == expected_frames(clip, start, end)
                if chunks:
                    assert read_numbers(np.concatenate([c.rgb for c in chunks])) == whole.indices.tolist()
            assert_window(clip, decoder.decode(0.0, 0.5), 0.0, 0.5)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
def test_resize_at_decode(cfr_clips, backend):
    clip = cfr_clips["25"]
    frames = decode_window(clip.path, 1.0, 1.5, short_side=64, backend=backend)
    assert frames.rgb.shape == (13, 64, 114, 3)  # 1.00, 1.04, ..., 1.48 s
    assert read_numbers(frames.rgb) == list(range(25, 38))
    default = decode_window(clip.path, 1.0, 1.1, backend=backend)  # short side 256 by default
    assert default.rgb.shape == (3, 256, 456, 3)


# ---------------------------------------------------------------------------------- max_fps

def test_max_fps_halves_30fps(cfr_clips):
    clip = cfr_clips["30"]
    frames = decode_window(clip.path, 0.0, 2.0, short_side=None, max_fps=15)
    assert frames.indices.tolist() == list(range(0, 60, 2))
    assert read_numbers(frames.rgb) == list(range(0, 60, 2))


def test_max_fps_at_or_above_the_rate_keeps_every_frame(cfr_clips):
    clip = cfr_clips["25"]
    frames = decode_window(clip.path, 0.5, 1.5, short_side=None, max_fps=25)
    assert frames.indices.tolist() == list(range(13, 38))  # 0.52 .. 1.48 s
    assert len(decode_window(clip.path, 0.5, 1.5, short_side=None, max_fps=100)) == 25


def test_max_fps_is_an_evenly_capped_subset(cfr_clips):
    with WindowDecoder(cfr_clips["25"].path, short_side=None) as decoder:

        @settings(max_examples=40, deadline=None, derandomize=True)
        @given(st.floats(0, 3.0), st.floats(0.05, 1.0), st.sampled_from([1.0, 7.5, 10.0, 12.0, 29.97]))
        def check(start, length, max_fps):
            frames = decoder.decode(start, start + length, max_fps=max_fps)
            full = decoder.decode(start, start + length)
            assert set(frames.indices.tolist()) <= set(full.indices.tolist())
            assert len(frames) <= int(np.ceil(length * max_fps)) + 1
            if len(full):
                assert frames.indices[0] == full.indices[0]  # the window's first frame is always kept
            # no two kept frames in the same 1/max_fps interval of stream time
            bins = np.floor(frames.times_s * max_fps + 1e-9)
            assert len(set(bins.tolist())) == len(bins)

        check()


# ---------------------------------------------------------------------------------- backends agree

@pytest.mark.parametrize("max_fps", [None, 10.0])
def test_backends_agree(cfr_clips, vfr_clip, max_fps):
    for clip in [*cfr_clips.values(), vfr_clip]:
        end = float(clip.duration)
        with WindowDecoder(clip.path, 64, "pyav") as a, WindowDecoder(clip.path, 64, "decord") as b:
            assert a.info == b.info
            for start, stop in [(0.0, 1.5), (0.77, 2.27), (end - 1.5, end), (1.01, 1.02)]:
                fa, fb = a.decode(start, stop, max_fps=max_fps), b.decode(start, stop, max_fps=max_fps)
                assert fa.indices.tolist() == fb.indices.tolist()
                assert np.array_equal(fa.times_s, fb.times_s)
                assert fa.rgb.shape == fb.rgb.shape
                assert read_numbers(fa.rgb) == read_numbers(fb.rgb) == fa.indices.tolist()
                if len(fa):
                    diff = np.abs(fa.rgb.astype(np.int16) - fb.rgb.astype(np.int16))
                    assert diff.mean() < 2.0, "the backends should scale alike (both bicubic)"


# ---------------------------------------------------------------------------------- errors

BROKEN_REASONS = {
    "missing": "file not found",
    "truncated_index_at_end": "not a readable video container",  # the mp4 index (moov) was cut off
    "truncated_index_at_start": "truncated",  # the index lists frames the file no longer holds
    "garbage": "not a readable video container",
    "text": "not a readable video container",
    "empty": "not a readable video container",
    "audio_only": "no video stream",
    "directory": "not a regular file",
}


@pytest.mark.parametrize("name", list(BROKEN_REASONS))
def test_broken_files_raise_video_error(broken_files, name):
    path = broken_files[name]
    with pytest.raises(VideoError, match=BROKEN_REASONS[name]) as info:
        probe(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    for backend in BACKEND_NAMES:
        with pytest.raises(VideoError, match=BROKEN_REASONS[name]):
            decode_window(path, 0.0, 1.0, backend=backend)



def test_frames_above_the_size_bound_are_refused_before_any_is_decoded(tmp_path):
    # 4128x4096 is just above the bound of 4096x4096 pixels (16.8 Mpixels) and cheap to
    # write; a 12000x12000 frame took 1 GB per decoder before the bound.
    big = write_blank_video(tmp_path / "big.mp4", size=(4128, 4096))
    reason = r"frame size 4128x4096 \(16.9 Mpixels\) is above the 16.8 Mpixels \(4096x4096\)"
    with pytest.raises(VideoError, match=reason):
        probe(big)
    for backend in BACKEND_NAMES:
        with pytest.raises(VideoError, match=reason):
            decode_window(big, 0.0, 0.1, backend=backend)
    at_bound = probe(write_blank_video(tmp_path / "at_bound.mp4", size=(4096, 4096), num_frames=1))
    assert (at_bound.width, at_bound.height) == (4096, 4096)


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("start, end, reason", [
    (5.0, 6.0, "starts at or after the end"),
    (4.0, 4.5, "starts at or after the end"),  # duration is exactly 4 s
    (3.5, 4.5, "ends after the end"),  # partly past the end: an error, not a short clip
    (3.5, 4.0 + 1e-3, "ends after the end"),
    (-0.5, 0.5, "starts before the video"),
])
def test_windows_outside_the_video_raise(cfr_clips, backend, start, end, reason):
    with pytest.raises(VideoError, match=reason) as info:
        decode_window(cfr_clips["25"].path, start, end, backend=backend)
    assert "4.000 s" in str(info.value) or "before" in reason


@pytest.mark.parametrize("start, end, kwargs", [
    (1.0, 1.0, {}), (2.0, 1.0, {}), (float("nan"), 1.0, {}), (0.0, 1.0, {"max_fps": 0}),
    (0.0, 1.0, {"max_fps": -5.0}),
])
def test_bad_arguments_are_value_errors(cfr_clips, start, end, kwargs):
    with pytest.raises(ValueError):
        decode_window(cfr_clips["25"].path, start, end, **kwargs)


def test_unknown_backend_lists_the_choices(cfr_clips):
    with pytest.raises(ValueError, match="decord.*pyav"):
        decode_window(cfr_clips["25"].path, 0.0, 1.0, backend="opencv")


def test_closed_decoder_refuses(cfr_clips):
    decoder = WindowDecoder(cfr_clips["25"].path)
    decoder.close()
    decoder.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        decoder.decode(0.0, 1.0)


# ---------------------------------------------------------------------------------- seeking

class _CountingContainer:
    """Wraps the PyAV container of a decoder: counts demuxed packets and can make the
    first seek land late, as a demuxer indexing keyframes by decode time can."""

    def __init__(self, container, late_ticks: int = 0):
        self._container = container
        self.late_ticks = late_ticks
        self.packets = 0
        self.seeks = []

    def seek(self, offset, **kwargs):
        self.seeks.append(offset)
        late, self.late_ticks = self.late_ticks, 0
        return self._container.seek(offset + late, **kwargs)

    def demux(self, *args):
        for packet in self._container.demux(*args):
            self.packets += 1
            yield packet

    def close(self):
        self._container.close()


def test_pyav_seeks_to_the_keyframe_and_stops_at_the_window_end(cfr_clips):
    clip = cfr_clips["25"]  # keyframes at frames 0, 25, 50, 75 (1 s apart)
    with WindowDecoder(clip.path, short_side=None) as decoder:
        spy = decoder._decoder._container = _CountingContainer(decoder._decoder._container)
        assert_window(clip, decoder.decode(2.3, 2.9), 2.3, 2.9)  # frames 58..72
        # from the keyframe at frame 50 to frame 72, plus the B-frame reordering delay
        second = int(1 / decoder._index.time_base)  # ticks
        assert spy.seeks == [2 * second]
        assert 23 <= spy.packets <= 23 + 4


def test_pyav_retries_from_an_earlier_keyframe_when_a_seek_lands_late(cfr_clips):
    clip = cfr_clips["25"]
    with WindowDecoder(clip.path, short_side=None) as decoder:
        second = int(1 / decoder._index.time_base)  # ticks
        spy = decoder._decoder._container = _CountingContainer(decoder._decoder._container, late_ticks=second)
        assert_window(clip, decoder.decode(2.3, 2.9), 2.3, 2.9)
        assert spy.seeks == [2 * second, 1 * second]  # landed at 3 s, then from the keyframe before
