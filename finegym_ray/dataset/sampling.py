"""Which frames of a clip a model sees: segment sampling (TSN, TRN, TSM) and dense clips (I3D).

Both return frame indices into a clip of ``num_items`` items (frames for RGB, flow
fields for flow, which has one fewer than frames). Training draws with a numpy
Generator; testing is deterministic. A clip shorter than the request does not fail:
FineGym has sub-actions of a handful of frames. Segments then share items (a stack of
consecutive flow fields repeats its last one); a dense clip shrinks its stride so that
it still spans the whole clip, in order (see DenseSampler).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class SegmentSampler:
    """TSN sampling: the clip is cut into ``segments`` equal parts and ``length``
    consecutive items are taken in each (length > 1 stacks flow fields, e.g. 5 x/y pairs).

    Training: a random start in each segment. Testing: view ``view`` of ``views``
    evenly spaced positions in each segment (view 0 of 1 is the segment centre).
    Returns (segments, length) int64 indices.
    """

    segments: int
    length: int = 1

    def __post_init__(self) -> None:
        if self.segments < 1 or self.length < 1:
            raise InputError(f"segments and length must be >= 1, got {self.segments}, {self.length}")

    def train(self, num_items: int, rng: np.random.Generator) -> np.ndarray:
        starts_span = max(num_items - self.length + 1, 1)
        edges = np.linspace(0, starts_span, self.segments + 1)
        lo = np.floor(edges[:-1]).astype(np.int64)
        hi = np.maximum(np.floor(edges[1:]).astype(np.int64), lo + 1)
        starts = rng.integers(lo, hi)
        return self._expand(starts, num_items)

    def test(self, num_items: int, view: int = 0, views: int = 1) -> np.ndarray:
        if not 0 <= view < views:
            raise InputError(f"view must be in [0, {views}), got {view}")
        starts_span = max(num_items - self.length + 1, 1)
        width = starts_span / self.segments
        # Position (view + 0.5) / views inside each segment: one view is the centre.
        starts = np.floor(width * (np.arange(self.segments) + (view + 0.5) / views)).astype(np.int64)
        return self._expand(np.minimum(starts, starts_span - 1), num_items)

    def _expand(self, starts: np.ndarray, num_items: int) -> np.ndarray:
        idx = starts[:, None] + np.arange(self.length)[None, :]
        return np.minimum(idx, max(num_items - 1, 0))


@dataclass(frozen=True)
class DenseSampler:
    """I3D sampling: ``length`` items ``stride`` apart, one window of the clip.

    Training: a random window start. Testing: window ``view`` of ``views`` starts, as
    mmaction2's ``SampleFrames`` (test mode) places them: one view at the centre,
    ``(num_items - span) // 2``; several from the first possible start to the last,
    ``round(view * (num_items - span) / (views - 1))``. Returns (1, length) int64
    indices, the same layout as SegmentSampler.

    A clip shorter than ``span`` items is sampled at the centres of ``length`` equal
    parts of it, in training and at test alike (there is no room for another start):
    the stride shrinks evenly, so the window covers the whole sub-action once and in
    order (a 20-frame clip gives all 20 frames, 12 of them twice, for 32 frames 2 apart),
    and a clip under ``length`` items repeats each of them evenly. Not mmaction2's
    default (``out_of_bound_opt='loop'``, indices modulo the clip), which plays the clip
    two or three times with a cut back to its start: FineGym's classes differ by how
    many turns or saltos an element has, which a replay multiplies. Nor the old repeat
    of the last item, which left I3D 11 distinct frames of a 20-frame sub-action.
    """

    length: int
    stride: int = 1

    def __post_init__(self) -> None:
        if self.length < 1 or self.stride < 1:
            raise InputError(f"length and stride must be >= 1, got {self.length}, {self.stride}")

    @property
    def span(self) -> int:
        """Items one window covers."""
        return (self.length - 1) * self.stride + 1

    def train(self, num_items: int, rng: np.random.Generator) -> np.ndarray:
        if num_items < self.span:
            return self._spread(num_items)
        start = int(rng.integers(0, num_items - self.span + 1))
        return self._window(start)

    def test(self, num_items: int, view: int = 0, views: int = 1) -> np.ndarray:
        if not 0 <= view < views:
            raise InputError(f"view must be in [0, {views}), got {view}")
        if num_items < self.span:
            return self._spread(num_items)
        max_offset = num_items - self.span
        # mmaction2 SampleFrames._get_test_clips (num_clips = views, no twice_sample).
        start = max_offset // 2 if views == 1 else int(np.round(view * max_offset / (views - 1)))
        return self._window(start)

    def _window(self, start: int) -> np.ndarray:
        return (start + self.stride * np.arange(self.length, dtype=np.int64))[None, :]

    def _spread(self, num_items: int) -> np.ndarray:
        # Centre of part i of length equal parts: floor((i + 0.5) * n / length), in integers.
        i = np.arange(self.length, dtype=np.int64)
        return ((2 * i + 1) * max(num_items, 0) // (2 * self.length))[None, :]
