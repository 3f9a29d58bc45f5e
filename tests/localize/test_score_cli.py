"""``finegym-ray score-detections``: the scores it prints, and one line with exit code 2
for every kind of bad file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finegym_ray import cli as cli_module
from tests.localize.test_formats import ACTION, SUBACTION, annotation_folder

GT = {"database": {
    "v1": {"subset": "validation", "annotations": [{"segment": [0, 10], "label": "A"},
                                                   {"segment": [20, 30], "label": "A"},
                                                   {"segment": [5, 15], "label": "B"}]},
    "v2": {"subset": "training", "annotations": [{"segment": [0, 10], "label": "B"}]}}}
# A: [0, 10] .9 TP; [1, 10] .8 duplicate of the taken [0, 10] -> FP; [21, 30] .7 tIoU .9 ->
# TP up to 0.90 (P = 1, .5, 2/3; R = .5, .5, 1 -> AP 5/6), FP at 0.95 (AP .5).
# B: no detections -> AP 0. C: no ground truth -> ignored.
DET = {"results": {"v1": [{"label": "A", "segment": [0, 10], "score": 0.9},
                           {"label": "A", "segment": [1, 10], "score": 0.8},
                           {"label": "A", "segment": [21, 30], "score": 0.7},
                           {"label": "C", "segment": [0, 1], "score": 0.5}]}}


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=1))
    return path


def score(capsys, gt, det, *more):
    code = cli_module.main(["score-detections", "--ground-truth", str(gt), "--detections", str(det), *more])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_and_json(tmp_path, capsys):
    gt, det = write(tmp_path / "gt.json", GT), write(tmp_path / "det.json", DET)
    code, out, err = score(capsys, gt, det)
    assert code == 0, err
    lines = out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("tIoU"))
    assert lines[i].split() == ["tIoU", "0.50", "0.60", "0.70", "0.80", "0.90", "Avg"]
    # mAP = (5/6 + 0) / 2 = 41.7 %; Avg = (9 x 5/6 + .5) / 10 / 2 = 40.0 %.
    assert lines[i + 1].split() == ["mAP", "41.7", "41.7", "41.7", "41.7", "41.7", "40.0"]
    assert lines[i + 3].split() == ["A", "83.3", "83.3", "83.3", "83.3", "83.3", "80.0"]
    assert "ignored: C (1)" in out

    code, out, _ = score(capsys, gt, det, "--json")
    result = json.loads(out)
    assert set(result) == {"tiou_thresholds", "map", "average_map", "per_class"}
    assert result["tiou_thresholds"] == pytest.approx([0.5 + 0.05 * i for i in range(10)])
    assert result["average_map"] == pytest.approx((9 * 5 / 6 + 0.5) / 20)
    assert result["per_class"]["B"] == [0.0] * 10

    # v2 (training) holds the other B segment; only validation: B still has ground truth in v1.
    code, out, _ = score(capsys, gt, det, "--json", "--subset", "validation", "--class-agnostic")
    # Class-agnostic, validation: GT [0, 10], [20, 30], [5, 15]; ranked [0, 10] TP, [1, 10]: the
    # free [5, 15] has tIoU 5/14 -> FP; [21, 30] TP (<= 0.9); [0, 1] FP.
    # At <= 0.9: P = 1, .5, 2/3, .5; R = 1/3, 1/3, 2/3, 2/3 -> AP = 1/3 + 1/3 x 2/3 = 5/9.
    assert json.loads(out)["map"][0] == pytest.approx(5 / 9)


def test_finegym_annotations_at_both_levels(tmp_path, capsys):
    folder = annotation_folder(tmp_path / "ann")
    perfect = {vid: [{"label": label, "segment": [s, e], "score": 0.5} for label, s, e in rows]
               for vid, rows in ACTION.items()}
    code, out, err = score(capsys, folder / "finegym_annotation_info_v1.1.json",
                           write(tmp_path / "a.json", {"results": perfect}), "--json")
    assert code == 0, err
    assert json.loads(out)["average_map"] == 1.0
    assert set(json.loads(out)["per_class"]) == {"BB", "VT", "UB", "event_5"}

    # Sub-actions in routine keys with set names; the vault detected 1 s late:
    # [1.04, 6.57] vs [0.04, 6.57] -> tIoU 5.53 / 6.53 = 0.847: a TP up to 0.80, FP above.
    rows = {vid: [{"label": label, "segment": [s + (label == "vault"), e], "score": 0.5} for label, s, e in r]
            for vid, r in SUBACTION.items()}
    det = write(tmp_path / "s.json", {"results": rows})
    code, out, err = score(capsys, folder, det, "--level", "subaction", "--json")
    assert code == 0, err
    per_class = json.loads(out)["per_class"]
    assert set(per_class) == {"BB_flight_salto", "BB_dismounts", "vault", "UB_circles"}
    assert per_class["vault"] == [1.0] * 7 + [0.0] * 3 and per_class["UB_circles"] == [1.0] * 10
    # The bare JSON has no set labels: scored class-agnostic, and the table says so.
    code, out, err = score(capsys, folder / "finegym_annotation_info_v1.1.json", det, "--level", "subaction")
    assert code == 0, err
    assert "note:" in out and "class-agnostic" in out
    assert next(line for line in out.splitlines() if line.startswith("mAP")).split()[1] == "100.0"


BAD_DETECTIONS = [
    ('{"results": {"v1": [\n{"label": "A", "segment": [0, 1], "score": 0.5},]}}', "det.json:2: malformed JSON"),
    ('[1, 2]', "det.json:1: expected ActivityNet's results format"),
    ('{"result": {}}', "det.json:1: expected ActivityNet's results format"),
    ('{"results": [1]}', "det.json:1: 'results' must be an object of videos"),
    ('{"results": {"v1": {"label": "A"}}}', "results['v1']: expected a list of detections"),
    ('{"results": {"v1": [7]}}', "results['v1'][0]: expected an object"),
    ('{"results": {"v1": [{"segment": [0, 1], "score": 1}]}}', "results['v1'][0]: 'label' must be a non-empty string"),
    ('{"results": {"v1": [{"label": "A", "segment": [0, 1], "score": 1},\n {"label": "A", "segment": [5, 4], '
     '"score": 1}]}}', "results['v1'][1]: segment [5.0, 4.0] is inverted"),
    ('{"results": {"v0": [],\n"v1": [{"label": "A", "segment": [3, 3], "score": 1}]}}',
     "det.json:2: results['v1'][0]: segment [3.0, 3.0] has zero length"),
    ('{"results": {"v1": [{"label": "A", "segment": [0], "score": 1}]}}',
     "results['v1'][0]: 'segment' must be [start, end]"),
    ('{"results": {"v1": [{"label": "A", "segment": [0, 1], "score": "high"}]}}',
     "results['v1'][0]: 'score' must be a finite number, got 'high'"),
    ('{"results": {"v1": [{"label": "A", "segment": [0, 1], "score": NaN}]}}',
     "results['v1'][0]: 'score' must be a finite number, got nan"),
]


@pytest.mark.parametrize("text, expect", BAD_DETECTIONS)
def test_bad_detections_exit_2_with_one_line_naming_file_and_entry(tmp_path, capsys, text, expect):
    gt = write(tmp_path / "gt.json", GT)
    code, out, err = score(capsys, gt, write(tmp_path / "det.json", text))
    assert code == 2
    assert err.count("\n") == 1 and str(tmp_path / "det.json") in err and expect in err, err
    assert out == ""


BAD_GROUND_TRUTH = [
    ('{"database": [1]}', "gt.json:1: 'database' must be an object of videos"),
    ('{"database": {"v1": {"annotations": {}}}}', "database['v1']: 'annotations' must be a list"),
    ('{"database": {"v1": {"annotations": [{"segment": [2, 1], "label": "A"}]}}}',
     "database['v1'].annotations[0]: segment [2.0, 1.0] is inverted"),
    ('{"database": {"v1": {"annotations": [{"segment": [1, 2]}]}}}', "database['v1'].annotations[0]: 'label'"),
    ('{"database": {"v1": {"annotations": []}}}', "no ground-truth segment"),
    ('"text"', "gt.json:1: expected a JSON object"),
    # FineGym's JSON goes through the dataset's own parser, which names the line.
    ('{"vid": {\n"E_000001_000009": {"event": 4, "timestamps": [[9, 1]], "segments": null}}}',
     "gt.json:2: video 'vid' event 'E_000001_000009': 'timestamps' must be one [start, end] pair"),
]


@pytest.mark.parametrize("text, expect", BAD_GROUND_TRUTH)
def test_bad_ground_truth_exits_2_with_one_line_naming_file_and_entry(tmp_path, capsys, text, expect):
    det = write(tmp_path / "det.json", DET)
    code, out, err = score(capsys, write(tmp_path / "gt.json", text), det)
    assert code == 2
    assert err.count("\n") == 1 and str(tmp_path / "gt.json") in err and expect in err, err


def test_missing_files_and_ground_truth_of_the_wrong_kind(tmp_path, capsys):
    gt, det = write(tmp_path / "gt.json", GT), write(tmp_path / "det.json", DET)
    for args, expect in [((tmp_path / "nope.json", det), "not found"), ((gt, tmp_path / "nope.json"), "not found"),
                         ((write(tmp_path / "gt.txt", "x"), det), "expected a .json file"),
                         ((tmp_path / "no_folder", det), "not found")]:
        code, _, err = score(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and expect in err, err
    # Men's events have no sub-actions: nothing to score at that level.
    men = write(tmp_path / "men.json", {"vid": {"E_000001_000009": {"event": 5, "timestamps": [[1, 9]],
                                                                     "segments": None}}})
    code, _, err = score(capsys, men, det, "--level", "subaction")
    assert code == 2 and "nothing to score" in err


def test_as_a_user_runs_it(tmp_path):
    """A real process: the table on stdout, a bad file gives one line and no traceback,
    and neither Ray nor torch is imported."""
    gt, det = write(tmp_path / "gt.json", GT), write(tmp_path / "det.json", DET)
    bad = write(tmp_path / "bad.json", '{"results": {"v1": [{"label": "A", "segment": [5, 4], "score": 1}]}}')
    code = ("import sys\nfrom finegym_ray.cli import main\n"
            f"assert main(['score-detections', '--ground-truth', {str(gt)!r}, '--detections', {str(det)!r}]) == 0\n"
            "assert 'ray' not in sys.modules and 'torch' not in sys.modules, "
            "[m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')][:5]\n"
            "sys.exit(main(['score-detections', '--ground-truth', sys.argv[1], '--detections', sys.argv[2]]))\n")
    r = subprocess.run([sys.executable, "-c", code, str(gt), str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert "results['v1'][0]: segment [5.0, 4.0] is inverted" in r.stderr
    assert next(line for line in r.stdout.splitlines() if line.startswith("mAP")).split()[1] == "41.7"


def test_help_explains_the_formats(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main(["score-detections", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert '{"results": {"VIDEO_ID"' in out and '"database"' in out and "--level subaction" in out
    assert '"average_map"' in out


def test_zero_length_finegym_segments_are_left_out_with_a_note(tmp_path, capsys):
    # FineGym's JSON allows end == start; such a segment can never be matched (tIoU 0),
    # so it is left out, and the output says so, instead of refusing the official file.
    ann = write(tmp_path / "ann.json", {"vid": {
        "E_000010_000020": {"event": 2, "timestamps": [[10.0, 20.0]], "segments": {
            "A_0001_0002": {"stages": 1, "timestamps": [[1.5, 2.5]]},
            "A_0003_0003": {"stages": 1, "timestamps": [[3.0, 3.0]]}}},
        "E_000030_000030": {"event": 3, "timestamps": [[30.0, 30.0]], "segments": None}}})
    det = write(tmp_path / "det.json", {"results": {
        # At sub-action level (class-agnostic) this one is a FP in a video without
        # routines' sub-actions, ranked below the TP: AP stays 1.
        "vid": [{"label": "FX", "segment": [10, 20], "score": 0.5}],
        "vid_E_000010_000020": [{"label": "subaction", "segment": [1.5, 2.5], "score": 1}]}})
    code, out, err = score(capsys, ann, det)
    assert code == 0, err
    assert "note: " in out and "1 routine of zero length left out" in out
    assert next(line for line in out.splitlines() if line.startswith("mAP")).split()[1] == "100.0"
    code, out, err = score(capsys, ann, det, "--level", "subaction")
    assert code == 0, err
    assert "1 sub-action of zero length left out" in out
    assert next(line for line in out.splitlines() if line.startswith("mAP")).split()[1] == "100.0"
