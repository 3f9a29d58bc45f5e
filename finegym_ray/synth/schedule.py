"""Plans SynGym: which routines each video holds, when, and which elements, where.

Everything is drawn from one numpy Generator per video (seeded from the config seed
and the video index), so a plan, and the files made from it, depend only on the
config. Times are rounded to hundredths of a second, as in FineGym's annotations, and
the renderer draws from the rounded times: annotations and pixels agree to the frame.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..dataset.keys import subaction_id
from .config import FPS_CHOICES, SynthConfig
from .motion import BODY, LEG, TRAVEL, Place, arena
from .taxonomy import MENS_EVENTS, Element

_ID_CHARS = string.ascii_letters + string.digits + "_-"
_DISMOUNT_SETS = (35, 44)


@dataclass(frozen=True)
class SubActionPlan:
    glabel: int
    stages: tuple[tuple[float, float], ...]  # seconds relative to the event start
    place: Place


@dataclass(frozen=True)
class EventPlan:
    label: int
    start_s: float  # absolute, seconds
    end_s: float
    subactions: tuple[SubActionPlan, ...] | None  # None: a men's event


@dataclass(frozen=True)
class VideoPlan:
    index: int
    video_id: str
    fps: Fraction  # frames per second, exact (30000/1001 for 29.97)
    duration_s: float
    events: tuple[EventPlan, ...]
    seed: int | None = None  # the seed it was planned and is rendered from (None: the config's)
    val: bool = False  # a video of the val split's own (SynthConfig.val_videos_seed)

    @property
    def num_frames(self) -> int:
        return int(self.duration_s * self.fps)


def exact_fps(fps: float) -> Fraction:
    """25 -> 25, 29.97 -> 30000/1001, 30 -> 30."""
    return Fraction(30000, 1001) if abs(fps - 29.97) < 1e-6 else Fraction(fps).limit_denominator(1001)


def video_rng(config: SynthConfig, index: int, seed: int | None = None) -> np.random.Generator:
    return np.random.default_rng([config.seed if seed is None else seed, index])


def video_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style id; each holds a ``_`` or ``-`` to keep parsers honest."""
    chars = [_ID_CHARS[i] for i in rng.integers(0, 62, 11)]
    chars[int(rng.integers(1, 10))] = "_-"[int(rng.integers(0, 2))]
    return "".join(chars)


