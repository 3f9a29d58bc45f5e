"""How the synthetic gymnast moves: a pose for every moment of an element, from the
element's motion family and attributes.

Scene coordinates are in units of the frame height (y down, the floor near 0.86); the
figure is a stick figure of body length ``BODY`` (feet to top of head, standing).
Angles are radians. A pose is given in the gymnast's own frame (x forward, the way
she faces) and placed in the scene by ``facing`` (+1 right, -1 left): so a forward
salto turns the same way on screen whichever way she faces, and a single frame cannot
tell a forward salto from a backward one done facing the other way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

BODY = 0.2  # body length, frame heights
LEG = 0.25 * BODY  # thigh and shin each
TORSO = 0.33 * BODY
TAU = 2 * math.pi

# Body shape in flight: (hip flexion, knee flexion).
SHAPE_FLEX = {"tucked": (2.3, 2.4), "piked": (2.5, 0.0), "straight": (0.0, 0.0)}


@dataclass(frozen=True)
class Pose:
    """Hips at (x, y) in the scene; ``rotation``: somersault angle, positive forward;
    ``twist``: turn about the long axis; ``hip``/``knee``: flexion; ``split``: angle
    between the legs (front leg forward); ``arm``: shoulder angle (0 down, pi overhead);
    ``back_knee``: extra flexion of the back leg (ring leap, passe); ``frontal``: seen
    from the front (side salto, cartwheel) rather than in profile."""

    x: float
    y: float
    facing: int = 1
    rotation: float = 0.0
    twist: float = 0.0
    hip: float = 0.0
    knee: float = 0.0
    split: float = 0.0
    arm: float = 0.3
    back_knee: float = 0.0
    frontal: bool = False


@dataclass(frozen=True)
class Place:
    """Where an element happens. ``x0``/``x1``: start and end of the hips' travel;
    ``y0``/``y1``: surface heights (feet) at start and end; ``bar``/``bar2``: the bars
    (uneven bars), ``table``: the vaulting table's top (x, y)."""

    x0: float
    x1: float
    y0: float
    y1: float
    facing: int
    bar: tuple[float, float] = (0.0, 0.0)
    bar2: tuple[float, float] = (0.0, 0.0)
    table: tuple[float, float] = (0.0, 0.0)


def smooth(u: float) -> float:
    """0 -> 0, 1 -> 1 with zero slope at both ends."""
    u = min(max(u, 0.0), 1.0)
    return u * u * (3 - 2 * u)


def phase(u: float, a: float, b: float) -> float:
    """Progress of ``u`` through [a, b], clipped to [0, 1]."""
    if b <= a:
        return 1.0 if u >= b else 0.0
    return min(max((u - a) / (b - a), 0.0), 1.0)


def standing(x: float, feet_y: float, facing: int, **kw) -> Pose:
    return Pose(x, feet_y - 2 * LEG, facing, **kw)


def _flight(place: Place, u: float, height: float) -> tuple[float, float]:
    """Hips on a parabola from the start to the end surface, ``height`` above the higher end."""
    s = smooth(u) * 0.3 + u * 0.7
    x = place.x0 + (place.x1 - place.x0) * s
    base = place.y0 + (place.y1 - place.y0) * s - 2 * LEG
    return x, base - 4 * height * s * (1 - s)


def _tuck(shape: str, amount: float) -> tuple[float, float]:
    hip, knee = SHAPE_FLEX[shape]
    return hip * amount, knee * amount


def _twist_window(timing: str) -> tuple[float, float]:
    return (0.0, 0.6) if timing == "early" else (0.4, 1.0)


