"""cut_unit on videos with known frame times: frame-exact clips, flow, errors (no Ray)."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest

from finegym_ray.preprocess.clips import add_flow, clip_schema, cut_unit, decode_unit
from finegym_ray.preprocess.config import FlowConfig, PreprocessConfig, config_hash
from finegym_ray.preprocess.units import Window
from finegym_ray.video import BOUNDARY_TOLERANCE_S, VideoError, build_flow, decode_jpeg, dequantize_flow
from tests.support.media import read_number

CONFIG = PreprocessConfig(short_side=64)


def window(key: str, start_s: float, end_s: float, video_id: str = "vid") -> Window:
    return Window(key=key, video_id=video_id, start_s=start_s, end_s=end_s, event_id="E_000000_000004",
                  event_label=1)


def frames_in(clip, start_s: float, end_s: float) -> list[int]:
    """Frames whose written time is in [start, end), boundaries within the decoder's 1 us tolerance."""
    lo, hi = Fraction(start_s) - BOUNDARY_TOLERANCE_S, Fraction(end_s) - BOUNDARY_TOLERANCE_S
    return [i for i, t in enumerate(clip.times) if lo <= t < hi]


@pytest.mark.parametrize("rate", ["25", "29.97", "30"])
def test_clip_frames_are_exactly_those_in_the_window(cfr_clips, rate):
    clip = cfr_clips[rate]
    # Boundaries on, just before and just after frame times.
    spans = [(0.0, 1.0), (float(clip.times[10]), float(clip.times[40])), (1.2345, 2.001),
             (float(clip.times[50]) + 1e-4, float(clip.times[80]) - 1e-4), (3.0, float(clip.duration))]
    windows = [window(f"w{i}", s, e) for i, (s, e) in enumerate(spans)]
    result = cut_unit(str(clip.path), windows, CONFIG)
    assert result.errors == []
    rows = {r["key"]: r for r in result.table.to_pylist()}
    for w in windows:
        want = frames_in(clip, w.start_s, w.end_s)
        row = rows[w.key]
        assert row["num_frames"] == len(want) == len(row["rgb"])
        np.testing.assert_allclose(row["frame_times_s"], [float(clip.times[i]) for i in want], atol=1e-9)
        assert [read_number(decode_jpeg(b)) for b in row["rgb"]] == want
        assert len(row["flow_x"]) == len(row["flow_y"]) == len(want) - 1
        assert (row["height"], row["width"]) == (64, 114) == decode_jpeg(row["rgb"][0]).shape[:2]
        assert row["fps"] == pytest.approx(float(clip.fps))
    assert result.frames == sum(r["num_frames"] for r in rows.values())
    assert result.table.schema == clip_schema(with_flow=True)


def test_variable_frame_rate_is_refused_unless_allowed(vfr_clip):
    w = window("w", 0.5, 2.5)
    with pytest.raises(VideoError, match="variable frame rate"):
        cut_unit(str(vfr_clip.path), [w], CONFIG)
    result = cut_unit(str(vfr_clip.path), [w], replace(CONFIG, allow_vfr=True))
    (row,) = result.table.to_pylist()
    want = frames_in(vfr_clip, 0.5, 2.5)
    assert row["num_frames"] == len(want)
    assert [read_number(decode_jpeg(b)) for b in row["rgb"]] == want


def test_long_windows_are_cut_in_chunks_without_changing_the_clip(cfr_clips):
    clip = cfr_clips["30"]
    w = window("w", 0.2, 3.9)
    whole = cut_unit(str(clip.path), [w], replace(CONFIG, chunk_frames=1000)).table.to_pylist()[0]
    chunked = cut_unit(str(clip.path), [w], replace(CONFIG, chunk_frames=7)).table.to_pylist()[0]
    assert chunked == whole  # flow across chunk boundaries included


def test_flow_is_stored_quantized_with_its_bound(cfr_clips):
    clip = cfr_clips["25"]
    row = cut_unit(str(clip.path), [window("w", 0.0, 1.0)], replace(CONFIG, flow_bound=15.0)).table.to_pylist()[0]
    assert row["flow_bound"] == 15.0
    fx = dequantize_flow(decode_jpeg(row["flow_x"][0]), row["flow_bound"])
    assert fx.shape == (64, 114) and fx.dtype == np.float32
    assert np.all(np.abs(fx) <= 15.0 + 1e-6)


def test_flow_none_leaves_the_flow_columns_out(cfr_clips):
    table = cut_unit(str(cfr_clips["25"].path), [window("w", 0.0, 1.0)], replace(CONFIG, flow="none")).table
    assert "flow_x" not in table.column_names and "flow_bound" not in table.column_names
    assert table.column("num_frames").to_pylist() == [25]


def test_max_fps_caps_the_clip_rate(cfr_clips):
    clip = cfr_clips["30"]
    row = cut_unit(str(clip.path), [window("w", 0.0, 2.0)], replace(CONFIG, max_fps=10.0)).table.to_pylist()[0]
    assert row["num_frames"] == 20 and row["fps"] == 10.0
    assert [read_number(decode_jpeg(b)) for b in row["rgb"]] == list(range(0, 60, 3))


