"""``finegym-ray questions``: which questions of the elements' decision trees a run's
confusions answer wrongly, from its evaluation's scores (no Ray, no weights)."""

from __future__ import annotations

import argparse

from .options import add_storage_options

EPILOG = """\
examples:
  finegym-ray questions --run finegym_runs/tsm_flow_gym99 --tree annotations/finegym_glabel_to_Qtree.json
  finegym-ray questions --run finegym_runs/tsm_flow_fx_s1 --tree syngym/annotations/syngym_element_attributes.json
  finegym-ray questions --run RUN --tree TREE --eval RUN/eval/segments_3

Each confused clip pairs its element with the predicted one; for every question that both
elements' paths through the tree ask (shape, number of turns, take-off, ...), the table
counts those confusions and how many answer it otherwise, with a 95% Wilson interval.
Written beside the scores: questions.csv, questions.parquet, questions.png.

exit status: 0 done, 2 bad input (no such run or evaluation, a task without elements,
a tree file that does not parse)"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "questions", help="the decision-tree questions (shape, turns, take-off) a run's confusions get wrong",
        description="Read an element run's evaluation (scores.parquet, from finegym-ray evaluate) and the "
                    "elements' decision trees (FineGym's finegym_glabel_to_Qtree.json or SynGym's "
                    "syngym_element_attributes.json), and report per question how often the model's confusions "
                    "flip its answer. Runs in this process (no Ray).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, metavar="RUN", help="the run folder (path or s3:// URI), evaluated")
    p.add_argument("--tree", required=True, metavar="JSON",
                   help="the decision-tree file: Glabel -> its questions and answers (path or s3://)")
    p.add_argument("--eval", metavar="FOLDER", dest="eval_folder",
                   help="the evaluation to read (a folder holding scores.parquet; default RUN/eval, the standard "
                        "one; a test variant's is RUN/eval/VARIANT)")
    add_storage_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.questions import question_report

    question_report(args.run, trees=args.tree, eval_folder=args.eval_folder)
    return 0
