import pytest

from finegym_ray.dataset.errors import FormatError
from finegym_ray.dataset.splits import format_split, parse_split, split_name_from_path, subset_from_path

K1 = "A0xAXXysHUo_E_002184_002237_A_0035_0036"
K2 = "x_-Yz9_Ab-Q_E_000100_000140_A_0003_0005"


def test_parse_and_format_round_trip():
    text = format_split([(K1, 3), (K2, 0)])
    assert text == f"{K1} 3\n{K2} 0\n"
    entries = parse_split(text, "s.txt", num_classes=4)
    assert [(e.key, e.label, e.line) for e in entries] == [(K1, 3, 1), (K2, 0, 2)]


def test_identical_duplicate_kept_once():
    assert len(parse_split(f"{K1} 1\n{K1} 1\n")) == 1


@pytest.mark.parametrize("text, line, msg", [
    (f"{K1} 1\n{K1} 2\n", 2, "label 2 here and 1 on line 1"),
    (f"{K1} 4\n", 1, "out of range"),
    (f"{K1} -1\n", 1, "non-negative"),
    (f"{K1}\n", 1, "expected '<key> <label>'"),
    (f"{K1} 1 extra\n", 1, "expected"),
    ("\nnot_a_key 1\n", 2, "instance key"),
])
def test_bad_lines(text, line, msg):
    with pytest.raises(FormatError, match=msg) as e:
        parse_split(text, "s.txt", num_classes=4)
    assert (e.value.path, e.value.line) == ("s.txt", line)


def test_names_from_paths():
    assert split_name_from_path("x/gym99_train_element_v1.0.txt") == "train"
    assert split_name_from_path("gym288_val_element.txt") == "val"
    assert split_name_from_path("s3://b/p/labels.txt") is None
    assert subset_from_path("s3://b/gym288_val_element.txt") == "gym288"
    assert subset_from_path("mine.txt") is None
