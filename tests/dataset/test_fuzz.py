"""Garbage in, FormatError out: no parser may crash with anything else."""

import json

from hypothesis import HealthCheck, given, settings, strategies as st

from finegym_ray.dataset.annotations import parse_annotations
from finegym_ray.dataset.categories import parse_element_categories, parse_set_categories
from finegym_ray.dataset.errors import FormatError
from finegym_ray.dataset.splits import parse_split

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text near the real formats finds deeper paths than uniform noise.
TOKENS = st.sampled_from([
    "set:", "Clabel:", "Glabel:", ";", " ", "  ", "\n", "\t", "1", "21", "0", "-3", "99999999999999999999",
    "(VT) vault", "A0xAXXysHUo_E_002184_002237_A_0035_0036", "_E_", "_A_", "x", "\u00e9", "\x00", "\r\n",
])
NEAR_TEXT = st.lists(TOKENS, max_size=40).map("".join)
ANY_TEXT = st.one_of(st.text(max_size=300), NEAR_TEXT)

JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**7), st.floats(allow_nan=True),
                      st.text(max_size=8), st.sampled_from(["E_000001_000002", "A_0000_0001"]))
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["event", "timestamps", "segments", "stages", "E_000001_000002",
                                     "A_0000_0001", "v", "x"]), inner, max_size=4)), max_leaves=25)


def _only_format_errors(parse, *args):
    try:
        parse(*args)
    except FormatError as e:
        assert e.path == "f.txt"
        assert str(e).startswith("f.txt")


@FUZZ
@given(ANY_TEXT)
def test_set_categories_garbage(text):
    _only_format_errors(parse_set_categories, text, "f.txt")


@FUZZ
@given(ANY_TEXT)
def test_element_categories_garbage(text):
    _only_format_errors(parse_element_categories, text, "f.txt")


@FUZZ
@given(ANY_TEXT, st.one_of(st.none(), st.integers(0, 300)))
def test_split_garbage(text, n):
    _only_format_errors(parse_split, text, "f.txt", n)


@FUZZ
@given(st.one_of(ANY_TEXT, JSON_VALUE.map(json.dumps),
                 st.dictionaries(st.text(max_size=11), JSON_VALUE, max_size=3).map(json.dumps)))
def test_annotations_garbage(text):
    _only_format_errors(parse_annotations, text, "f.txt")


@FUZZ
@given(st.dictionaries(st.sampled_from(["event", "timestamps", "segments", "junk"]), JSON_VALUE, max_size=4))
def test_annotation_event_fields_garbage(fields):
    _only_format_errors(parse_annotations, json.dumps({"vid": {"E_000001_000002": fields}}), "f.txt")