def salto(a: dict, u: float, place: Place, frontal: bool = False) -> Pose:
    """Take off (crouch), fly with ``rotations`` somersaults and ``twists`` turns in
    ``shape``, land. ``direction`` backward turns the rotation around. ``sideways`` (or
    ``frontal``): a side salto, about the sagittal axis: she faces the camera, legs
    apart, and turns in the image plane, the head leading the travel as in a cartwheel."""
    frontal = frontal or bool(a.get("sideways"))
    sign = -1.0 if a.get("direction") == "backward" else 1.0
    crouch = 1 - phase(u, 0.0, 0.15) if u < 0.15 else phase(u, 0.85, 1.0) * (1 - phase(u, 0.9, 1.0))
    f = phase(u, 0.15, 0.85)
    if f <= 0.0 or f >= 1.0:
        y = place.y0 if f <= 0 else place.y1
        x = place.x0 if f <= 0 else place.x1
        bend = 0.6 * crouch if u < 0.15 else 0.6 * (1 - phase(u, 0.85, 1.0))
        end_twist = 0.0 if f <= 0 else TAU * a.get("twists", 0.0)
        p = standing(x, y, place.facing, hip=bend, knee=bend * 1.5, arm=2.8, twist=end_twist, frontal=frontal)
        return replace(p, y=p.y + 0.3 * bend * LEG)
    x, y = _flight(place, f, 0.22)
    tw0, tw1 = _twist_window(a.get("twist_timing", "early"))
    twist = TAU * a.get("twists", 0.0) * smooth(phase(f, tw0, tw1))
    tuck = math.sin(math.pi * f) ** 0.5
    hip, knee = _tuck(a["shape"], tuck)
    return Pose(x, y, place.facing, rotation=sign * TAU * a["rotations"] * smooth(f), twist=twist,
                hip=hip, knee=knee, arm=2.8 - 1.2 * tuck, split=0.6 if frontal else 0.0, frontal=frontal)


LEAP_SPLIT = {"split": (2.9, 0.0), "straddle": (2.4, 0.0), "ring": (2.9, 2.2), "sissone": (1.8, 0.0)}


def leap(a: dict, u: float, place: Place) -> Pose:
    """Run-up steps (one-foot take-off) or a two-foot hop, a flight in ``shape`` with
    ``twists`` turns, legs swapping mid-air with ``switch``, landing."""
    split, back_knee = LEAP_SPLIT[a["shape"]]
    if u < 0.25:
        g = u / 0.25
        if a["takeoff"] == "one_foot":
            step = math.sin(g * 3 * math.pi)
            return standing(place.x0, place.y0, place.facing, split=0.7 * step, arm=0.6 + g)
        return standing(place.x0, place.y0, place.facing, hip=0.8 * math.sin(math.pi * g),
                        knee=1.2 * math.sin(math.pi * g), arm=0.3 + 2 * g)
    if u > 0.8:
        g = phase(u, 0.8, 1.0)
        bend = 0.7 * math.sin(math.pi * g)
        return standing(place.x1, place.y1, place.facing, hip=bend, knee=1.4 * bend, arm=2.0 - g,
                        twist=TAU * a["twists"])
    f = phase(u, 0.25, 0.8)
    x, y = _flight(place, f, 0.14)
    open_ = math.sin(math.pi * f) ** 0.7
    s = split * open_
    if a["switch"]:
        # Legs swing through together, then open the other way: only the order of
        # frames tells a switch leap from a plain one.
        s = split * math.cos(math.pi * min(f * 1.6, 1.0)) * open_
    return Pose(x, y, place.facing, twist=TAU * a["twists"] * smooth(f), split=s,
                back_knee=back_knee * open_, arm=2.4)


FREE_LEG = {"forward": dict(split=1.5), "side": dict(split=1.0, frontal=True),
            "back": dict(split=-1.4), "tucked": dict(back_knee=2.4, split=-0.9)}


def turn(a: dict, u: float, place: Place) -> Pose:
    """A pirouette on one foot: ``twists`` turns, ``direction`` inward or outward,
    the free leg held ``free_leg``."""
    sign = 1.0 if a["direction"] == "inward" else -1.0
    g = smooth(phase(u, 0.12, 0.9))
    hold = math.sin(math.pi * phase(u, 0.05, 0.97))
    leg = {k: (v * hold if isinstance(v, float) else v) for k, v in FREE_LEG[a["free_leg"]].items()}
    return standing(place.x0, place.y0 - 0.02 * hold, place.facing, twist=sign * TAU * a["twists"] * g,
                    arm=0.3 + 2.5 * hold, **leg)


def handspring(a: dict, u: float, place: Place) -> Pose:
    """``count`` walkovers or handsprings in ``direction``, legs together or split,
    with a flight phase (hips lifted) or not; ``twists`` in the last one."""
    sign = -1.0 if a["direction"] == "backward" else 1.0
    n = a["count"]
    k = min(int(u * n), n - 1)
    g = u * n - k
    x = place.x0 + (place.x1 - place.x0) * (k + smooth(g)) / n
    lift = (0.07 if a["flight"] else 0.0) * math.sin(math.pi * g)
    twist = TAU * a["twists"] * smooth(phase(g, 0.5, 1.0)) if k == n - 1 else 0.0
    s = (2.5 if a["shape"] == "split" else 0.3) * math.sin(math.pi * g)
    p = standing(x, place.y0 - lift, place.facing, rotation=sign * TAU * smooth(g), twist=twist,
                 split=s, arm=3.0)
    return replace(p, y=p.y - 0.5 * LEG * math.sin(math.pi * g))