def _uniform(rng: np.random.Generator, lo_hi: list[float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def _element_weights(elements: list[Element], imbalance: float) -> np.ndarray:
    first: dict[int, int] = {}
    for e in elements:
        first.setdefault(e.set_id, e.glabel)
    return np.array([(e.glabel - first[e.set_id] + 1.0) ** -imbalance for e in elements])


def _pick(rng: np.random.Generator, elements: list[Element], weights: np.ndarray) -> Element:
    return elements[int(rng.choice(len(elements), p=weights / weights.sum()))]


def _routine_elements(rng: np.random.Generator, event: int, n: int, by_event: dict[int, list[Element]],
                      config: SynthConfig) -> list[Element]:
    """``n`` elements of one routine; bars and beam routines usually end in a dismount."""
    pool = by_event[event]
    if event == 1:
        return [_pick(rng, pool, _element_weights(pool, config.imbalance))]
    body = [e for e in pool if e.set_id not in _DISMOUNT_SETS]
    chosen = [_pick(rng, body, _element_weights(body, config.imbalance)) for _ in range(n)]
    dismounts = [e for e in pool if e.set_id in _DISMOUNT_SETS]
    if dismounts and rng.random() < 0.8:
        chosen[-1] = _pick(rng, dismounts, _element_weights(dismounts, config.imbalance))
    return chosen


def _place(rng: np.random.Generator, element: Element, event: int, aspect: float) -> Place:
    """Where the element happens and which way she faces (see motion.py)."""
    ar = arena(event, aspect)
    a = element.motion
    backward = a.get("direction") == "backward"
    if element.family == "vault":
        return Place(ar.lo, ar.hi - 0.05 * aspect, ar.floor, ar.floor, 1, table=ar.table)
    if element.family in ("circle", "release", "transition"):
        bar = ar.bar if element.family != "circle" or rng.random() < 0.7 else ar.bar2
        return Place(bar[0], bar[0], ar.floor, ar.floor, int(rng.choice([-1, 1])), bar=bar, bar2=ar.bar2)
    if element.set_id in _DISMOUNT_SETS:
        travel = int(rng.choice([-1, 1]))
        facing = -travel if backward else travel
        if event == 4:
            x0, y0 = ar.bar[0], ar.bar[1] + 2 * LEG + 0.05
        else:
            x0, y0 = (ar.hi - 0.03 if travel > 0 else ar.lo + 0.03), ar.surface
        return Place(x0, x0 + travel * 0.3, y0, ar.floor, facing)
    if element.family == "salto" and event == 2:
        # Floor saltos all travel left to right: a front salto faces the way she goes, a
        # back salto faces the other way, so the set shows in any single frame.
        travel, facing = 1, (-1 if element.set_id == 25 else 1)
    else:
        travel = int(rng.choice([-1, 1]))
        facing = -travel if backward else travel
    distance = TRAVEL[element.family] * a.get("count", 1)
    lo, hi = ar.lo + 0.5 * BODY, ar.hi - 0.5 * BODY
    start = float(rng.uniform(lo, hi - distance)) if travel > 0 else float(rng.uniform(lo + distance, hi))
    return Place(start, start + travel * distance, ar.surface, ar.surface, facing)


def _duration(rng: np.random.Generator, config: SynthConfig) -> float:
    lo, hi = config.subaction_range_s
    return float(np.clip(config.subaction_median_s * np.exp(rng.normal(0.0, 0.45)), lo, hi))


def plan_video(config: SynthConfig, index: int, elements: list[Element], *, seed: int | None = None,
               val: bool = False) -> VideoPlan:
    """The plan of video ``index``: idle footage, routines, and their sub-actions, drawn
    from ``seed`` (default the config's); ``val``: a video of the val split's own."""
    seed = config.seed if seed is None else seed
    rng = video_rng(config, index, seed)
    vid = video_id(rng)
    fps = exact_fps(config.fps if config.fps is not None else float(rng.choice(FPS_CHOICES)))
    aspect = config.width / config.height
    by_event: dict[int, list[Element]] = {}
    for e in elements:
        by_event.setdefault(e.event, []).append(e)

    events = []
    t = _uniform(rng, config.idle_range_s)
    for _ in range(int(rng.integers(config.events_per_video[0], config.events_per_video[1] + 1))):
        start = round(t, 2)
        if rng.random() < config.mens_event_fraction:
            label = int(rng.choice(MENS_EVENTS))
            end = round(start + float(rng.uniform(15.0, 40.0)), 2)
            events.append(EventPlan(label, start, end, None))
        else:
            label = int(rng.choice(config.events)) if config.events else int(rng.integers(1, 5))
            n = int(rng.integers(config.subactions_per_event[0], config.subactions_per_event[1] + 1))
            subs = _plan_subactions(rng, _routine_elements(rng, label, n, by_event, config), label, aspect, config)
            end = round(start + subs[-1].stages[-1][1] + _uniform(rng, [0.8, 2.5]), 2)
            events.append(EventPlan(label, start, end, tuple(subs)))
        t = end + _uniform(rng, config.idle_range_s)
    return VideoPlan(index, vid, fps, round(t, 2), tuple(events), seed, val)


def _plan_subactions(rng: np.random.Generator, chosen: list[Element], event: int, aspect: float,
                     config: SynthConfig) -> list[SubActionPlan]:
    subs: list[SubActionPlan] = []
    used: set[str] = set()
    t = _uniform(rng, [1.0, 3.0])  # the salute and mount before the first element
    for element in chosen:
        if element.family == "vault":
            run, table, flight = _uniform(rng, [1.5, 3.0]), _uniform(rng, [0.6, 1.2]), _uniform(rng, [1.0, 2.0])
            cuts = [round(t, 2), round(t + run, 2), round(t + run + table, 2), round(t + run + table + flight, 2)]
            stages = tuple((cuts[i], cuts[i + 1]) for i in range(3))
        else:
            stages = ((round(t, 2), round(t + _duration(rng, config), 2)),)
        # Two sub-actions starting and ending in the same whole seconds would share a key.
        while subaction_id(stages) in used:
            shift = 1.0 - (stages[0][0] % 1.0) + 0.05
            stages = tuple((round(a + shift, 2), round(b + shift, 2)) for a, b in stages)
        used.add(subaction_id(stages))
        subs.append(SubActionPlan(element.glabel, stages, _place(rng, element, event, aspect)))
        t = stages[-1][1] + _uniform(rng, config.transition_range_s)
    return subs
