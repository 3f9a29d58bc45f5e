"""SynGym's hierarchy: FineGym's sets and subset sizes, attribute paths, motion-only pairs."""

import math
from collections import Counter

import pytest

from finegym_ray.dataset.labels import label_view
from finegym_ray.synth import motion
from finegym_ray.synth.taxonomy import (
    SET_FAMILIES,
    SETS,
    SUBSET_SIZES,
    build_elements,
    element_categories,
    set_categories,
)

ELEMENTS = build_elements()


def test_subset_sizes_and_paper_subtasks():
    subsets = {n: element_categories(ELEMENTS, n) for n in ("gym99", "gym288", "gym530")}
    assert {n: c.num_classes for n, c in subsets.items()} == {"gym99": 99, "gym288": 288, "gym530": 530}
    # Gym99 is inside Gym288, which is inside Gym530 (Glabels shared across subsets).
    g99, g288 = ({c.glabel for c in subsets[n].classes} for n in ("gym99", "gym288"))
    assert g99 <= g288 and len({e.glabel for e in ELEMENTS}) == 530
    sizes = {t: label_view(t, subsets, set_categories()).num_classes for t in ("vt", "fx", "fx_s1", "ub_s1")}
    assert sizes == {"vt": 6, "fx": 35, "fx_s1": 11, "ub_s1": 15}
    assert label_view("set", subsets, set_categories()).num_classes == 15
    assert [s for s, _ in SETS] == sorted(SUBSET_SIZES)


def test_attribute_paths_are_unique_and_complete():
    paths = Counter((e.set_id, e.attributes) for e in ELEMENTS)
    assert max(paths.values()) == 1
    for e in ELEMENTS:
        family, attributes = SET_FAMILIES[e.set_id]
        assert e.family == family and [k for k, _ in e.attributes] == [a.name for a in sorted(
            attributes, key=lambda a: not a.visible)]
        assert e.name.startswith(f"({['VT', 'FX', 'BB', 'UB'][e.event - 1]}) ")


def test_head_elements_share_appearance_and_differ_in_motion():
    """The Gym99 classes of each set look alike in one frame: they differ only in
    motion-only attributes (direction, counts, order), as the hard pairs of the paper."""
    g99 = {c.glabel for c in element_categories(ELEMENTS, "gym99").classes}
    kinds = Counter()
    for set_id, (_, attributes) in SET_FAMILIES.items():
        head = [e for e in ELEMENTS if e.set_id == set_id and e.glabel in g99]
        visible = [a.name for a in attributes if a.visible]
        assert len({tuple(e.attrs[v] for v in visible) for e in head}) <= 2, set_id
        for a in head:
            for b in head:
                diff = [k for k in a.attrs if a.attrs[k] != b.attrs[k]]
                if len(diff) == 1 and diff[0] not in visible:
                    kinds[diff[0]] += 1
    # Pairs that differ in direction, in a count, and in temporal order exist.
    assert kinds["direction"] and kinds["twists"] and kinds["rotations"] and kinds["count"]
    assert kinds["switch"] or kinds["twist_timing"]


def _joint_path(fn, attrs, place, n=50):
    from finegym_ray.synth.render import _joints
    return [_joints(fn(attrs, i / (n - 1), place)) for i in range(n)]


def test_direction_pair_same_hip_path_mirrored_figure():
    """A forward circle facing right and a backward circle facing left send the hips
    along the same path: one frame shows only which way she faces, not the direction."""
    bar = (1.0, 0.4)
    fwd = dict(shape="giant", direction="forward", count=1, turn_after=0.0)
    bwd = dict(fwd, direction="backward")
    a = _joint_path(motion.circle, fwd, motion.Place(1, 1, 0.86, 0.86, 1, bar=bar))
    b = _joint_path(motion.circle, bwd, motion.Place(1, 1, 0.86, 0.86, -1, bar=bar))
    for ja, jb in zip(a, b):
        assert ja["hip"] == pytest.approx(jb["hip"], abs=1e-9)
        assert ja["head"] == pytest.approx(jb["head"], abs=1e-9)
    # ...but each faces its own way, and the two sequences are different elements.
    assert any(abs(ja["bun"][0] - jb["bun"][0]) > 1e-3 for ja, jb in zip(a, b))


def test_count_pair_same_start_and_end_different_middle():
    """One turn or two: the first and last frames agree, the frames between do not."""
    place = motion.Place(1, 1, 0.86, 0.86, 1)
    one = dict(free_leg="forward", direction="inward", twists=1.0)
    two = dict(one, twists=2.0)
    p1 = [motion.turn(one, u, place) for u in (0.0, 0.5, 1.0)]
    p2 = [motion.turn(two, u, place) for u in (0.0, 0.5, 1.0)]
    assert math.cos(p1[0].twist) == pytest.approx(math.cos(p2[0].twist))
    assert math.cos(p1[-1].twist) == pytest.approx(math.cos(p2[-1].twist))
    assert p1[1].twist != pytest.approx(p2[1].twist)


def test_every_family_gives_finite_poses():
    place = motion.Place(0.5, 0.9, 0.86, 0.86, 1, bar=(1.0, 0.34), bar2=(0.7, 0.56), table=(1.0, 0.64))
    for e in ELEMENTS:
        for u in (0.0, 0.13, 0.5, 0.87, 0.999):
            pose = motion.FAMILIES[e.family](e.attrs, u, place)
            assert all(math.isfinite(v) for v in (pose.x, pose.y, pose.rotation, pose.twist)), e.name