CIRCLE_SHAPE = {"clear_hip": (0.35 * BODY, 0.0, 0.0, 0.0), "stalder": (0.45 * BODY, 1.9, 0.0, 1.2),
                "toe_on": (0.4 * BODY, 2.5, 0.3, 0.0), "giant": (0.75 * BODY, 0.0, 0.0, 0.0)}


def _around_bar(bar: tuple[float, float], angle: float, radius: float, facing: int) -> tuple[float, float, float]:
    """Hips at ``radius`` from the bar, ``angle`` 0 = below it; returns x, y and the
    body rotation that points the head (hands) at the bar."""
    x = bar[0] + facing * radius * math.sin(angle)
    y = bar[1] + radius * math.cos(angle)
    return x, y, math.pi + angle


def circle(a: dict, u: float, place: Place) -> Pose:
    """``count`` circles around the bar in ``direction`` and ``shape``, then
    ``turn_after`` turns in handstand."""
    sign = -1.0 if a["direction"] == "backward" else 1.0
    radius, hip, knee, split = CIRCLE_SHAPE[a["shape"]]
    turn_end = 0.8 if a["turn_after"] else 1.0
    g = smooth(phase(u, 0.0, turn_end))
    angle = math.pi + sign * TAU * a["count"] * g  # from handstand above the bar, back to it
    flex = math.sin(math.pi * g) ** 0.5
    x, y, rot = _around_bar(place.bar, angle, radius, place.facing)
    return Pose(x, y, place.facing, rotation=rot, hip=hip * flex, knee=knee * flex, split=split * flex,
                arm=math.pi, twist=TAU * a["turn_after"] * smooth(phase(u, turn_end, 1.0)))


def release(a: dict, u: float, place: Place) -> Pose:
    """Swing down and up, let go above the bar, ``rotations`` saltos with ``twists``
    in ``shape``, catch the same bar."""
    sign = -1.0 if a["direction"] == "backward" else 1.0
    if u < 0.4:
        angle = math.pi + sign * math.pi * smooth(u / 0.4) * 1.1
        x, y, rot = _around_bar(place.bar, angle, 0.75 * BODY, place.facing)
        return Pose(x, y, place.facing, rotation=rot, arm=math.pi)
    if u > 0.85:
        angle = sign * math.pi * 0.25 * (1 - phase(u, 0.85, 1.0))
        x, y, rot = _around_bar(place.bar, angle, 0.75 * BODY, place.facing)
        return Pose(x, y, place.facing, rotation=rot, arm=math.pi, twist=TAU * a["twists"])
    f = phase(u, 0.4, 0.85)
    start = _around_bar(place.bar, math.pi + sign * math.pi * 1.1, 0.75 * BODY, place.facing)
    end = _around_bar(place.bar, sign * math.pi * 0.25, 0.75 * BODY, place.facing)
    x = start[0] + (end[0] - start[0]) * f
    y = start[1] + (end[1] - start[1]) * f - 0.25 * math.sin(math.pi * f)
    tuck = math.sin(math.pi * f) ** 0.5
    hip, knee = _tuck(a["shape"], tuck)
    rot = start[2] + (end[2] + sign * TAU * a["rotations"] - start[2]) * smooth(f)
    return Pose(x, y, place.facing, rotation=rot, twist=TAU * a["twists"] * smooth(f), hip=hip, knee=knee,
                arm=math.pi)


def transition(a: dict, u: float, place: Place) -> Pose:
    """Fly from one bar to the other (``path``), with ``rotations`` and ``twists``."""
    src, dst = (place.bar, place.bar2) if a["path"] == "high_to_low" else (place.bar2, place.bar)
    f = smooth(u)
    x = src[0] + (dst[0] - src[0]) * f
    y = src[1] + (dst[1] - src[1]) * f + 0.75 * BODY - 0.15 * math.sin(math.pi * u)
    tuck = math.sin(math.pi * u) ** 0.5
    hip, knee = _tuck(a["shape"], tuck)
    return Pose(x, y, place.facing, rotation=math.pi + TAU * a["rotations"] * f, twist=TAU * a["twists"] * f,
                hip=hip, knee=knee, arm=math.pi)


