"""SynGym's 2-D poses: each sub-action's joints in COCO-17 order, in the pixels of the
frames the renderer draws, as a pose estimator would report them.

``render.py`` draws each frame and hands this module the figure's COCO joints
(``render.coco_joints``, frame heights) with the frame's camera; :class:`PoseTrack`
keeps those of the frames that a sub-action's clip holds and makes one
``dataset.poses.PoseRecord`` per sub-action: mmaction2's ``gym_2d.pkl`` layout, so that
``read_pose_pickle`` reads SynGym's file as it reads mmaction2's.

What an estimator does to the true joints (``SynthConfig``'s ``pose_*`` settings):
jitter (each coordinate off by a normal error); joints lost in fast motion, as HRNet
loses the blurred limbs of a salto (a joint faster than ``pose_miss_speed`` body lengths
per second: a low score, and a position anywhere along the streak it blurs over in one
frame); optionally a second person, a coach standing beside the apparatus, detected
with lower scores. A joint outside the frame has score 0 and is put on the frame's edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..dataset.keys import event_id, instance_key, subaction_id
from ..dataset.poses import JOINTS, PoseRecord
from ..video.decode import BOUNDARY_TOLERANCE_S
from .config import SynthConfig
from .motion import BODY, Pose, arena, standing
from .schedule import EventPlan, VideoPlan

# Scores (0-1, drawn uniformly): a joint found, a joint lost in its motion blur, the coach's.
FOUND_SCORE = (0.75, 0.98)
MISSED_SCORE = (0.0, 0.2)
COACH_SCORE = (0.3, 0.6)


@dataclass
class SubActionFrames:
    """One sub-action's frames of the video, ``first`` to ``stop`` (exclusive), and the
    true joints of each as the renderer adds them: COCO joints in frame heights, the
    camera (pixels per frame height, x and y offset in pixels), the coach's joints."""

    key: str
    glabel: int
    first: int
    stop: int
    coach: tuple[tuple[float, float], ...] | None = None
    joints: list[tuple[tuple[float, float], ...]] = field(default_factory=list)
    views: list[tuple[float, float, float]] = field(default_factory=list)


def subaction_frames(plan: VideoPlan) -> list[SubActionFrames]:
    """Every sub-action of ``plan`` in time order, with the frames its clip holds: those
    whose time ``i / fps`` lies in [start, end) of the sub-action, compared as decoding
    compares them (``video/decode.py``), so that pose frame n is the clip's frame n."""
    spans = []
    for ev in plan.events:
        eid = event_id(ev.start_s, ev.end_s)
        for sub in ev.subactions or ():
            start, end = ev.start_s + sub.stages[0][0], ev.start_s + sub.stages[-1][1]
            first, stop = (min(plan.num_frames, math.ceil((Fraction(t) - BOUNDARY_TOLERANCE_S) * plan.fps))
                           for t in (start, end))
            spans.append(SubActionFrames(instance_key(plan.video_id, eid, subaction_id(sub.stages)), sub.glabel,
                                         first, stop))
    return spans


def coach_pose(ev: EventPlan, aspect: float) -> Pose:
    """The coach of routine ``ev``: standing half a body length past the end of the
    apparatus, facing it."""
    ar = arena(ev.label, aspect)
    return standing(ar.hi + 0.5 * BODY, ar.floor, -1)


class PoseTrack:
    """The true joints of one video's sub-actions, frame by frame, as it is drawn."""

    def __init__(self, plan: VideoPlan):
        self.plan = plan
        self.spans = subaction_frames(plan)
        self._next = 0

    def at(self, frame: int) -> SubActionFrames | None:
        """The sub-action whose clip holds ``frame``, or None; frames come in order."""
        while self._next < len(self.spans) and frame >= self.spans[self._next].stop:
            self._next += 1
        if self._next < len(self.spans) and frame >= self.spans[self._next].first:
            return self.spans[self._next]
        return None

    def records(self, config: SynthConfig) -> list[PoseRecord]:
        """One record per sub-action (every frame of its clip drawn): its key, its
        element's Glabel as the label, and the persons an estimator reports: the
        gymnast, then the coach with ``pose_coach``."""
        rng = np.random.default_rng([config.seed if self.plan.seed is None else self.plan.seed, self.plan.index, 2])
        size = (config.height, config.width)
        fps = float(self.plan.fps)
        out = []
        for span in self.spans:
            assert len(span.joints) == span.stop - span.first > 0, f"{span.key}: not every frame of its clip drawn"
            view = np.array(span.views, np.float32)
            scale, offset = view[:, None, :1], view[:, None, 1:]
            keypoint, score = observe(np.array(span.joints, np.float32) * scale + offset, BODY * view[:, 0],
                                      fps=fps, size=size, config=config, rng=rng)
            if span.coach is not None:
                coach, coach_score = observe(np.array(span.coach, np.float32)[None] * scale + offset,
                                             BODY * view[:, 0], fps=fps, size=size, config=config, rng=rng,
                                             found=COACH_SCORE)
                keypoint, score = np.stack([keypoint, coach]), np.stack([score, coach_score])
            else:
                keypoint, score = keypoint[None], score[None]
            out.append(PoseRecord(key=span.key, label=span.glabel, img_shape=size, total_frames=len(span.joints),
                                  keypoint=keypoint, score=score))
        return out


def joint_speed(joints: np.ndarray, body_px: np.ndarray, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Each joint's velocity (T, 17, 2: pixels per frame, central differences, one-sided
    at the ends) and speed (T, 17: body lengths per second) over ``joints`` (T, 17, 2
    pixels); ``body_px``: the body length in pixels in each frame (T,)."""
    velocity = np.gradient(joints, axis=0) if len(joints) > 1 else np.zeros_like(joints)
    speed = np.linalg.norm(velocity, axis=-1) * fps / body_px[:, None]
    return velocity, speed


def observe(joints: np.ndarray, body_px: np.ndarray, *, fps: float, size: tuple[int, int], config: SynthConfig,
            rng: np.random.Generator, found: tuple[float, float] = FOUND_SCORE) -> tuple[np.ndarray, np.ndarray]:
    """What an estimator reports of one person's true ``joints`` (T, 17, 2, pixels of
    frames ``size`` = (height, width)): keypoints (T, 17, 2) and scores (T, 17), float32.
    ``body_px``: the body length in pixels per frame (T,); ``found``: the range of the
    scores of the joints it finds."""
    frames = len(joints)
    height, width = size
    velocity, speed = joint_speed(joints, body_px, fps)
    score = rng.uniform(*found, (frames, JOINTS))
    keypoint = joints + rng.normal(0.0, config.pose_jitter * height / 360.0, joints.shape)
    if config.pose_miss_speed is not None:
        missed = speed > config.pose_miss_speed
        # Anywhere along the streak the joint blurs over in one frame's exposure.
        keypoint -= np.where(missed[..., None], velocity * rng.uniform(0.0, 1.0, (frames, JOINTS, 1)), 0.0)
        score = np.where(missed, rng.uniform(*MISSED_SCORE, (frames, JOINTS)), score)
    outside = ((keypoint[..., 0] < 0) | (keypoint[..., 0] > width - 1)
               | (keypoint[..., 1] < 0) | (keypoint[..., 1] > height - 1))
    keypoint = np.stack([np.clip(keypoint[..., 0], 0, width - 1), np.clip(keypoint[..., 1], 0, height - 1)], -1)
    return keypoint.astype(np.float32), np.where(outside, 0.0, score).astype(np.float32)
