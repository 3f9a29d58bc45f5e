"""Element decision trees: for each element (Glabel), the questions a judge answers to
tell it from its neighbours (shape, number of turns, take-off, ...) and its answers, in
the order the tree asks them.

Two files hold them: FineGym's ``finegym_glabel_to_Qtree.json`` and SynGym's
``syngym_element_attributes.json``. Both map a Glabel (a JSON object key, its decimal
text) to the element's path through its set's tree. FineGym's exact layout could not be
checked here (the file is not public), so each element's path is read from any of these
shapes, which cover how such paths are written:

- ``{"path": [{"question": Q, "answer": A}, ...], ...}`` (SynGym's, other keys ignored);
- ``[{"question": Q, "answer": A}, ...]`` (``"q"`` / ``"a"`` also accepted);
- ``[[Q, A], ...]``;
- ``{Q: A, ...}``.

Answers are compared as text (``1.5`` and ``"1.5"`` are the same answer). Anything else
is a :class:`FormatError` naming the file and the Glabel.
"""

from __future__ import annotations

from typing import Any

from .errors import FormatError
from .jsonfile import parse_json, read_json_text

# question -> answer, in the order the tree asks
Path = tuple[tuple[str, str], ...]

# A tree file holds a few hundred elements; a path a few questions.
MAX_TREE_BYTES = 64 << 20


def read_trees(uri: str) -> dict[int, Path]:
    """Glabel -> its path through its set's decision tree, from the JSON file ``uri``
    (local or s3://) in one of the layouts of the module docstring."""
    raw = parse_json(read_json_text(uri, max_bytes=MAX_TREE_BYTES), uri)
    if not isinstance(raw, dict) or not raw:
        raise FormatError(uri, None, "not a decision-tree file: expected a JSON object of Glabel -> questions and "
                                     "answers")
    return {_glabel(key, uri): _path(value, uri, key) for key, value in raw.items()}


def _glabel(key: str, uri: str) -> int:
    text = key.strip()
    if not text.isdigit() or len(text) > 9:
        raise FormatError(uri, None, f"key {key[:40]!r} is not a Glabel (a non-negative integer)")
    return int(text)


def _path(value: Any, uri: str, key: str) -> Path:
    if isinstance(value, dict) and "path" in value:
        value = value["path"]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = [_pair(step, uri, key) for step in value]
    else:
        raise FormatError(uri, None, f"Glabel {key}: expected its questions and answers (a list or an object), "
                                     f"got {type(value).__name__}")
    path = tuple((_text(q, uri, key, "question"), _text(a, uri, key, "answer")) for q, a in pairs)
    questions = [q for q, _ in path]
    if len(set(questions)) != len(questions):
        raise FormatError(uri, None, f"Glabel {key}: a question is asked twice on one path")
    return path


def _pair(step: Any, uri: str, key: str) -> tuple[Any, Any]:
    if isinstance(step, dict):
        q = step.get("question", step.get("q"))
        a = step.get("answer", step.get("a"))
        if q is not None and ("answer" in step or "a" in step):
            return q, a
    elif isinstance(step, list) and len(step) == 2:
        return step[0], step[1]
    raise FormatError(uri, None, f"Glabel {key}: a step of its path is not a question and its answer: "
                                 f"{str(step)[:80]}")


def _text(value: Any, uri: str, key: str, what: str) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (str, int, float)) or value is None:
        text = str(value)
        if len(text) > 200:
            raise FormatError(uri, None, f"Glabel {key}: the {what} {text[:40]!r}... is {len(text)} characters long")
        return text
    raise FormatError(uri, None, f"Glabel {key}: the {what} {str(value)[:80]} is not text or a number")
