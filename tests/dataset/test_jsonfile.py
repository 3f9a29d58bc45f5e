"""JSON files someone else wrote (annotations, ground truth, detections, a run's
records) are read within bounds: a number no field can hold, a file larger than any
real one or nesting too deep is one line naming the file, exit code 2."""

import json
import shutil
from pathlib import Path

import pytest

from finegym_ray.cli import main

DATA = Path(__file__).parent / "data"
HUGE = "9" * 400  # 400 digits: more than a float holds (OverflowError when converted)


def _annotations_with(tmp_path: Path, field: str) -> Path:
    """The test annotation folder with one event's ``field`` a 400-digit integer."""
    folder = tmp_path / "annotations"
    shutil.copytree(DATA, folder)
    data = json.loads((folder / "annotations.json").read_text())
    event = data["x_-Yz9_Ab-Q"]["E_000100_000140"]
    event[field] = [[100, "HUGE"]] if field == "timestamps" else "HUGE"
    (folder / "annotations.json").write_text(json.dumps(data).replace('"HUGE"', HUGE))
    return folder


def _detections(tmp_path: Path, field: str) -> Path:
    entry = {"label": "VT", "segment": [0, 1], "score": 0.5}
    entry[field] = [0, "HUGE"] if field == "segment" else "HUGE"
    path = tmp_path / "det.json"
    path.write_text(json.dumps({"results": {"x_-Yz9_Ab-Q": [entry]}}).replace('"HUGE"', HUGE))
    return path


def _args(command: str, tmp_path: Path) -> tuple[list[str], Path]:
    """The command line, and the file it should name."""
    if command.startswith("manifest"):
        folder = _annotations_with(tmp_path, command.split()[1])
        return (["manifest", "--annotations", str(folder / "annotations.json"), "--categories",
                 str(folder / "gym4_categories.txt"), "--splits", str(folder / "gym4_train_element.txt"),
                 "--out", str(tmp_path / "out")], folder / "annotations.json")
    if command == "check":
        folder = _annotations_with(tmp_path, "timestamps")
        (tmp_path / "videos").mkdir()
        return (["check", "--annotations", str(folder / "annotations.json"), "--videos", str(tmp_path / "videos"),
                 "--csv", str(tmp_path / "check.csv")], folder / "annotations.json")
    if command == "score-detections ground-truth":
        folder = _annotations_with(tmp_path, "timestamps")
        det = tmp_path / "det.json"
        det.write_text(json.dumps({"results": {}}))
        return (["score-detections", "--ground-truth", str(folder / "annotations.json"), "--detections", str(det)],
                folder / "annotations.json")
    field = command.split()[1]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"database": {"x_-Yz9_Ab-Q": {"annotations": [{"segment": [0, 1], "label": "VT"}]}}}))
    det = _detections(tmp_path, field)
    return ["score-detections", "--ground-truth", str(gt), "--detections", str(det)], det


@pytest.mark.parametrize("command", ["manifest timestamps", "manifest event", "check",
                                     "score-detections ground-truth", "score-detections segment",
                                     "score-detections score"])
def test_a_400_digit_integer_is_one_line_naming_the_file_and_exit_2(tmp_path, capsys, command):
    args, named = _args(command, tmp_path)
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and str(named) in err and "400 digits" in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "check.csv").exists()
