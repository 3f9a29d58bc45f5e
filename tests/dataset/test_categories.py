from pathlib import Path

import pytest

from finegym_ray.dataset.categories import (
    ElementCategories,
    ElementCategory,
    format_element_categories,
    format_set_categories,
    parse_element_categories,
    parse_set_categories,
)
from finegym_ray.dataset.errors import FormatError

DATA = Path(__file__).parent / "data"


def sets():
    return parse_set_categories((DATA / "set_categories.txt").read_text(), "set_categories.txt")


def test_set_categories():
    s = sets()
    assert len(s) == 15
    assert (s[0].set_id, s[0].name, s[0].event) == (1, "vault", 1)
    assert (s[12].set_id, s[12].name, s[12].event) == (42, "UB_fligh_same_bar", 4)
    assert format_set_categories(s) == (DATA / "set_categories.txt").read_text()


def test_clabel_file_with_varying_spacing_and_duplicate_names():
    cats = parse_element_categories((DATA / "gym4_categories.txt").read_text(), "c.txt",
                                    {s.set_id: s for s in sets()})
    assert cats.subset == "gym4" and cats.num_classes == 4
    assert [c.glabel for c in cats.classes] == [1, 201, 250, 400]
    assert cats.classes[1].name == cats.classes[2].name == "(BB) salto backward tucked"
    assert cats.classes[1].set_id != cats.classes[2].set_id
    assert cats.classes[3].name == "(UB) giant circle backward"
    assert cats.classes[0].name.startswith("(VT) round-off, flic-flac")
    assert cats.by_glabel()[250].label == 2


def test_format_round_trip_both_forms():
    cats = ElementCategories("gym3", tuple(ElementCategory(i, s, i, f"(X) el {i}") for i, s in enumerate([1, 21, 44])))
    text = format_element_categories(cats)
    assert text.splitlines()[0] == "Clabel:   0; set:  1; Glabel:   0; (X) el 0"
    assert parse_element_categories(text) == cats
    g = format_element_categories(cats, glabel_only=True)
    assert g.splitlines()[2] == "Glabel:   2; set: 44; (X) el 2"
    assert parse_element_categories(g) == cats


@pytest.mark.parametrize("text, line, msg", [
    ("Clabel: 0; set: 1; Glabel: 0; a\nClabel: 2; set: 1; Glabel: 1; b\n", 2, "out of order"),
    ("Clabel: 0; set: 1; Glabel: 0; a\nClabel: 1; set: 1; Glabel: 0; b\n", 2, "Glabel 0 already"),
    ("Clabel: 0; set: 1; Glabel: 0; a\nGlabel: 1; set: 1; b\n", 2, "mixes"),
    ("Clabel: 0; set: 99; Glabel: 0; a\n", 1, "not a known set"),
    ("Clabel: x; set: 1; Glabel: 0; a\n", 1, "expected"),
    ("\n\n", None, "no categories"),
])
def test_bad_element_categories(text, line, msg):
    with pytest.raises(FormatError, match=msg) as e:
        parse_element_categories(text, "c.txt", {s.set_id: s for s in sets()})
    assert e.value.line == line


@pytest.mark.parametrize("text, line, msg", [
    ("set: 1; vault\nset: 1; again\n", 2, "already defined"),
    ("set: 1; vault\nsets 2 nope\n", 2, "expected"),
    ("set: 0; zero\n", 1, ">= 1"),
])
def test_bad_set_categories(text, line, msg):
    with pytest.raises(FormatError, match=msg) as e:
        parse_set_categories(text, "s.txt")
    assert e.value.line == line
