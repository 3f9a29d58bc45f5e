"""SynGym's label hierarchy: FineGym's 4 women's events and 15 sets, and 530 synthetic
elements, each defined by an attribute path (the analogue of FineGym's decision trees).

Every set has a *motion family* (how the renderer moves the figure) and a list of
attributes. Attributes are either *visible* (a single frame shows them: body shape,
free-leg position) or *motion-only* (only the sequence of frames shows them: rotation
direction, number of rotations or turns, order of phases). Elements are enumerated with
the motion-only attributes varying fastest, so the frequent (head) elements of a set
share their appearance and differ only in motion, as in the paper's hardest pairs.

The subsets mirror FineGym's: ``gym530`` holds all elements, ``gym288`` and ``gym99``
the first ones of each set (the most frequent), with FineGym's per-task class counts:
VT 6, FX 35, FX leap-jump-hop (FX-S1) 11, UB circles (UB-S1) 15 classes in Gym99.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from ..dataset.categories import ElementCategories, ElementCategory, SetCategory, event_of_set

# FineGym's set_categories.txt, names as in the file (the "fligh" typo included).
SETS = (
    (1, "vault"),
    (21, "FX_leap_jump_hop"), (22, "FX_turns"), (23, "FX_side_salto"), (24, "FX_front_salto"),
    (25, "FX_back_salto"),
    (31, "BB_leap_jump_hop"), (32, "BB_turns"), (33, "BB_flight_salto"), (34, "BB_flight_handspring"),
    (35, "BB_dismounts"),
    (41, "UB_circles"), (42, "UB_fligh_same_bar"), (43, "UB_transition_flight"), (44, "UB_dismounts"),
)

EVENT_PREFIX = {1: "VT", 2: "FX", 3: "BB", 4: "UB"}

# The men's events: FineGym annotates them as routines without sub-actions.
MENS_EVENTS = (5, 6, 7, 8, 9, 10)

# Classes per set in (gym99, gym288, gym530). Gym99 keeps FineGym's sub-task sizes:
# VT 6, FX 35 (FX-S1 = set 21: 11), UB-S1 = set 41: 15. Totals 99 / 288 / 530.
SUBSET_SIZES = {
    1: (6, 22, 60),
    21: (11, 26, 45), 22: (7, 14, 25), 23: (5, 10, 20), 24: (5, 15, 30), 25: (7, 27, 45),
    31: (10, 30, 50), 32: (5, 10, 20), 33: (6, 27, 45), 34: (6, 16, 30), 35: (6, 19, 35),
    41: (15, 27, 40), 42: (4, 14, 25), 43: (3, 15, 30), 44: (3, 16, 30),
}

SHAPES = ("tucked", "piked", "straight")
TWISTS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)


@dataclass(frozen=True)
class Attribute:
    """One question of a set's decision tree; ``visible`` if a single frame can answer it."""

    name: str
    answers: tuple
    visible: bool


def _a(name: str, answers: Sequence, visible: bool = False) -> Attribute:
    return Attribute(name, tuple(answers), visible)


# Motion family and attributes of each set. The renderer (render.py) gives every
# attribute a meaning; only the visible ones change a single frame.
_SALTO = [_a("shape", SHAPES, True), _a("twist_timing", ("early", "late")),
          _a("rotations", (1.0, 1.5, 2.0)), _a("twists", TWISTS)]
_LEAP = [_a("shape", ("split", "straddle", "ring", "sissone"), True), _a("switch", (False, True)),
         _a("takeoff", ("one_foot", "two_feet")), _a("twists", (0.0, 0.5, 1.0, 1.5))]
_TURN = [_a("free_leg", ("forward", "side", "back", "tucked"), True), _a("direction", ("inward", "outward")),
         _a("twists", (1.0, 1.5, 2.0, 2.5, 3.0, 4.0))]
SET_FAMILIES: dict[int, tuple[str, list[Attribute]]] = {
    1: ("vault", [_a("shape", SHAPES, True), _a("entry", ("handspring", "round_off", "tsukahara")),
                  _a("rotations", (0.0, 1.0, 2.0)), _a("twists", TWISTS)]),
    21: ("leap", _LEAP),
    22: ("turn", _TURN),
    23: ("salto", [_a("shape", SHAPES, True), _a("rotations", (1.0, 1.5)), _a("twists", TWISTS)]),
    24: ("salto", _SALTO),
    25: ("salto", _SALTO),
    31: ("leap", _LEAP),
    32: ("turn", _TURN),
    33: ("salto", [_a("shape", SHAPES, True), _a("direction", ("backward", "forward")),
                   _a("rotations", (1.0, 1.5)), _a("twists", (0.0, 0.5, 1.0, 1.5, 2.0))]),
    34: ("handspring", [_a("shape", ("straight", "split"), True), _a("direction", ("backward", "forward")),
                        _a("flight", (True, False)), _a("count", (1, 2, 3)), _a("twists", (0.0, 0.5))]),
    35: ("salto", [_a("shape", SHAPES, True), _a("direction", ("backward", "forward")),
                   _a("rotations", (1.0, 2.0)), _a("twists", (0.0, 0.5, 1.0, 1.5, 2.0))]),
    41: ("circle", [_a("shape", ("clear_hip", "stalder", "toe_on", "giant"), True),
                    _a("direction", ("backward", "forward")), _a("turn_after", (0.0, 0.5, 1.0)),
                    _a("count", (1, 2))]),
    42: ("release", [_a("shape", SHAPES, True), _a("direction", ("backward", "forward")),
                     _a("rotations", (0.0, 1.0, 1.5)), _a("twists", (0.0, 0.5, 1.0))]),
    43: ("transition", [_a("shape", SHAPES, True), _a("path", ("high_to_low", "low_to_high")),
                        _a("rotations", (0.0, 0.5, 1.0)), _a("twists", (0.0, 0.5, 1.0, 1.5))]),
    44: ("salto", [_a("shape", SHAPES, True), _a("direction", ("backward", "forward")),
                   _a("rotations", (1.0, 2.0, 3.0)), _a("twists", (0.0, 0.5, 1.0, 1.5, 2.0))]),
}

