"""import-mmaction2: trimmed sub-action videos and rawframes, written here in
mmaction2's exact layout and naming from the session's SynGym, become the store's clips."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from finegym_ray.dataset.manifest import build_manifest_from
from finegym_ray.errors import InputError
from finegym_ray.preprocess.clips import cut_unit
from finegym_ray.preprocess.config import PreprocessConfig, settings_record
from finegym_ray.preprocess.mmaction2 import (
    RAWFRAMES,
    SUBACTIONS,
    find_items,
    frame_count,
    import_config,
    import_unit,
    origin,
    plan_sources,
)
from finegym_ray.preprocess.units import Window
from finegym_ray.video.decode import decode_window, probe, resized_size
from finegym_ray.video.encode import decode_jpeg
from finegym_ray.video.flow import dequantize_flow
from finegym_ray.video_job import FAILED_WINDOW, NO_VIDEO, why_missing, write_error_record
from tests.support.clips import row_digests

CONFIG = PreprocessConfig(short_side=64, workers=1)


# --- mmaction2's layouts, written as its tools write them --------------------------

def subaction_rows(tiny_gym: Path) -> list[dict]:
    return build_manifest_from(str(tiny_gym / "annotations")).subactions.to_pylist()


def window(row: dict) -> Window:
    return Window(row["key"], row["video_id"], row["start_s"], row["end_s"], row["event_id"], row["event_label"])


def raw_frames(tiny_gym: Path, row: dict) -> np.ndarray:
    """(n, H, W, 3) the raw video's frames of the sub-action, at the video's size."""
    return decode_window(tiny_gym / "videos" / f"{row['video_id']}.mp4", row["start_s"], row["end_s"],
                         short_side=0).rgb


def trim_subaction(tiny_gym: Path, row: dict, folder: Path) -> Path:
    """``folder/<key>.mp4`` as trim_subaction.py leaves it (ffmpeg -ss START -t DURATION,
    libx264): the raw video's frames of the sub-action, re-encoded from time 0."""
    rate = Fraction(probe(tiny_gym / "videos" / f"{row['video_id']}.mp4").fps).limit_denominator(1001)
    frames = raw_frames(tiny_gym, row)
    path = folder / f"{row['key']}.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def known_flow(pair: int, height: int, width: int) -> np.ndarray:
    """(H, W, 2) pixels: a smooth field inside denseflow's bound that differs from pair to pair."""
    x = np.broadcast_to(np.linspace(-12.0, 12.0, width, dtype=np.float32)[None, :] + 0.1 * pair, (height, width))
    y = np.full((height, width), 3.0 - 0.25 * pair, np.float32)
    return np.stack([x, y], axis=-1)


def denseflow_quantized(component: np.ndarray) -> np.ndarray:
    """denseflow's CAST with bound 20: 0 below -20, 255 above 20, else round(255 (v + 20) / 40)."""
    return np.where(component > 20, 255, np.where(component < -20, 0, np.rint(255 * (component + 20) / 40))
                    ).astype(np.uint8)


