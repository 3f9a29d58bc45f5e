"""Which questions of the elements' decision trees a run's confusions get wrong.

FineGym's elements differ by the answers to a few questions (``dataset/qtree.py``): the
body's shape, the number of turns or rotations, the take-off. When a model mistakes one
element for another, the two paths through the tree share questions and differ on some:
those are the questions the model answered wrongly. Over every confusion of an
evaluation, for each question, this counts the confusions between elements that both
ask it and the share of them whose answers differ, with a 95 % Wilson interval (the
paper's supplementary finds the number of turns the hardest to get right).

Reads an evaluation's ``scores.parquet`` (``evaluate.py``) and writes beside it
``questions.parquet``, ``questions.csv`` and ``questions.png``. No Ray, no weights.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from .. import storage
from ..charts import interval_png
from ..dataset.qtree import Path, read_trees
from ..errors import InputError

COLUMNS = ["question", "confusions", "flipped", "share", "share_lo", "share_hi", "of_all"]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k`` / ``n`` (NaN, NaN for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def question_flips(labels: np.ndarray, predicted: np.ndarray, glabels: Sequence[int],
                   trees: dict[int, Path]) -> tuple[pa.Table, dict]:
    """Per question, over the clips whose ``predicted`` class is not their label (both
    class indices into ``glabels``, each class's Glabel): ``confusions`` between two
    elements whose paths both ask the question, ``flipped``: those whose answers differ,
    ``share`` = flipped / confusions with its interval, ``of_all``: flipped over every
    confusion. Rows by ``flipped``, most first. The summary: ``clips``, ``confusions``,
    ``without_tree`` (a class's Glabel not in ``trees``) and ``no_common_question``
    (elements of trees that share no question, as elements of different sets)."""
    asked: Counter[str] = Counter()
    flipped: Counter[str] = Counter()
    wrong = np.flatnonzero(predicted != labels)
    without_tree = no_common = 0
    for i in wrong:
        true_path, their_path = trees.get(glabels[labels[i]]), trees.get(glabels[predicted[i]])
        if true_path is None or their_path is None:
            without_tree += 1
            continue
        theirs = dict(their_path)
        shared = [(q, a) for q, a in true_path if q in theirs]
        if not shared:
            no_common += 1
        for q, a in shared:
            asked[q] += 1
            flipped[q] += a != theirs[q]
    rows = []
    for q in sorted(asked, key=lambda q: (-flipped[q], -flipped[q] / asked[q], q)):
        lo, hi = wilson(flipped[q], asked[q])
        rows.append({"question": q, "confusions": asked[q], "flipped": flipped[q],
                     "share": flipped[q] / asked[q], "share_lo": lo, "share_hi": hi,
                     "of_all": flipped[q] / len(wrong)})
    schema = pa.schema([("question", pa.string()), ("confusions", pa.int64()), ("flipped", pa.int64()),
                        ("share", pa.float64()), ("share_lo", pa.float64()), ("share_hi", pa.float64()),
                        ("of_all", pa.float64())])
    summary = {"clips": int(len(labels)), "confusions": int(len(wrong)), "without_tree": without_tree,
               "no_common_question": no_common}
    return pa.Table.from_pylist(rows, schema=schema), summary


def format_questions(table: pa.Table, summary: dict) -> str:
    """The table as text, under a line that says what it counts."""
    lines = [f"{summary['confusions']} of {summary['clips']} clips confused; per question of the decision trees, "
             f"the confusions between elements that both ask it and how many answer it otherwise"
             + (f" ({summary['without_tree']} confusions of elements without a tree left out)"
                if summary["without_tree"] else "")]
    width = max([len("question"), *(len(q) for q in table.column("question").to_pylist())])
    lines.append(f"{'question':<{width}}  confusions  flipped  share (95% interval)  of all confusions")
    for r in table.to_pylist():
        lines.append(f"{r['question']:<{width}}  {r['confusions']:>10}  {r['flipped']:>7}  "
                     f"{r['share']:>5.1%} ({r['share_lo']:.1%}-{r['share_hi']:.1%})  {r['of_all']:>17.1%}")
    if summary["no_common_question"]:
        lines.append(f"{summary['no_common_question']} confusions between elements whose trees share no question "
                     f"(different sets)")
    return "\n".join(lines)


def write_questions(out: str, table: pa.Table, summary: dict, *, title: str) -> None:
    """questions.parquet, questions.csv and questions.png into the folder ``out``."""
    storage.write_parquet(table.replace_schema_metadata({"summary": json.dumps(summary)}),
                          storage.join(out, "questions.parquet"))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(table.to_pylist())
    storage.write_text(storage.join(out, "questions.csv"), text.getvalue())
    rows = table.to_pylist()
    storage.write_bytes(storage.join(out, "questions.png"), interval_png(
        [r["question"] for r in rows], {"share of confusions that flip it": [
            (r["share"], r["share_lo"], r["share_hi"]) for r in rows]},
        title=title, x_label="question of the decision tree (most flipped first)",
        y_label="share of confusions", lines=False))


def question_report(run: str, *, trees: str, eval_folder: str | None = None,
                    say: Callable[[str], None] = print) -> dict:
    """The decision-tree questions that the evaluation in ``eval_folder`` (RUN/eval when
    None: the run's standard one) confuses, from the element trees in the file ``trees``;
    written beside its scores. Returns ``table``, ``summary`` and ``out``. Raises
    InputError for a run of a task without elements, or scores of other classes."""
    from .data import load_split_labels
    from .evaluate import checkpoint_at_test

    out = eval_folder or storage.join(run, "eval")
    scores_uri = storage.join(out, "scores.parquet")
    if not storage.exists(scores_uri):
        raise InputError(f"{scores_uri} does not exist: evaluate the run first (finegym-ray evaluate --run {run})")
    _, config = checkpoint_at_test(run, verify_state=False)
    split = load_split_labels(config.data, config.task, config.val_split)
    if not split.glabels:
        raise InputError(f"{run} was trained on task {config.task!r}, whose classes are not elements: the "
                         f"decision trees answer questions about elements (gym99, gym288, vt, fx, fx_s1, ub_s1)")
    scores = storage.read_parquet(scores_uri)
    labels = scores.column("label").to_numpy()
    s = np.stack(scores.column("scores").to_numpy(zero_copy_only=False))
    if s.ndim != 2 or s.shape[1] != len(split.glabels) or labels.min(initial=0) < 0 \
            or labels.max(initial=0) >= len(split.glabels):
        raise InputError(f"{scores_uri}: scores of {s.shape[-1]} classes, but task {config.task!r} has "
                         f"{len(split.glabels)}")
    table, summary = question_flips(labels, s.argmax(1), split.glabels, read_trees(trees))
    if not table.num_rows:
        raise InputError(f"{trees}: no confusion of {run} is between elements with a question in common "
                         f"({summary['confusions']} confusions, {summary['without_tree']} of elements the file "
                         f"does not hold)")
    write_questions(out, table, summary, title=f"{config.model} {config.modality} {config.task}: questions confused")
    say(format_questions(table, summary))
    say(f"written to {out}: questions.csv, questions.parquet, questions.png")
    return {"table": table, "summary": summary, "out": out}