# How every element of a set moves, beyond its attributes: the set itself answers these
# questions, so they are not part of any class's decision path (nor of its name). The
# renderer reads them with the attributes (``Element.motion``). Floor saltos differ by
# set: a side salto (23) rotates about the sagittal axis, cartwheel-like, drawn from the
# front; a back salto (25) rotates backward; a front salto (24) forward, the default.
SET_MOTION: dict[int, dict[str, object]] = {
    23: {"sideways": True},
    25: {"direction": "backward"},
}


@dataclass(frozen=True)
class Element:
    """One element class: ``glabel`` is its Gym530 id; ``attributes`` its decision path."""

    glabel: int
    set_id: int
    family: str
    attributes: tuple[tuple[str, object], ...]

    @property
    def event(self) -> int:
        return event_of_set(self.set_id)

    @property
    def attrs(self) -> dict[str, object]:
        return dict(self.attributes)

    @property
    def motion(self) -> dict[str, object]:
        """What the renderer moves by: the attributes and the set's own motion (SET_MOTION)."""
        return {**SET_MOTION.get(self.set_id, {}), **self.attrs}

    @property
    def name(self) -> str:
        """Category-file name, e.g. ``(FX) salto backward piked, rotations 1.5, twists 0.5``."""
        return f"({EVENT_PREFIX[self.event]}) {self.family} " + ", ".join(_describe(k, v) for k, v in self.attributes)


def _describe(name: str, value: object) -> str:
    if isinstance(value, bool):
        return name.replace("_", " ") if value else f"no {name.replace('_', ' ')}"
    if isinstance(value, str):
        return value.replace("_", " ")
    return f"{name.replace('_', ' ')} {value:g}"


def _set_elements(set_id: int, count: int, first_glabel: int) -> list[Element]:
    family, attributes = SET_FAMILIES[set_id]
    visible = [a for a in attributes if a.visible]
    motion = [a for a in attributes if not a.visible]
    names = [a.name for a in visible + motion]
    paths = []
    for vis in itertools.product(*(range(len(a.answers)) for a in visible)):
        # Within one appearance, simpler motions first (fewest steps away from the first
        # answer of each question): the head of a set is the base element and its
        # one-attribute variations (direction, count, timing), as in FineGym's frequent pairs.
        for mot in sorted(itertools.product(*(range(len(a.answers)) for a in motion)), key=lambda m: (sum(m), m)):
            values = dict(zip(names, [a.answers[i] for a, i in zip(visible + motion, vis + mot)]))
            # The timing of a twist only exists when there is a twist.
            if values.get("twist_timing") == "late" and values.get("twists") == 0.0:
                continue
            paths.append(tuple(values.items()))
    if len(paths) < count:
        raise AssertionError(f"set {set_id} has {len(paths)} attribute paths for {count} elements")
    return [Element(first_glabel + i, set_id, family, path) for i, path in enumerate(paths[:count])]


def build_elements() -> list[Element]:
    """All 530 elements in Glabel order: set by set, and within a set the head first."""
    elements: list[Element] = []
    for set_id, _ in SETS:
        elements += _set_elements(set_id, SUBSET_SIZES[set_id][2], len(elements))
    return elements


def subset_glabels(elements: Sequence[Element], subset: str) -> list[int]:
    """Glabels of the ``gym99`` / ``gym288`` / ``gym530`` subset, in label order."""
    column = {"gym99": 0, "gym288": 1, "gym530": 2}[subset]
    first: dict[int, int] = {}
    for e in elements:
        first.setdefault(e.set_id, e.glabel)
    return [e.glabel for e in elements if e.glabel - first[e.set_id] < SUBSET_SIZES[e.set_id][column]]


def set_categories() -> list[SetCategory]:
    return [SetCategory(i, n) for i, n in SETS]


def element_categories(elements: Sequence[Element], subset: str) -> ElementCategories:
    """The categories of ``subset`` as the dataset parsers return them."""
    by_glabel = {e.glabel: e for e in elements}
    classes = tuple(ElementCategory(i, by_glabel[g].set_id, g, by_glabel[g].name)
                    for i, g in enumerate(subset_glabels(elements, subset)))
    return ElementCategories(subset, classes)