def write_rawframes(folder: Path, rgb: np.ndarray, *, flow_frames: int | None = None) -> None:
    """``folder/img_%05d.jpg`` and ``flow_x_%05d.jpg``, ``flow_y_%05d.jpg`` as
    build_rawframes.py (denseflow) leaves them: ``flow_frames`` flow frames (default one
    fewer than RGB frames), pair j's flow ``known_flow(j)``."""
    folder.mkdir(parents=True)
    height, width = rgb.shape[1:3]
    for i, frame in enumerate(rgb, 1):
        cv2.imwrite(str(folder / f"img_{i:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    for j in range(len(rgb) - 1 if flow_frames is None else flow_frames):
        flow = known_flow(j, height, width)
        cv2.imwrite(str(folder / f"flow_x_{j + 1:05d}.jpg"), denseflow_quantized(flow[..., 0]))
        cv2.imwrite(str(folder / f"flow_y_{j + 1:05d}.jpg"), denseflow_quantized(flow[..., 1]))


def imported(layout: str, root: Path, rows: list[dict], config: PreprocessConfig = CONFIG):
    """``import_unit`` of ``rows`` (one unit) from ``root``."""
    config = import_config(config, layout)
    found = find_items(layout, str(root), {r["key"] for r in rows})
    windows = [window(r) for r in rows]
    sources, failed = plan_sources(windows, found, layout, str(root), config)
    return import_unit(windows, sources, failed, layout, config, None)


# --- without Ray ------------------------------------------------------------------

def test_rawframes_become_clips_of_the_stores_size_with_their_own_flow(tiny_gym, tmp_path):
    row = subaction_rows(tiny_gym)[0]
    rgb = raw_frames(tiny_gym, row)[:12]
    n, height, width = rgb.shape[:3]
    for variant, flow_frames in (("denseflow", None), ("as many flow as RGB frames", n)):
        root = tmp_path / variant.replace(" ", "_")
        write_rawframes(root / row["key"], rgb, flow_frames=flow_frames)
        result = imported(RAWFRAMES, root, [row])
        assert result.errors == []
        clip = result.table.to_pylist()[0]
        size = resized_size(width, height, CONFIG.short_side)
        assert (clip["num_frames"], clip["width"], clip["height"]) == (n, *size)
        assert clip["fps"] == pytest.approx(n / (row["end_s"] - row["start_s"]))
        assert clip["frame_times_s"][0] == row["start_s"] and len(clip["frame_times_s"]) == n
        assert (clip["start_s"], clip["end_s"], clip["video_id"]) == (row["start_s"], row["end_s"], row["video_id"])
        first = decode_jpeg(clip["rgb"][0])
        assert first.shape == (size[1], size[0], 3)
        assert np.abs(first.astype(int) - cv2.resize(rgb[0], size, interpolation=cv2.INTER_AREA)).mean() < 4
        assert len(clip["flow_x"]) == len(clip["flow_y"]) == n - 1 and clip["flow_bound"] == CONFIG.flow_bound
        scale = np.array([size[0] / width, size[1] / height], np.float32)
        for j in (0, n - 2):
            got = np.stack([dequantize_flow(decode_jpeg(clip[c][j]), clip["flow_bound"]) for c in ("flow_x", "flow_y")],
                           axis=-1)
            want = cv2.resize(known_flow(j, height, width), size, interpolation=cv2.INTER_AREA) * scale
            # Two quantizations of 40/255 px steps and two JPEG encodings of a smooth field.
            assert np.abs(got - want).mean() < 0.15 and np.abs(got - want).max() < 0.5, j


def test_a_trimmed_video_becomes_the_clip_preprocessing_cuts_from_the_raw_video(tiny_gym, tmp_path):
    row = subaction_rows(tiny_gym)[1]
    trim_subaction(tiny_gym, row, tmp_path)
    result = imported(SUBACTIONS, tmp_path, [row])
    assert result.errors == []
    got = result.table.to_pylist()[0]
    cut = cut_unit(str(tiny_gym / "videos" / f"{row['video_id']}.mp4"), [window(row)], CONFIG).table.to_pylist()[0]
    assert {k: got[k] for k in ("key", "start_s", "end_s", "num_frames", "height", "width", "flow_bound")} == \
        {k: cut[k] for k in ("key", "start_s", "end_s", "num_frames", "height", "width", "flow_bound")}
    assert got["fps"] == pytest.approx(cut["fps"])
    assert np.allclose(got["frame_times_s"], cut["frame_times_s"], atol=1 / cut["fps"])
    assert len(got["flow_x"]) == got["num_frames"] - 1
    # Re-encoded once more than the raw video's frames: close, not equal.
    assert np.abs(decode_jpeg(got["rgb"][-1]).astype(int) - decode_jpeg(cut["rgb"][-1])).mean() < 6


def test_frame_folders_with_gaps_or_disagreeing_counts_are_refused_with_why():
    names = [f"{k}_{i:05d}.jpg" for k in ("img", "flow_x", "flow_y") for i in range(1, 6)]
    assert frame_count(names, with_flow=True) == (5, None)  # as many flow frames as RGB frames
    denseflow = [n for n in names if not n.endswith("_00005.jpg") or n.startswith("img")]
    assert frame_count([*denseflow, "notes.txt"], with_flow=True) == (5, None)
    assert frame_count([n for n in names if n != "img_00003.jpg"], with_flow=True) == (
        0, "frames missing: img_00003.jpg of img_00001..00005.jpg")
    gap = [n for n in names if n not in ("flow_y_00002.jpg", "flow_y_00004.jpg")]
    assert frame_count(gap, with_flow=True) == (0, "frames missing: flow_y_00002.jpg and 1 more of "
                                                   "flow_y_00001..00005.jpg")
    short = [n for n in names if not n.startswith("flow_x") or n < "flow_x_00004"]
    assert frame_count(short, with_flow=True) == (0, "5 RGB frames but 3 flow_x and 5 flow_y frames (expected 4 "
                                                     "of each, or 5)")
    assert frame_count(short, with_flow=False) == (5, None)  # flow=none reads RGB only
    assert frame_count(["img_00000.jpg", "img_00001.jpg"], with_flow=False)[1] == (
        "img frames numbered from img_00000.jpg, not img_00001.jpg")
    assert frame_count(names[5:], with_flow=True) == (0, "no RGB frames (img_00001.jpg ...)")


def test_each_sub_action_that_cannot_be_imported_is_recorded_with_why(tiny_gym, tmp_path):
    rows = [r for r in subaction_rows(tiny_gym) if r["video_id"] == subaction_rows(tiny_gym)[0]["video_id"]][:5]
    good, gap, mismatched, corrupt, absent = rows
    for row in (good, gap, mismatched, corrupt):
        write_rawframes(tmp_path / row["key"], raw_frames(tiny_gym, row)[:4])
    (tmp_path / gap["key"] / "img_00002.jpg").unlink()
    (tmp_path / mismatched["key"] / "flow_y_00003.jpg").unlink()
    (tmp_path / corrupt["key"] / "img_00004.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "gym99_val_frame.txt").write_text("a list, not a sub-action\n")
    other = tmp_path / "0LtLS9wROrk_E_002407_002435_A_0003_0005"  # a key of other annotations
    other.mkdir()
    (other / "img_00001.jpg").write_bytes(b"")
    found = find_items(RAWFRAMES, str(tmp_path), {r["key"] for r in subaction_rows(tiny_gym)})
    assert {name: reason for name, (_uri, reason) in found.unknown.items()} == {
        "gym99_val_frame.txt": "its name is not a FineGym sub-action key (<youtube_id>_E_XXXXXX_YYYYYY_A_ZZZZ_WWWW)",
        "0LtLS9wROrk_E_002407_002435_A_0003_0005": "its name is a FineGym key, but not of a sub-action of these "
                                                   "annotations"}
    result = imported(RAWFRAMES, tmp_path, rows)
    assert result.table.column("key").to_pylist() == [good["key"]]
    reasons = {e["key"]: e["reason"] for e in result.errors}
    assert reasons == {gap["key"]: "frames missing: img_00002.jpg of img_00001..00004.jpg",
                       mismatched["key"]: "4 RGB frames but 3 flow_x and 2 flow_y frames (expected 3 of each, or 4)",
                       corrupt["key"]: "img_00004.jpg: not a decodable JPEG (10 bytes)",
                       absent["key"]: f"no frame folder {absent['key']}/ under {tmp_path}"}
    out = str(tmp_path / "out")
    write_error_record(out, "unit", scope="windows", reason="4 of 5 window(s) failed", windows=result.errors)
    assert why_missing(out) == {gap["key"]: FAILED_WINDOW, mismatched["key"]: FAILED_WINDOW,
                                corrupt["key"]: FAILED_WINDOW, absent["key"]: NO_VIDEO}
    trimmed = tmp_path / "trimmed"
    trimmed.mkdir()
    trim_subaction(tiny_gym, good, trimmed)
    (trimmed / f"{corrupt['key']}.mp4").write_bytes(b"\0" * 100)
    result = imported(SUBACTIONS, trimmed, rows)
    assert result.table.column("key").to_pylist() == [good["key"]]
    reasons = {e["key"]: e["reason"] for e in result.errors}
    assert reasons[absent["key"]] == f"no video file {absent['key']}.* under {trimmed}"
    assert corrupt["key"] in reasons and len(reasons) == 4


def test_a_folder_without_items_of_the_layout_or_without_one_key_is_refused(tiny_gym, tmp_path):
    keys = {r["key"] for r in subaction_rows(tiny_gym)}
    with pytest.raises(InputError, match="no folders of frames"):
        find_items(RAWFRAMES, str(tmp_path), keys)
    (tmp_path / "other.mp4").write_bytes(b"")
    with pytest.raises(InputError, match=r"none of its 1 item\(s\) is named by a sub-action key.*'other'"):
        find_items(SUBACTIONS, str(tmp_path), keys)


def test_the_import_records_its_origin_and_what_it_cannot_honour_is_refused(tmp_path, capsys):
    from finegym_ray.cli import main
    from finegym_ray.preprocess.pipeline import check_settings, record_settings

    assert main(["import-mmaction2", "--rawframes", "F", "--print-config"]) == 0
    assert "method: tvl1" in capsys.readouterr().out  # the frames' own flow, recorded as what it is
    assert main(["import-mmaction2", "--rawframes", "F", "--set", "max_fps=10", "--print-config"]) == 2
    assert "rawframes carry no frame times" in capsys.readouterr().err
    assert main(["import-mmaction2", "--subactions", "F", "--set", "events=true", "--print-config"]) == 2
    assert origin(import_config(CONFIG, RAWFRAMES), RAWFRAMES) == (
        "imported from mmaction2 rawframes; flow tvl1 (denseflow JPEG, bound 20)")
    assert origin(CONFIG, SUBACTIONS) == ("imported from mmaction2 trimmed sub-action videos; flow dis computed "
                                          "at import")
    record_settings(settings_record(CONFIG, origin(CONFIG, SUBACTIONS)), str(tmp_path))
    with pytest.raises(InputError, match=r"other settings \(changed: origin"):
        check_settings(settings_record(CONFIG), str(tmp_path))  # preprocessing into it


# --- on Ray: the job ----------------------------------------------------------------

def test_an_import_records_each_key_resumes_and_is_read_as_training_reads_a_store(ray_cluster, tiny_gym, tmp_path):
    from finegym_ray.preprocess.import_mmaction2 import format_import_summary, run_import
    from finegym_ray.train.config import TrainConfig
    from finegym_ray.train.data import SampleClips, present_split_labels, shards_with
    from finegym_ray.train.run import training_labels

    rows = subaction_rows(tiny_gym)
    videos = sorted({r["video_id"] for r in rows})
    absent = [r for r in rows if r["video_id"] == videos[2]]
    gap, mismatched, *good = [r for r in rows if r["video_id"] != videos[2]]
    root = tmp_path / "subaction_frames"
    for row in (gap, mismatched, *good):
        write_rawframes(root / row["key"], raw_frames(tiny_gym, row)[:6])
    (root / gap["key"] / "img_00002.jpg").rename(tmp_path / "img_00002.jpg")
    (root / mismatched["key"] / "flow_x_00005.jpg").unlink()
    (root / "README").mkdir()
    (root / "README" / "img_00001.jpg").write_bytes(b"")
    out = str(tmp_path / "store")

    def run() -> dict:
        return run_import(CONFIG, str(tiny_gym / "annotations"), RAWFRAMES, str(root), out, say=lambda _m: None)

    first = run()
    assert first["keys"] == {"planned": len(rows), "imported": len(good), "failed": 2, "not_present": len(absent)}
    assert first["units"]["nothing_to_import"] == 1 and first["unknown_items"] == 1
    assert f"{len(good)} imported, 2 failed, {len(absent)} not present" in format_import_summary(first)
    why = why_missing(out)
    assert {why[gap["key"]], why[mismatched["key"]]} == {FAILED_WINDOW}
    assert {why[r["key"]] for r in absent} == {NO_VIDEO}
    records = [json.loads(p.read_text()) for p in (tmp_path / "store" / "errors").glob("unknown_item.*.json")]
    assert [(r["item"], r["scope"]) for r in records] == [("README", "name")]
    clips = pq.read_table(tmp_path / "store" / "clips")
    assert sorted(clips.column("key").to_pylist()) == sorted(r["key"] for r in good)
    assert set(clips.column("num_frames").to_pylist()) == {6} and set(clips.column("height").to_pylist()) == {64}
    digests = row_digests(clips)

    (tmp_path / "img_00002.jpg").rename(root / gap["key"] / "img_00002.jpg")  # the missing frame is back
    again = run()  # resumes: only the unit that has a key more to import
    assert again["units"]["done"] == 1 and again["keys"]["imported"] == len(good) + 1
    assert row_digests(pq.read_table(tmp_path / "store" / "clips")) == {
        **digests, gap["key"]: row_digests(pq.read_table(tmp_path / "store" / "clips"))[gap["key"]]}

    lines = []
    config = TrainConfig(data=out, task="gym99", modality="flow", segments=2, frames_per_segment=2, crop=32,
                         test_short=64, val_every=0)
    train, _ = training_labels(config, say=lines.append)
    assert lines[0] == "clips imported from mmaction2 rawframes; flow tvl1 (denseflow JPEG, bound 20)"
    assert train.labels and set(train.labels) <= {r["key"] for r in (gap, *good)}
    assert set(train.absent.values()) <= {NO_VIDEO, FAILED_WINDOW}
    assert present_split_labels(out, "gym99", "train").labels == train.labels
    shard = pq.read_table(shards_with(out, train.labels)[0]).to_pydict()
    batch = {k: np.empty(len(v), dtype=object) for k, v in shard.items()}
    for k, v in shard.items():
        batch[k][:] = v
    sampled = SampleClips(config, train.labels, train=True)(batch)
    assert sampled["x"].shape[1:] == (2, 4, 32, 32)  # segments x (2 frames of x and y flow)
