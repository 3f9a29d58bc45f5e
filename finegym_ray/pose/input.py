"""What a pose model is fed, from one sub-action's poses (``dataset/poses.py``
PoseRecord): a fixed number of frames sampled over the sub-action, a fixed number of
people, and either skeletons for ST-GCN or heatmap volumes for the PoseC3D-style model.
Numpy only, so that data workers build them.

Frames: PoseC3D's uniform sampling, which is TSN's segment sampling of one frame
(``dataset/sampling.py`` SegmentSampler): the sub-action cut into ``frames`` equal spans
and one frame taken from each (anywhere in it when training, its middle otherwise), so a
short sub-action repeats frames and a long one is seen whole; at test, each of several
views takes another point of every span. People: the ``persons``
with the highest mean joint score (the gymnast, before a coach or a judge), zeros
where fewer were found. Skeletons are placed in the box of every joint seen in the
sample (``heatmaps.pose_box``), x and y in [-1, 1], the score as a third channel, zeros
where a joint was not seen. A sample may be mirrored left to right (``mirror``),
swapping left and right joints, as a gymnast may turn either way.
"""

from __future__ import annotations

import numpy as np

from ..dataset.heatmaps import keypoint_volume, limb_volume, pose_box
from ..dataset.poses import COCO17, PoseRecord
from ..dataset.sampling import SegmentSampler

# Each joint's mirror image: left <-> right.
MIRROR = tuple(COCO17.index(n.replace("left_", "right_") if n.startswith("left_") else
                            n.replace("right_", "left_") if n.startswith("right_") else n) for n in COCO17)


def select_persons(keypoint: np.ndarray, score: np.ndarray, persons: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``persons`` people of highest mean score: (persons, T, 17, 2) and
    (persons, T, 17), zero-padded when fewer were found."""
    order = np.argsort(-score.mean(axis=(1, 2)), kind="stable")[:persons]
    kp = np.zeros((persons, *keypoint.shape[1:]), np.float32)
    sc = np.zeros((persons, *score.shape[1:]), np.float32)
    kp[:len(order)], sc[:len(order)] = keypoint[order], score[order]
    return kp, sc


def frame_index(total_frames: int, frames: int, *, rng: np.random.Generator | None = None, view: int = 0,
                views: int = 1) -> np.ndarray:
    """(frames,) int64: one frame of each of ``frames`` equal spans of ``total_frames``,
    anywhere in it with ``rng`` (training), else at (view + 0.5) / views of it (test
    view ``view`` of ``views``; one view: the middle)."""
    sampler = SegmentSampler(frames)
    return (sampler.train(total_frames, rng) if rng is not None else sampler.test(total_frames, view, views))[:, 0]


def _sampled(record: PoseRecord, *, frames: int, persons: int, rng: np.random.Generator | None, view: int,
             views: int, mirror: bool) -> tuple[np.ndarray, np.ndarray]:
    index = frame_index(record.total_frames, frames, rng=rng, view=view, views=views)
    kp, sc = select_persons(record.keypoint[:, index], record.score[:, index], persons)
    if mirror:
        width = record.img_shape[1]
        kp = kp[:, :, MIRROR] * np.array([-1, 1], np.float32) + np.array([width, 0], np.float32)
        sc = sc[:, :, MIRROR]
    return kp, sc


def skeleton_input(record: PoseRecord, *, frames: int, persons: int, rng: np.random.Generator | None = None,
                   view: int = 0, views: int = 1, mirror: bool = False) -> np.ndarray:
    """(persons, frames, 17, 3) float32: x, y in [-1, 1] of the sample's pose box and the
    joint's score; ST-GCN's input (``in_channels=3``). Frames by :func:`frame_index`;
    ``mirror``: left to right, left and right joints swapped."""
    kp, sc = _sampled(record, frames=frames, persons=persons, rng=rng, view=view, views=views, mirror=mirror)
    x0, y0, side = pose_box(kp, sc)
    xy = (kp - np.array([x0, y0], np.float32)) * np.float32(2 / side) - 1
    seen = (sc > 0)[..., None]
    return np.concatenate([np.where(seen, xy, 0), sc[..., None]], axis=-1).astype(np.float32)


def heatmap_input(record: PoseRecord, *, frames: int, persons: int, limbs: bool = False, size: int = 56,
                  sigma: float = 0.6, rng: np.random.Generator | None = None, view: int = 0, views: int = 1,
                  mirror: bool = False) -> np.ndarray:
    """(K, frames, size, size) float32 heatmap volume: K = 17 joints, or the bones with
    ``limbs``; the PoseC3D-style model's input. Frames and ``mirror`` as
    :func:`skeleton_input`'s."""
    kp, sc = _sampled(record, frames=frames, persons=persons, rng=rng, view=view, views=views, mirror=mirror)
    draw = limb_volume if limbs else keypoint_volume
    return draw(kp, sc, size=size, sigma=sigma)
