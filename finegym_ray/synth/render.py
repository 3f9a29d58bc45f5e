"""Draws a planned SynGym video frame by frame and encodes it as H.264 (yuv420p, MP4).

Each routine is drawn on its own apparatus (the event is visible in any frame), over a
cluttered arena backdrop, with a stick-figure gymnast posed by ``motion.py``; idle
footage between routines shows the arena with officials walking about. A camera with
shake and slow zoom films it all; sensor noise is added last.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter

import av
import cv2
import numpy as np

from ..dataset.poses import PoseRecord
from .config import SynthConfig
from .motion import BODY, FAMILIES, LEG, TORSO, Arena, Place, Pose, arena, circle, standing
from .poses import PoseTrack, coach_pose
from .schedule import EventPlan, SubActionPlan, VideoPlan
from .taxonomy import Element, build_elements

MARGIN = 0.15  # backdrop drawn this much wider than the frame on each side (of height)

# Arena wall colours (BGR) per event; the apparatus drawn on top is the real cue.
WALLS = {1: (120, 70, 40), 2: (60, 100, 60), 3: (90, 60, 110), 4: (50, 80, 120), 0: (70, 70, 70)}
# The coach's tracksuit (front, back) and skin, BGR.
COACH_COLOURS = ((110, 60, 30), (90, 50, 25), (150, 170, 200))


@lru_cache(maxsize=1)
def _elements() -> dict[int, Element]:
    return {e.glabel: e for e in build_elements()}


@dataclass
class _View:
    """Camera for one frame: scene units -> frame pixels."""

    scale: float  # pixels per scene unit (frame heights), zoom included
    ox: float
    oy: float

    def px(self, x: float, y: float) -> tuple[int, int]:
        return int(round(x * self.scale + self.ox)), int(round(y * self.scale + self.oy))


def _backdrop(event: int, width: int, height: int, clutter: int, rng: np.random.Generator) -> np.ndarray:
    """Arena, crowd and boards (``clutter`` shapes) and the apparatus of ``event`` (0: none)."""
    m = int(MARGIN * height)
    canvas = np.empty((height + 2 * m, width + 2 * m, 3), np.uint8)
    wall = np.array(WALLS.get(event, (80, 80, 90)), np.float32)
    shade = np.linspace(0.7, 1.1, canvas.shape[0], dtype=np.float32)[:, None, None]
    canvas[:] = np.clip(wall[None, None, :] * shade, 0, 255).astype(np.uint8)
    h = float(height)
    for _ in range(clutter):
        colour = tuple(int(c) for c in rng.integers(30, 230, 3))
        cx, cy = int(rng.uniform(0, canvas.shape[1])), int(rng.uniform(0, 0.55 * canvas.shape[0]))
        if rng.random() < 0.5:
            w, hh = int(rng.uniform(0.02, 0.2) * h), int(rng.uniform(0.02, 0.08) * h)
            cv2.rectangle(canvas, (cx, cy), (cx + w, cy + hh), colour, -1)
        else:
            cv2.circle(canvas, (cx, cy), int(rng.uniform(0.008, 0.03) * h), colour, -1)
    floor_y = int(0.86 * h) + m
    canvas[floor_y:] = (95, 110, 125)

    def p(x: float, y: float) -> tuple[int, int]:
        return int(x * h) + m, int(y * h) + m

    aspect = width / height
    ar = arena(event, aspect) if event else None
    grey, steel = (200, 200, 205), (160, 160, 170)
    if event == 1:  # runway and vaulting table
        cv2.rectangle(canvas, p(ar.lo, ar.floor - 0.01), p(ar.table[0], ar.floor + 0.02), (40, 60, 170), -1)
        tx, ty = ar.table
        cv2.rectangle(canvas, p(tx - 0.06, ty), p(tx + 0.06, ty + 0.035), (60, 60, 220), -1)
        cv2.line(canvas, p(tx, ty + 0.035), p(tx, ar.floor), steel, max(2, int(0.02 * h)))
        cv2.rectangle(canvas, p(ar.hi - 0.15, ar.floor - 0.02), p(ar.hi + 0.15, ar.floor + 0.02), (50, 150, 220), -1)
    elif event == 2:  # floor carpet with its white border
        cv2.rectangle(canvas, p(ar.lo - 0.05, ar.floor - 0.015), p(ar.hi + 0.05, 1.0 + MARGIN), (170, 90, 30), -1)
        cv2.line(canvas, p(ar.lo - 0.05, ar.floor), p(ar.hi + 0.05, ar.floor), (250, 250, 250), max(1, int(0.006 * h)))
    elif event == 3:  # beam on two legs
        cv2.rectangle(canvas, p(ar.lo - 0.08, ar.surface), p(ar.hi + 0.08, ar.surface + 0.025), (120, 180, 210), -1)
        for x in (ar.lo + 0.02, ar.hi - 0.02):
            cv2.line(canvas, p(x, ar.surface + 0.025), p(x, ar.floor), steel, max(2, int(0.012 * h)))
    elif event == 4:  # two bars at different heights, uprights and cables
        for bx, by in (ar.bar, ar.bar2):
            cv2.line(canvas, p(bx - 0.2, by), p(bx + 0.2, by), grey, max(2, int(0.01 * h)))
            cv2.line(canvas, p(bx - 0.2, by), p(bx - 0.2, ar.floor), steel, max(2, int(0.008 * h)))
            cv2.line(canvas, p(bx + 0.2, by), p(bx + 0.2, ar.floor), steel, max(2, int(0.008 * h)))
            cv2.line(canvas, p(bx + 0.2, by), p(bx + 0.35, ar.floor), (90, 90, 90), 1)
    elif event:  # men's apparatus: each its own shape around the centre
        bx, by = ar.bar
        kind = event % 3
        if kind == 0:
            cv2.line(canvas, p(bx - 0.3, by), p(bx + 0.3, by), grey, max(2, int(0.01 * h)))
        elif kind == 1:
            cv2.rectangle(canvas, p(bx - 0.25, by + 0.15), p(bx + 0.25, by + 0.25), (40, 90, 160), -1)
        else:
            for dx in (-0.08, 0.08):
                cv2.circle(canvas, p(bx + dx, by), int(0.03 * h), grey, max(2, int(0.006 * h)))
                cv2.line(canvas, p(bx + dx, by - 0.03), p(bx + dx, -MARGIN), (60, 60, 60), 1)
    return canvas


def _joints(pose: Pose, landmarks: bool = False) -> dict[str, tuple[float, float]]:
    """Scene positions of the figure's joints for ``pose``; with ``landmarks`` also the
    points a pose estimator finds that the stick figure does not draw (``_LANDMARKS``:
    nose, eyes, ears, shoulders, elbows, hips, each side named by its sign of z).

    The body frame is 3-D: x forward, y up (the long axis), z to her side, origin at
    the hips. Hips and knees flex in the sagittal plane (x, y). In profile the legs
    split and the arms swing in that plane too; a frontal figure (side salto, a turn
    with the free leg to the side) spreads them sideways (z). The twist turns the body
    about y (her front towards the camera as it grows: ``_faces_camera``); the camera
    looks along z at a figure in profile, along x at a frontal one, orthographically,
    and the somersault (about z in profile, about the sagittal axis x from the front)
    then turns the drawing in the image plane. A flat figure is foreshortened by
    cos(twist) either way; a frontal one's flexed hips and knees come into view as it
    twists. Profile poses come out exactly as from the 2-D figure of before.
    """
    ct, st = math.cos(pose.twist), math.sin(pose.twist)
    arm_len = 0.3 * BODY
    # Legs: flexion ``angle`` forward in the sagittal plane, spread sideways by ``side``.
    spread = 0.5 * pose.split if pose.frontal else 0.0

    def leg(angle: float, knee: float, side: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
        c, s = math.cos(side), math.sin(side)
        k = (LEG * math.sin(angle) * c, -LEG * math.cos(angle) * c, LEG * s)
        f = (k[0] + LEG * math.sin(angle - knee) * c, k[1] - LEG * math.cos(angle - knee) * c, k[2] + LEG * s)
        return k, f

    if pose.frontal:  # seen from the front, -z is screen right: leg 1 to the right
        k1, f1 = leg(pose.hip, pose.knee, -spread)
        k2, f2 = leg(pose.hip, pose.knee + pose.back_knee, spread)
    else:
        k1, f1 = leg(pose.hip + pose.split / 2, pose.knee, 0.0)
        k2, f2 = leg(pose.hip - pose.split / 2, pose.knee + pose.back_knee, 0.0)
    neck = (0.0, TORSO, 0.0)
    if pose.frontal:  # arms raised sideways, one to each side
        h1 = (0.0, neck[1] - arm_len * math.cos(pose.arm + 0.15), -arm_len * math.sin(pose.arm + 0.15))
        h2 = (0.0, neck[1] - arm_len * math.cos(pose.arm), arm_len * math.sin(pose.arm))
    else:
        h1 = (arm_len * math.sin(pose.arm + 0.15), neck[1] - arm_len * math.cos(pose.arm + 0.15), 0.0)
        h2 = (arm_len * math.sin(pose.arm - 0.15), neck[1] - arm_len * math.cos(pose.arm - 0.15), 0.0)
    body = {"hip": (0.0, 0.0, 0.0), "neck": neck, "head": (0.0, TORSO + 0.08 * BODY, 0.0),
            "bun": (-0.06 * BODY, TORSO + 0.11 * BODY, 0.0), "chest": (0.02 * BODY, 0.7 * TORSO, 0.0),
            "knee1": k1, "foot1": f1, "knee2": k2, "foot2": f2, "hand1": h1, "hand2": h2}
    if landmarks:
        body.update(_LANDMARKS)
        # Elbows half-way between shoulder and hand: the stick figure's arms are straight.
        for sign, hand in (("+", h2 if pose.frontal else h1), ("-", h1 if pose.frontal else h2)):
            sx, sy, sz = _LANDMARKS[f"shoulder{sign}"]
            body[f"elbow{sign}"] = ((sx + hand[0]) / 2, (sy + hand[1]) / 2, (sz + hand[2]) / 2)
    cr, sr = math.cos(pose.rotation), math.sin(pose.rotation)
    out = {}
    for name, (x, y, z) in body.items():
        # Twist about the long axis, then what the camera sees across the image: x in
        # profile (the camera on the +z side), -z from the front (the camera ahead of her).
        x = -(x * st + z * ct) if pose.frontal else x * ct - z * st
        xr, yr = x * cr + y * sr, -x * sr + y * cr  # forward rotation turns the head forward
        out[name] = (pose.x + pose.facing * xr, pose.y - yr)
    return out


# Points of the head and trunk that a pose estimator finds and the stick figure does not
# draw, in the body frame of ``_joints`` (x forward, y up, z to the side: ``+`` and
# ``-`` name the two sides), frame heights.
_HEAD_Y = TORSO + 0.08 * BODY  # the centre of the drawn head
_LANDMARKS = {"nose": (0.06 * BODY, _HEAD_Y - 0.005 * BODY, 0.0),
              **{f"eye{s}": (0.045 * BODY, _HEAD_Y + 0.015 * BODY, z * 0.025 * BODY) for s, z in (("+", 1), ("-", -1))},
              **{f"ear{s}": (0.0, _HEAD_Y + 0.005 * BODY, z * 0.06 * BODY) for s, z in (("+", 1), ("-", -1))},
              **{f"shoulder{s}": (0.0, TORSO - 0.01 * BODY, z * 0.1 * BODY) for s, z in (("+", 1), ("-", -1))},
              **{f"hip{s}": (0.0, 0.0, z * 0.07 * BODY) for s, z in (("+", 1), ("-", -1))}}


def _coco_sources(facing_right: bool, frontal: bool) -> tuple[str, ...]:
    """The names of ``_joints(pose, landmarks=True)`` in COCO-17 order (nose, left and
    right eye, ear, shoulder, elbow, wrist, hip, knee, ankle) for a figure facing right
    or left, in profile or frontal.

    Which side is her right: z points to her right in a figure facing right (in profile
    the camera sees that side, and sees her right on its left once she turns to face
    it), and facing left is the mirror image, which swaps the sides. Leg and arm 1 are
    on the z side in profile (drawn nearer the camera), on the other side in a frontal
    figure (screen right while she faces the camera: her left)."""
    right, left = ("+", "-") if facing_right else ("-", "+")
    limb = {"+": "2" if frontal else "1", "-": "1" if frontal else "2"}
    names = ["nose"]
    for part in ("eye", "ear", "shoulder", "elbow"):
        names += [f"{part}{left}", f"{part}{right}"]
    names += [f"hand{limb[left]}", f"hand{limb[right]}", f"hip{left}", f"hip{right}"]
    for part in ("knee", "foot"):
        names += [f"{part}{limb[left]}", f"{part}{limb[right]}"]
    return tuple(names)


# (facing right, frontal) -> what picks the 17 COCO joints out of ``_joints``' dict.
_COCO_PICK = {(right, frontal): itemgetter(*_coco_sources(right, frontal)) for right in (True, False)
              for frontal in (True, False)}


def coco_joints(pose: Pose) -> tuple[tuple[float, float], ...]:
    """The figure's 17 COCO joints for ``pose``, scene positions (frame heights)."""
    return _COCO_PICK[pose.facing > 0, pose.frontal](_joints(pose, landmarks=True))