# Vault stages as fractions of the whole vault: run, table (pre-flight and support),
# flight. The planner draws stage durations and passes the true boundaries.
def vault(a: dict, u: float, place: Place, stages: tuple[float, float] = (0.45, 0.65)) -> Pose:
    """Run up (stage 1), the entry onto the table (stage 2: ``entry`` handspring
    forward, round-off or Tsukahara with a half turn and backward rotation), and the
    flight (stage 3) with ``rotations`` saltos, ``twists`` in ``shape``."""
    s1, s2 = stages
    tx, ty = place.table
    if u < s1:
        g = u / s1
        x = place.x0 + (tx - 0.5 * BODY - place.x0) * g
        return standing(x, place.y0, 1, split=0.9 * math.sin(g * 9 * math.pi),
                        arm=0.5 + 0.4 * math.sin(g * 9 * math.pi))
    backward = a["entry"] != "handspring"
    sign = -1.0 if backward else 1.0
    if u < s2:
        g = smooth((u - s1) / (s2 - s1))
        # Round-off and Tsukahara turn half-way round onto the table, then rotate backward.
        twist = math.pi * g if backward else 0.0
        x = tx - 0.5 * BODY + 0.5 * BODY * g
        y = place.y0 - 2 * LEG + (ty - 0.6 * BODY - place.y0 + 2 * LEG) * g
        return Pose(x, y, 1, rotation=math.pi * g, twist=twist, arm=3.0,
                    hip=0.4 * math.sin(math.pi * g))
    g = (u - s2) / (1 - s2)
    fly = Place(tx, place.x1, ty - 0.6 * BODY + 2 * LEG, place.y1, 1)
    x, y = _flight(fly, min(g / 0.85, 1.0), 0.2)
    twist0 = math.pi if backward else 0.0
    if g >= 0.85:
        return standing(place.x1, place.y1, 1, twist=twist0 + TAU * a["twists"], arm=2.8,
                        hip=0.5 * (1 - phase(g, 0.85, 1.0)))
    f = g / 0.85
    tuck = math.sin(math.pi * f) ** 0.5 if a["rotations"] else 0.3 * math.sin(math.pi * f)
    hip, knee = _tuck(a["shape"], tuck)
    # From inverted on the table (pi) to upright: a half turn plus the saltos.
    rot = math.pi + sign * (math.pi + TAU * a["rotations"]) * smooth(f)
    return Pose(x, y, 1, rotation=rot, twist=twist0 + TAU * a["twists"] * smooth(f), hip=hip, knee=knee, arm=2.6)


FAMILIES = {"salto": salto, "leap": leap, "turn": turn, "handspring": handspring, "circle": circle,
            "release": release, "transition": transition, "vault": vault}

# Hips' horizontal travel of one element, frame heights (salto and leap move on;
# turns and bar elements stay put; handsprings move per repetition).
TRAVEL = {"salto": 0.32, "leap": 0.28, "turn": 0.0, "handspring": 0.18, "circle": 0.0, "release": 0.0,
          "transition": 0.0, "vault": 0.0}


@dataclass(frozen=True)
class Arena:
    """Where the apparatus of an event stands, in scene units (frame heights).
    ``lo``..``hi``: the stretch the gymnast moves along at height ``surface`` (feet)."""

    floor: float
    surface: float
    lo: float
    hi: float
    bar: tuple[float, float] = (0.0, 0.0)  # uneven bars: the high bar
    bar2: tuple[float, float] = (0.0, 0.0)  # the low bar
    table: tuple[float, float] = (0.0, 0.0)


def arena(event: int, aspect: float) -> Arena:
    """The apparatus layout of ``event`` (1 VT, 2 FX, 3 BB, 4 UB, 5-10 men's) in a
    frame ``aspect`` (width / height) frame heights wide."""
    floor = 0.86
    if event == 1:
        return Arena(floor, floor, 0.08 * aspect, 0.85 * aspect, table=(0.56 * aspect, 0.64))
    if event == 2:
        return Arena(floor, floor, 0.1 * aspect, 0.9 * aspect)
    if event == 3:
        return Arena(floor, 0.6, 0.22 * aspect, 0.78 * aspect)
    if event == 4:
        return Arena(floor, floor, 0.2 * aspect, 0.8 * aspect, bar=(0.6 * aspect, 0.34), bar2=(0.4 * aspect, 0.56))
    return Arena(floor, floor, 0.3 * aspect, 0.7 * aspect, bar=(0.5 * aspect, 0.45))
