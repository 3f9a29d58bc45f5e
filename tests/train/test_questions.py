"""The decision-tree questions a run's confusions get wrong: counted per question over the
confusions between elements that both ask it, with intervals; the report of an evaluated
element run written beside its scores (no Ray: a planted run and store)."""

from __future__ import annotations

import csv
import io
import math

import cv2
import numpy as np
import pyarrow as pa
import pytest

from finegym_ray.errors import InputError
from finegym_ray.train.questions import format_questions, question_flips, question_report, wilson

TREES = {10: (("shape", "tucked"), ("turns", "1")), 11: (("shape", "tucked"), ("turns", "2")),
         12: (("shape", "piked"), ("turns", "1")), 20: (("grip", "over"),)}
GLABELS = (10, 11, 12, 20, 99)  # class i is element GLABELS[i]; 99 has no tree


def test_each_confusion_counts_for_the_questions_both_elements_ask():
    # true -> predicted: 0->1 three times (turns), 0->2 once (shape), 1->2 once (both),
    # 0->3 once (nothing shared), 4->0 once (no tree); two clips right.
    pairs = [(0, 1)] * 3 + [(0, 2), (1, 2), (0, 3), (4, 0), (0, 0), (2, 2)]
    labels, predicted = (np.array(v) for v in zip(*pairs))
    table, summary = question_flips(labels, predicted, GLABELS, TREES)
    assert summary == {"clips": 9, "confusions": 7, "without_tree": 1, "no_common_question": 1}
    rows = {r["question"]: r for r in table.to_pylist()}
    assert table.column("question").to_pylist() == ["turns", "shape"]  # most flipped first
    assert (rows["turns"]["confusions"], rows["turns"]["flipped"]) == (5, 4)
    assert (rows["shape"]["confusions"], rows["shape"]["flipped"]) == (5, 2)
    assert rows["turns"]["share"] == 0.8 and rows["turns"]["of_all"] == pytest.approx(4 / 7)
    assert rows["turns"]["share_lo"] < 0.8 < rows["turns"]["share_hi"] <= 1
    text = format_questions(table, summary)
    assert text.startswith("7 of 9 clips confused") and "1 confusions of elements without a tree left out" in text
    assert "turns" in text.splitlines()[2] and "1 confusions between elements whose trees share no question" in text


def test_the_wilson_interval():
    assert wilson(0, 10)[0] == 0 and wilson(10, 10)[1] == 1
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert all(math.isnan(v) for v in wilson(0, 0))


@pytest.fixture
def evaluated_run(tiny_gym, tmp_path):
    """(run, trees file, class index of each of two twins that differ in one question
    only): an FX-S1 run (a set's elements, several answers per question) whose
    evaluation confuses the twins on most clips, over a store holding only the manifest."""
    from finegym_ray.config import to_yaml
    from finegym_ray.dataset.manifest import build_manifest_from, write_manifest
    from finegym_ray.dataset.qtree import read_trees
    from finegym_ray.train import checkpoint as ckpt
    from finegym_ray.train.config import TrainConfig, with_absolute_paths
    from finegym_ray.train.data import load_split_labels

    store = tmp_path / "store"
    write_manifest(build_manifest_from(str(tiny_gym / "annotations")), str(store / "manifest"))
    trees_file = str(tiny_gym / "annotations" / "syngym_element_attributes.json")
    trees = read_trees(trees_file)
    split = load_split_labels(str(store), "fx_s1", "val")
    paths = [dict(trees[g]) for g in split.glabels]
    twins = next((i, j) for i in range(len(paths)) for j in range(len(paths))
                 if i != j and paths[i].keys() == paths[j].keys()
                 and sum(paths[i][q] != paths[j][q] for q in paths[i]) == 1)
    config = with_absolute_paths(TrainConfig(data=str(store), runs=str(tmp_path / "runs"), task="fx_s1", name="r"))
    run = str(tmp_path / "runs" / "r")
    ckpt.write(run, 0, state={"model": {}}, config_yaml=to_yaml(config),
               meta={"class_names": list(split.class_names), "history": [{"epoch": 0}]})
    i, j = twins
    labels = np.array([i] * 8 + [j] * 2)
    predicted = np.array([j] * 6 + [i] * 2 + [j] * 2)  # 6 of the twin i's clips taken for twin j
    scores = np.eye(len(split.glabels), dtype=np.float32)[predicted]
    (tmp_path / "runs" / "r" / "eval").mkdir()
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"key": [f"k{n}" for n in range(10)], "label": labels, "scores": list(scores)}),
                   tmp_path / "runs" / "r" / "eval" / "scores.parquet")
    differing = next(q for q in paths[i] if paths[i][q] != paths[j][q])
    return run, trees_file, differing, len(paths[i])


def test_an_evaluated_element_run_gets_its_report_beside_its_scores(evaluated_run, tmp_path):
    run, trees, differing, asked = evaluated_run
    said = []
    report = question_report(run, trees=trees, say=said.append)
    rows = report["table"].to_pylist()
    # Every confusion is between the twins: each of their questions asked 6 times, only
    # the one they differ on flipped, every time.
    assert len(rows) == asked and rows[0]["question"] == differing
    assert (rows[0]["confusions"], rows[0]["flipped"], rows[0]["of_all"]) == (6, 6, 1.0)
    assert all(r["flipped"] == 0 and r["confusions"] == 6 for r in rows[1:])
    assert report["summary"] == {"clips": 10, "confusions": 6, "without_tree": 0, "no_common_question": 0}
    out = tmp_path / "runs" / "r" / "eval"
    assert [r["question"] for r in csv.DictReader(io.StringIO((out / "questions.csv").read_text()))] == \
        [r["question"] for r in rows]
    assert cv2.imread(str(out / "questions.png")) is not None
    assert said[0].startswith("6 of 10 clips confused") and said[-1].startswith(f"written to {out}")


def test_a_report_is_refused_in_one_line_without_scores_or_elements(evaluated_run, tmp_path):
    from finegym_ray.config import to_yaml
    from finegym_ray.train import checkpoint as ckpt
    from finegym_ray.train.config import TrainConfig, with_absolute_paths

    run, trees, _, _ = evaluated_run
    with pytest.raises(InputError, match="evaluate the run first"):
        question_report(run, trees=trees, eval_folder=str(tmp_path / "nowhere"))
    config = with_absolute_paths(TrainConfig(data=str(tmp_path / "store"), runs=str(tmp_path / "runs"),
                                             task="subaction_event", name="ev"))
    other = str(tmp_path / "runs" / "ev")
    ckpt.write(other, 0, state={"model": {}}, config_yaml=to_yaml(config),
               meta={"class_names": ["VT"], "history": [{"epoch": 0}]})
    with pytest.raises(InputError, match="whose classes are not elements"):
        question_report(other, trees=trees, eval_folder=run + "/eval")


def test_the_command_prints_the_table_and_says_where_it_wrote(evaluated_run, capsys, tmp_path):
    from finegym_ray.cli import main

    run, trees, differing, _ = evaluated_run
    assert main(["questions", "--run", run, "--tree", trees]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("6 of 10 clips confused") and out[2].startswith(differing)
    assert out[-1] == f"written to {run}/eval: questions.csv, questions.parquet, questions.png"
    assert main(["questions", "--run", run, "--tree", str(tmp_path / "no-tree.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no-tree.json" in err
