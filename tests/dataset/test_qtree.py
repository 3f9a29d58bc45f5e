"""Element decision-tree files: every accepted layout reads to the same paths; what is not
a tree is one FormatError naming the file and the Glabel."""

from __future__ import annotations

import json
import re

import pytest

from finegym_ray.dataset.errors import FormatError
from finegym_ray.dataset.qtree import read_trees

EXPECTED = {3: (("shape", "tucked"), ("twists", "1.5")), 10: (("shape", "split"), ("switch", "True"))}


@pytest.mark.parametrize("layout", [
    {"3": {"set": 1, "name": "x", "path": [{"question": "shape", "answer": "tucked", "visible_in_one_frame": True},
                                             {"question": "twists", "answer": 1.5}]},
     "10": {"path": [{"question": "shape", "answer": "split"}, {"question": "switch", "answer": True}]}},
    {"3": [{"q": "shape", "a": "tucked"}, {"q": "twists", "a": "1.5"}],
     "10": [{"q": "shape", "a": "split"}, {"q": "switch", "a": "True"}]},
    {"3": [["shape", "tucked"], ["twists", 1.5]], "10": [["shape", "split"], ["switch", True]]},
    {"3": {"shape": "tucked", "twists": 1.5}, "10": {"shape": "split", "switch": True}},
], ids=["syngym", "q-a objects", "pairs", "object"])
def test_every_layout_reads_to_the_same_paths(tmp_path, layout):
    path = tmp_path / "tree.json"
    path.write_text(json.dumps(layout))
    assert read_trees(str(path)) == EXPECTED


def test_syngyms_own_file_reads(tiny_gym):
    trees = read_trees(str(tiny_gym / "annotations" / "syngym_element_attributes.json"))
    assert len(trees) > 99 and all(path and all(q and a for q, a in path) for path in trees.values())


@pytest.mark.parametrize("content, says", [
    ("[1, 2]", "expected a JSON object of Glabel"),
    ("{}", "expected a JSON object of Glabel"),
    ('{"vault": {"shape": "x"}}', "key 'vault' is not a Glabel"),
    ('{"3": 7}', "Glabel 3: expected its questions and answers"),
    ('{"3": [["shape"]]}', "Glabel 3: a step of its path is not a question and its answer"),
    ('{"3": {"shape": "' + "x" * 300 + '"}}', "is 300 characters long"),
    ('{"3": [{"question": "shape"}]}', "Glabel 3: a step of its path is not a question and its answer"),
    ('{"3": {"shape": {"nested": 1}}}', "Glabel 3: the answer {'nested': 1} is not text or a number"),
    ('{"3": [["shape", "a"], ["shape", "b"]]}', "Glabel 3: a question is asked twice"),
    ('{"3": {"shape": "x"', "malformed JSON"),
])
def test_what_is_not_a_tree_is_one_error_naming_the_file(tmp_path, content, says):
    path = tmp_path / "tree.json"
    path.write_text(content)
    with pytest.raises(FormatError, match=re.escape(says)) as e:
        read_trees(str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)