def test_bad_windows_are_reported_and_the_others_still_cut(cfr_clips):
    clip = cfr_clips["25"]
    duration = float(clip.duration)
    windows = [window("good", 1.0, 2.0), window("past_end", duration - 0.5, duration + 1.0),
               window("between_frames", 1.001, 1.002), window("good2", 2.0, 2.5)]
    result = cut_unit(str(clip.path), windows, CONFIG)
    assert result.table.column("key").to_pylist() == ["good", "good2"]
    reasons = {e["key"]: e["reason"] for e in result.errors}
    assert set(reasons) == {"past_end", "between_frames"}
    assert "after the end of the video" in reasons["past_end"]
    assert "holds no frame" in reasons["between_frames"]


def test_unusable_videos_raise(broken_files):
    for name in ("missing", "truncated_index_at_end", "garbage"):
        with pytest.raises(VideoError):
            cut_unit(str(broken_files[name]), [window("w", 0.0, 1.0)], CONFIG)


def test_all_windows_failing_gives_an_empty_table_with_the_schema(cfr_clips):
    result = cut_unit(str(cfr_clips["25"].path), [window("w", 10.0, 11.0)], CONFIG)
    assert result.table.num_rows == 0 and result.table.schema == clip_schema(True)
    assert isinstance(result.table, pa.Table) and len(result.errors) == 1


def test_config_validation_and_hash():
    with pytest.raises(ValueError, match="short_side.*unknown flow method 'tvl2'"):
        PreprocessConfig(short_side=255, flow="tvl2")
    with pytest.raises(ValueError, match="nothing to cut"):
        PreprocessConfig(events=False, subactions=False)
    # Worker counts do not change the clips, flow settings do.
    assert config_hash(PreprocessConfig(workers=8)) == config_hash(PreprocessConfig())
    medium = PreprocessConfig(flow=FlowConfig("dis", {"preset": "medium"}))
    assert config_hash(medium) != config_hash(PreprocessConfig())


class Recording:
    """A flow method that records its calls: (frames in the chunk, whether prev was given)."""

    def __init__(self):
        self.calls: list[tuple[int, bool]] = []
        self.method = build_flow("dis")

    def __call__(self, frames, prev=None):
        self.calls.append((len(frames), prev is not None))
        return self.method(frames, prev)


def test_the_flow_method_given_is_called_per_chunk_with_the_previous_chunks_last_frame(cfr_clips):
    clip = cfr_clips["25"]
    flow = Recording()
    config = replace(CONFIG, chunk_frames=10)
    cut = cut_unit(str(clip.path), [window("a", 0.0, 1.0), window("b", 2.0, 2.4)], config, flow)
    # Window a: 25 frames in chunks of 10, 10, 5; window b: 10 frames, a sequence of its own.
    assert flow.calls == [(10, False), (10, True), (5, True), (10, False)]
    assert cut.table.to_pylist() == cut_unit(str(clip.path), [window("a", 0.0, 1.0), window("b", 2.0, 2.4)],
                                             config).table.to_pylist()


def test_decode_then_add_flow_gives_the_clips_of_cut_unit(cfr_clips):
    """The two-stage path (decoding in one actor, flow in another) makes the same rows,
    with flow batched across clips and the pairs between clips dropped."""
    clip = cfr_clips["30"]
    windows = [window("a", 0.0, 1.0), window("past_end", 3.0, 99.0), window("b", 1.5, 1.6),
               window("one_frame", 2.0, 2.02), window("c", 2.5, 3.5)]
    config = replace(CONFIG, chunk_frames=7)
    whole = cut_unit(str(clip.path), windows, config)
    decoded, grey = decode_unit(str(clip.path), windows, config)
    assert decoded.table.schema == clip_schema(with_flow=False)
    assert grey.dtype == np.uint8 and grey.shape == (decoded.frames, 64, 114)
    flow = Recording()
    both = add_flow(decoded, grey, flow, config, batch_pairs=8)
    assert both.table.to_pylist() == whole.table.to_pylist() and both.errors == whole.errors
    assert both.table.schema == clip_schema(with_flow=True)
    assert (both.frames, both.video_seconds) == (whole.frames, whole.video_seconds)
    # One call per 8 pairs over all clips' frames end to end (not one per clip).
    assert sum(n for n, _ in flow.calls) == len(grey) and len(flow.calls) == -(-(len(grey) - 1) // 8)


def test_add_flow_of_a_unit_without_clips(cfr_clips):
    decoded, grey = decode_unit(str(cfr_clips["25"].path), [window("w", 10.0, 11.0)], CONFIG)
    assert grey.shape[0] == 0 and decoded.table.num_rows == 0
    result = add_flow(decoded, grey, build_flow("dis"), CONFIG, batch_pairs=8)
    assert result.table.num_rows == 0 and result.table.schema == clip_schema(True) and len(result.errors) == 1
