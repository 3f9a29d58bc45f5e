from pathlib import Path

import pytest

from finegym_ray.dataset.categories import ElementCategories, ElementCategory, parse_set_categories
from finegym_ray.dataset.labels import SUB_TASKS, TASK_NAMES, label_view, routine_splits, task_kind

DATA = Path(__file__).parent / "data"
# Gym99 classes per set, as the paper's sub-tasks need them (VT 6, FX 35, FX-S1 11, UB-S1 15).
GYM99_PER_SET = {1: 6, 21: 11, 22: 6, 23: 4, 24: 6, 25: 8, 31: 10, 32: 5, 33: 7, 34: 5, 35: 6,
                 41: 15, 42: 3, 43: 4, 44: 3}


def subset(name, per_set, glabel_step):
    classes, g = [], 0
    for set_id, n in per_set.items():
        for _ in range(n):
            classes.append(ElementCategory(len(classes), set_id, g, f"el{g}"))
            g += glabel_step
    return ElementCategories(name, tuple(classes))


@pytest.fixture
def subsets():
    gym99 = subset("gym99", GYM99_PER_SET, 3)
    gym530 = ElementCategories("gym530", tuple(
        ElementCategory(g, gym99.classes[min(g // 3, 98)].set_id, g, f"el{g}") for g in range(297)))
    return {"gym99": gym99, "gym530": gym530}


@pytest.fixture
def sets():
    return parse_set_categories((DATA / "set_categories.txt").read_text())


@pytest.mark.parametrize("task, n", [("gym99", 99), ("vt", 6), ("fx", 35), ("fx_s1", 11), ("ub_s1", 15),
                                     ("event", 10), ("subaction_event", 4), ("set", 15), ("gym530", 297)])
def test_class_counts(task, n, subsets, sets):
    view = label_view(task, subsets, sets)
    assert view.num_classes == n
    ids = sorted(view.by_glabel.values()) if view.by_glabel is not None else None
    assert ids is None or ids == list(range(n))  # contiguous


def test_sub_task_labels_follow_gym99_order(subsets):
    gym99 = subsets["gym99"]
    fx_s1 = label_view("fx_s1", subsets)
    set21 = [c for c in gym99.classes if c.set_id == 21]
    assert [fx_s1.label(glabel=c.glabel) for c in set21] == list(range(11))
    other = next(c for c in gym99.classes if c.set_id == 22)
    assert fx_s1.label(glabel=other.glabel) is None
    ub = label_view("ub_s1", subsets)
    assert ub.label(glabel=next(c for c in gym99.classes if c.set_id == 41).glabel) == 0


def test_event_and_set_views(sets, subsets):
    ev = label_view("subaction_event", subsets)
    assert [ev.label(event=e) for e in (1, 2, 3, 4, 5)] == [0, 1, 2, 3, None]
    assert ev.class_names == ("VT", "FX", "BB", "UB") and ev.kind == "subaction"
    # The paper's event level: whole routines into FineGym's 10 events, the men's (ids 5-10) included.
    routine = label_view("event", subsets)
    assert [routine.label(event=e) for e in range(1, 12)] == [*range(10), None]
    assert routine.class_names == ("VT", "FX", "BB", "UB", *(f"event_{i}" for i in range(5, 11)))
    assert routine.kind == "event"
    assert [task_kind(t) for t in TASK_NAMES] == ["event"] + ["subaction"] * (len(TASK_NAMES) - 1)
    st = label_view("set", subsets, sets)
    assert st.label(set_id=1) == 0 and st.label(set_id=44) == 14 and st.label(set_id=None) is None
    assert st.class_names[12] == "UB_fligh_same_bar"


def test_element_label_in_each_subset(subsets):
    c = subsets["gym99"].classes[40]
    assert label_view("gym99", subsets).label(glabel=c.glabel) == 40
    assert label_view("gym530", subsets).label(glabel=c.glabel) == c.glabel
    assert label_view("gym99", subsets).label(glabel=1) is None  # not a gym99 class


def test_missing_inputs_are_named(subsets):
    with pytest.raises(ValueError, match="gym288 categories"):
        label_view("gym288", subsets)
    with pytest.raises(ValueError, match="set categories"):
        label_view("set", subsets)
    with pytest.raises(ValueError, match="unknown task"):
        label_view("nope", subsets)
    assert set(SUB_TASKS) <= set(TASK_NAMES)


def test_routines_split_per_event_by_key_hash():
    routines = [(f"v{i:02d}_E_{i:06d}_{i + 60:06d}", 1 + i % 10) for i in range(43)]
    splits = routine_splits(routines)
    assert set(splits) == {k for k, _ in routines} and set(splits.values()) == {"train", "val"}
    for event in range(1, 11):
        keys = [k for k, e in routines if e == event]  # 4 or 5 routines each
        assert sum(splits[k] == "val" for k in keys) == 1  # round(0.25 x n), at least one
    # The same split whatever the order the routines come in, and a lone routine trains.
    assert routine_splits(reversed(routines)) == splits
    assert routine_splits([("a_E_000001_000002", 7)]) == {"a_E_000001_000002": "train"}
    assert sum(s == "val" for s in routine_splits([(f"k{i}", 3) for i in range(100)]).values()) == 25