def _faces_camera(pose: Pose) -> float:
    """How far her front turns to the camera: 1 facing it, -1 her back to it."""
    return math.cos(pose.twist) if pose.frontal else math.sin(pose.twist)


def _draw_figure(frame: np.ndarray, pose: Pose, view: _View, colours: tuple[tuple[int, int, int], ...],
                 joints: dict[str, tuple[float, float]] | None = None) -> None:
    """Draw ``pose`` (its ``_joints``, computed here unless given) through ``view``."""
    front, back, skin = colours
    j = joints or _joints(pose)
    thick = max(2, int(0.022 * view.scale))
    toward = _faces_camera(pose)
    suit = front if toward >= 0.0 else back

    def line(a: str, b: str, colour, t: int = thick) -> None:
        cv2.line(frame, view.px(*j[a]), view.px(*j[b]), colour, t, cv2.LINE_AA)

    line("hip", "knee2", back)
    line("knee2", "foot2", back)
    line("neck", "hand2", skin)
    line("hip", "neck", suit, int(thick * 1.8))
    line("hip", "knee1", suit)
    line("knee1", "foot1", suit)
    line("neck", "hand1", skin)
    cv2.circle(frame, view.px(*j["head"]), max(2, int(0.065 * BODY * view.scale)), skin, -1, cv2.LINE_AA)
    if not pose.frontal or toward < 0.0:
        # Hair tied at the back of the head: which way she faces shows in any frame
        # (hidden behind the head while she faces the camera).
        cv2.circle(frame, view.px(*j["bun"]), max(1, int(0.035 * BODY * view.scale)), (30, 40, 60), -1, cv2.LINE_AA)
    if toward > 0.3:
        # The emblem on the front of the leotard: seen only while she faces the camera.
        cv2.circle(frame, view.px(*j["chest"]), max(1, thick // 2 + 1), (255, 255, 255), -1, cv2.LINE_AA)


def _hang(bar: tuple[float, float], t: float, facing: int) -> Pose:
    swing = 0.25 * math.sin(2.5 * t)
    return Pose(bar[0] - facing * math.sin(swing) * 0.45 * BODY, bar[1] + 0.3 * BODY + TORSO,
                facing, rotation=-swing, arm=math.pi)


def _between(ev: EventPlan, ar: Arena, rel: float, prev: SubActionPlan | None, nxt: SubActionPlan | None) -> Pose:
    """Pose between elements: walk from where the last ended to where the next starts
    (or hang from the bar), saluting at the start and end of the routine."""
    if ev.label == 4:
        bar = (nxt or prev).place.bar if (nxt or prev).place.bar != (0.0, 0.0) else ar.bar
        return _hang(bar, rel, (nxt or prev).place.facing)
    a_end = prev.stages[-1][1] if prev else 0.0
    b_start = nxt.stages[0][0] if nxt else ev.end_s - ev.start_s
    g = (rel - a_end) / max(b_start - a_end, 1e-6)
    x0 = prev.place.x1 if prev else nxt.place.x0
    x1 = nxt.place.x0 if nxt else prev.place.x1
    y = (prev.place.y1 if prev else nxt.place.y0) if g < 0.5 or not nxt else nxt.place.y0
    facing = (nxt or prev).place.facing if g >= 0.5 or not prev else _end_facing(prev)
    walk = math.sin(g * math.pi * max(1, int(abs(x1 - x0) / 0.05)))
    salute = 2.9 if (prev is None and g < 0.4) or (nxt is None and g > 0.5) else 0.4
    return standing(x0 + (x1 - x0) * g, y, facing, split=0.6 * walk * (abs(x1 - x0) > 0.01), arm=salute)


def _end_facing(sub: SubActionPlan) -> int:
    twists = _elements()[sub.glabel].attrs.get("twists", 0.0)
    return sub.place.facing * (-1 if round(2 * twists) % 2 else 1)


def element_pose(element: Element, u: float, place: Place, cuts: tuple[float, ...] = ()) -> Pose:
    """The pose ``u`` (0-1) of the way through ``element`` at ``place``; ``cuts``: a
    vault's stage ends (fractions of the whole)."""
    if element.family == "vault" and cuts:
        return FAMILIES["vault"](element.motion, u, place, cuts)
    return FAMILIES[element.family](element.motion, u, place)


def _routine_pose(ev: EventPlan, ar: Arena, rel: float) -> Pose:
    """The gymnast's pose ``rel`` seconds into routine ``ev``."""
    if ev.subactions is None:  # men's events: continuous giant swings around the apparatus
        return circle({"direction": "backward", "shape": "giant", "count": 1, "turn_after": 0.0},
                      (rel / 1.6) % 1.0, Place(ar.bar[0], ar.bar[0], ar.floor, ar.floor, 1, bar=ar.bar))
    prev = None
    for sub in ev.subactions:
        start, end = sub.stages[0][0], sub.stages[-1][1]
        if rel < start:
            return _between(ev, ar, rel, prev, sub)
        if rel < end:
            return element_pose(_elements()[sub.glabel], (rel - start) / (end - start), sub.place,
                                tuple((b - start) / (end - start) for _, b in sub.stages[:-1]))
        prev = sub
    return _between(ev, ar, rel, prev, None)


class _Camera:
    """Smooth drift and zoom (sums of slow sines) plus a little per-frame shake."""

    def __init__(self, rng: np.random.Generator, jitter_px: float, zoom: float):
        self.freqs = rng.uniform(0.05, 0.4, 4)
        self.phases = rng.uniform(0, 2 * math.pi, 4)
        self.jitter = jitter_px
        self.zoom = zoom
        self.rng = rng

    def at(self, t: float) -> tuple[float, float, float]:
        s = np.sin(2 * math.pi * self.freqs * t + self.phases)
        shake = self.rng.normal(0.0, 0.3, 2)
        dx = self.jitter * (s[0] + shake[0])
        dy = self.jitter * (0.6 * s[1] + shake[1])
        z = 1.0 + self.zoom * 0.5 * (1 + s[2])
        return dx, dy, z


def _noise_bank(rng: np.random.Generator, height: int, width: int, std: float,
                n: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """Noise frames split into positive and negative parts for saturating uint8 adds."""
    bank = []
    for _ in range(n):
        noise = rng.normal(0.0, std, (height, width, 1)).astype(np.float32)
        noise = np.repeat(noise, 3, axis=2)
        bank.append((np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)))
    return bank


def render_video(plan: VideoPlan, config: SynthConfig, path: str) -> str:
    """Render ``plan`` to an H.264 MP4 at ``path`` (written to a temporary name, then
    renamed: a half-written video never has the final name). Returns ``path``."""
    _render(plan, config, path)
    return path


def render_video_poses(plan: VideoPlan, config: SynthConfig, path: str) -> list[PoseRecord]:
    """Render ``plan`` as :func:`render_video` does and return the 2-D poses of its
    sub-actions as drawn (``poses.PoseTrack.records``)."""
    return _render(plan, config, path).records(config)


def _render(plan: VideoPlan, config: SynthConfig, path: str) -> PoseTrack:
    rng = np.random.default_rng([config.seed if plan.seed is None else plan.seed, plan.index, 1])
    w, h = config.width, config.height
    camera = _Camera(rng, config.camera_jitter * h / 360.0, config.zoom)
    noise = _noise_bank(rng, h, w, config.noise) if config.noise > 0 else []
    backdrops: dict[int, np.ndarray] = {}
    idle_backdrop = _backdrop(0, w, h, config.clutter, rng)
    people = rng.uniform(0.2, 1.6, (2, 2))  # officials walking in idle footage: start x, speed
    colours = {i: _athlete_colours(rng) for i in range(len(plan.events))}
    margin = int(MARGIN * h)
    aspect = w / h
    track = PoseTrack(plan)
    coaches = {k: coach_pose(ev, aspect) for k, ev in enumerate(plan.events)} if config.pose_coach else {}

    tmp = f"{path}.tmp-{os.getpid()}"
    container = av.open(tmp, "w", format="mp4")
    try:
        stream = container.add_stream("libx264", rate=plan.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.thread_count = 1  # parallelism comes from rendering videos side by side
        stream.codec_context.options = {"preset": config.x264_preset, "crf": str(config.crf),
                                        "g": str(max(1, round(config.gop_s * float(plan.fps))))}
        period = 1 / plan.fps
        k = 0
        for i in range(plan.num_frames):
            t = float(i * period)
            while k < len(plan.events) and t >= plan.events[k].end_s:
                k += 1
            ev = plan.events[k] if k < len(plan.events) and t >= plan.events[k].start_s else None
            dx, dy, z = camera.at(t)
            pose = _routine_pose(ev, arena(ev.label, aspect), t - ev.start_s) if ev is not None else None
            z *= config.figure_scale
            if pose is None or config.figure_scale == 1:
                cx, cy = w / 2 + margin + dx, h / 2 + margin + dy
            else:  # follow the hips (backdrop pixels), the view kept inside the drawn backdrop
                cx = float(np.clip(pose.x * h + margin + dx, w / (2 * z), w + 2 * margin - w / (2 * z)))
                cy = float(np.clip(pose.y * h + margin + dy, h / (2 * z), h + 2 * margin - h / (2 * z)))
            m = np.array([[z, 0.0, w / 2 - z * cx], [0.0, z, h / 2 - z * cy]], np.float32)
            if ev is None:
                frame = cv2.warpAffine(idle_backdrop, m, (w, h), flags=cv2.INTER_LINEAR)
            else:
                if k not in backdrops:
                    backdrops = {k: _backdrop(ev.label, w, h, config.clutter, rng)}
                frame = cv2.warpAffine(backdrops[k], m, (w, h), flags=cv2.INTER_LINEAR)
            view = _View(h * z, z * (margin - cx) + w / 2, z * (margin - cy) + h / 2)
            if ev is None:
                for x0, speed in people:
                    x = (x0 + 0.05 * speed * t) % (aspect + 0.4) - 0.2
                    step = math.sin(6 * speed * t)
                    _draw_figure(frame, standing(x, 0.86, 1, split=0.5 * step), view,
                                 ((40, 40, 40), (30, 30, 30), (150, 170, 200)))
            else:
                if coaches:
                    _draw_figure(frame, coaches[k], view, COACH_COLOURS)
                span = track.at(i)
                joints = _joints(pose, landmarks=span is not None)
                _draw_figure(frame, pose, view, colours[k], joints)
                if span is not None:
                    span.joints.append(_COCO_PICK[pose.facing > 0, pose.frontal](joints))
                    span.views.append((view.scale, view.ox, view.oy))
                    if coaches and span.coach is None:
                        span.coach = coco_joints(coaches[k])
            if noise:
                pos, neg = noise[i % len(noise)]
                cv2.add(frame, pos, dst=frame)
                cv2.subtract(frame, neg, dst=frame)
            vf = av.VideoFrame.from_ndarray(frame, format="bgr24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    finally:
        container.close()
    os.replace(tmp, path)
    return track


def _athlete_colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], ...]:
    hue = int(rng.integers(0, 180))
    hsv = np.array([[[hue, 200, 230], [hue, 200, 120]]], np.uint8)
    front, back = (tuple(int(c) for c in px) for px in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0])
    return front, back, (150, 180, 225)
