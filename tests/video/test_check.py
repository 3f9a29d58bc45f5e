"""`finegym-ray check`: every annotated video present, readable, long enough, constant rate."""

import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

from finegym_ray import storage
from finegym_ray.video.check import check_videos, run_check
from tests.support.media import write_blank_video

ANNOTATION_JSON = "finegym_annotation_info_v1.1.json"
BLOCK_RAY_AND_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
"""


@pytest.fixture(scope="module")
def broken_gym(tiny_gym, cfr_clips, vfr_clip, broken_files, tmp_path_factory):
    """tiny_gym with its first video deleted, its second cut to half its bytes, an event
    past the end of its third, and three more annotated videos: a whole 4 s one (ok), a
    variable-rate one and a half download whose index survived (faststart)."""
    root = tmp_path_factory.mktemp("broken_gym")
    shutil.copytree(tiny_gym / "annotations", root / "annotations")
    shutil.copytree(tiny_gym / "videos", root / "videos")
    ann = json.loads((root / "annotations" / ANNOTATION_JSON).read_text())
    missing, truncated, short = sorted(ann)
    (root / "videos" / f"{missing}.mp4").unlink()
    data = (root / "videos" / f"{truncated}.mp4").read_bytes()
    (root / "videos" / f"{truncated}.mp4").write_bytes(data[: len(data) // 2])
    ann[short]["E_000900_000910"] = {"event": 1, "timestamps": [[900.0, 910.5]], "segments": None}
    for vid, path, end in (("okvid_00001", cfr_clips["25"].path, 3.5), ("vfrvid_0001", vfr_clip.path, 3.0),
                           ("partial_001", broken_files["truncated_index_at_start"], 3.5)):
        shutil.copy(path, root / "videos" / f"{vid}.mp4")
        ann[vid] = {"E_000000_000003": {"event": 1, "timestamps": [[0.5, end]], "segments": None}}
    (root / "annotations" / ANNOTATION_JSON).write_text(json.dumps(ann))
    return root, {"missing": missing, "truncated": truncated, "short": short}


def test_each_kind_of_bad_video_is_named_in_the_csv_and_exit_is_1(broken_gym, tmp_path):
    root, ids = broken_gym
    out = tmp_path / "check.csv"
    # Without Ray or torch: importing either fails the command.
    code = BLOCK_RAY_AND_TORCH + "from finegym_ray.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    r = subprocess.run([sys.executable, "-c", code, "check", "--annotations", root / "annotations",
                        "--videos", root / "videos", "--csv", out], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    rows = {row["video_id"]: row for row in csv.DictReader(out.open())}
    status = {vid: row["status"] for vid, row in rows.items()}
    assert status == {ids["missing"]: "missing", ids["truncated"]: "unreadable", ids["short"]: "too_short",
                      "okvid_00001": "ok", "vfrvid_0001": "vfr", "partial_001": status["partial_001"]}, status
    # Half a faststart download opens (its index is whole) but its second half is gone.
    assert status["partial_001"] in ("too_short", "unreadable"), rows["partial_001"]
    assert "910.50 s" in rows[ids["short"]]["problem"]
    ok = rows["okvid_00001"]
    assert (float(ok["fps"]), ok["vfr"], ok["width"], ok["height"], ok["codec"]) == (25.0, "False", "160", "90",
                                                                                      "h264")
    assert abs(float(ok["duration_s"]) - 4.0) < 0.05 and 2.5 <= float(ok["decoded_end_s"]) <= 3.5
    assert rows["vfrvid_0001"]["vfr"] == "True"
    assert rows[ids["missing"]]["uri"] == "" and int(rows[ids["missing"]]["events"]) >= 2
    lines = r.stdout.strip().splitlines()
    summary = next(line for line in lines if "annotated videos checked" in line)
    assert "6 annotated videos checked" in summary and "1 ok, 1 missing" in summary and \
        "1 variable frame rate" in summary, r.stdout
    coverage_csv = tmp_path / "check_coverage.csv"
    assert lines[-2] == f"csv: {out} (per video), {coverage_csv} (per task and split)"
    # What that costs: tiny_gym's three videos hold every labelled sub-action, and none of
    # them can be cut; of the routines, only the one of the video that is ok remains.
    cost = {(row["task"], row["split"]): row for row in csv.DictReader(coverage_csv.open())}
    assert {"gym99", "gym288", "set", "event"} <= {task for task, _ in cost}
    assert all(row["present"] == "0" and row["missing"] == row["labelled"] != "0" and row["missing_videos"] == "3"
               for (task, _), row in cost.items() if task != "event")
    assert sum(int(row["present"]) for (task, _), row in cost.items() if task == "event") == 1
    table = lines[lines.index("labelled keys of the videos that can be cut, per task and split:") + 1:-2]
    assert table[0].split()[:3] == ["task", "split", "cuttable"] and len(table) == len(cost) + 1
    assert all(line.split()[2] == "0" and line.endswith("3 videos") for line in table[1:] if line.startswith("gym"))
    assert "Traceback" not in r.stderr


def test_allow_vfr_and_all_present_exit_0(tiny_gym, vfr_clip, tmp_path):
    shutil.copytree(tiny_gym / "annotations", tmp_path / "annotations")
    shutil.copytree(tiny_gym / "videos", tmp_path / "videos")
    ann = json.loads((tmp_path / "annotations" / ANNOTATION_JSON).read_text())
    ann["vfrvid_0001"] = {"E_000000_000003": {"event": 1, "timestamps": [[0.5, 3.0]], "segments": None}}
    (tmp_path / "annotations" / ANNOTATION_JSON).write_text(json.dumps(ann))
    shutil.copy(vfr_clip.path, tmp_path / "videos" / "vfrvid_0001.mp4")
    said = []
    args = (str(tmp_path / "annotations"), str(tmp_path / "videos"), str(tmp_path / "c.csv"))
    assert run_check(*args, say=said.append) == 1
    assert run_check(*args, allow_vfr=True, say=said.append) == 0
    assert said[-1] == "every annotated video can be cut"
    table = [m for m in said if m.startswith("labelled keys of the videos that can be cut")][-1].splitlines()[2:]
    assert table and all(line.split()[4:6] == ["0", "100.0%"] for line in table)


def test_videos_on_s3_are_checked_in_place(tiny_gym, s3_prefix):
    videos = sorted((tiny_gym / "videos").iterdir())
    for path in videos[1:]:
        storage.upload_file(path, storage.join(s3_prefix, "videos", path.name))
    results = {r.video_id: r for r in check_videos(str(tiny_gym / "annotations"), storage.join(s3_prefix, "videos"))}
    assert results[videos[0].stem].status == "missing"
    assert [results[p.stem].status for p in videos[1:]] == ["ok", "ok"]
    assert all(results[p.stem].uri.startswith("s3://") and results[p.stem].fps for p in videos[1:])


def test_a_videos_folder_that_does_not_exist_is_bad_input(tiny_gym, tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        check_videos(str(tiny_gym / "annotations"), str(tmp_path / "nope"))


def test_a_fifo_named_like_a_video_is_one_bad_line_and_check_finishes(tiny_gym, tmp_path):
    shutil.copytree(tiny_gym / "annotations", tmp_path / "annotations")
    shutil.copytree(tiny_gym / "videos", tmp_path / "videos")
    ann = json.loads((tmp_path / "annotations" / ANNOTATION_JSON).read_text())
    ann["fifo_000001"] = {"E_000000_000003": {"event": 1, "timestamps": [[0.5, 3.0]], "segments": None}}
    (tmp_path / "annotations" / ANNOTATION_JSON).write_text(json.dumps(ann))
    os.mkfifo(tmp_path / "videos" / "fifo_000001.mp4")  # opening it for reading waits for a writer
    out = tmp_path / "check.csv"
    r = subprocess.run([sys.executable, "-m", "finegym_ray.cli", "check", "--annotations", tmp_path / "annotations",
                        "--videos", tmp_path / "videos", "--csv", out], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    said = [line for line in r.stdout.splitlines() if "fifo_000001" in line]
    assert len(said) == 1 and said[0].startswith("unreadable") and "not a regular file" in said[0], r.stdout
    status = {row["video_id"]: row["status"] for row in csv.DictReader(out.open())}
    assert status.pop("fifo_000001") == "unreadable" and set(status.values()) == {"ok"}, status


def test_a_video_above_the_frame_size_bound_is_refused_before_decoding(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "videos").mkdir()
    write_blank_video(tmp_path / "videos" / "bigvid_0001.mp4", size=(4128, 4096))
    ann = {"bigvid_0001": {"E_000000_000001": {"event": 1, "timestamps": [[0.0, 0.1]], "segments": None}}}
    (tmp_path / "annotations" / ANNOTATION_JSON).write_text(json.dumps(ann))
    (result,) = check_videos(str(tmp_path / "annotations"), str(tmp_path / "videos"))
    assert (result.status, result.width, result.height, result.decoded_end_s) == ("unreadable", 4128, 4096, None)
    assert "frame size 4128x4096 (16.9 Mpixels) is above the 16.8 Mpixels (4096x4096)" in result.problem
