"""One window of a video as a stream of chunks: frames, and with a flow method their
optical flow, the last frame of each chunk carried into the next so that no pair is lost
at a chunk boundary. Clip cutting (``preprocess/clips.py``) and snippet extraction
(``localize/extract.py``) both read videos through it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from .decode import WindowDecoder
from .flow import FlowMethod


@dataclass
class StreamChunk:
    """Consecutive frames of a window.

    times_s: (n,) seconds in the video. rgb: (n, H, W, 3) uint8, pixels after resizing.
    grey: (n, H, W) uint8, where grey frames or flow were asked for, else None.
    flow: (p, H, W, 2) float32 pixels, where a flow method was given, else None: pair j
    runs from window frame ``first_pair + j`` to the next; the first chunk has n - 1
    pairs, every later one n (its first pair starts at the previous chunk's last frame).
    first: the window frame number of ``rgb[0]`` (frames counted from 0 in the window).
    """

    times_s: np.ndarray
    rgb: np.ndarray
    grey: np.ndarray | None
    flow: np.ndarray | None
    first: int

    @property
    def first_pair(self) -> int:
        return self.first - 1 if self.first else 0


def frame_stream(decoder: WindowDecoder, start_s: float, end_s: float, *, max_fps: float | None, chunk_frames: int,
                 flow: FlowMethod | None = None, grey: bool = False,
                 seconds: dict[str, float] | None = None) -> Iterator[StreamChunk]:
    """The frames of [``start_s``, ``end_s``) seconds (at most ``max_fps`` frames per
    second), ``chunk_frames`` at a time, with their grey frames (``grey``) and flow
    (``flow``). ``seconds``, when given, gains the wall seconds spent decoding
    ("decode") and making grey frames and flow ("flow")."""
    seconds = seconds if seconds is not None else {}
    chunks = decoder.iter_decode(start_s, end_s, max_fps=max_fps, chunk_frames=chunk_frames)
    prev: np.ndarray | None = None  # the last grey frame so far: the first frame of the next chunk's first pair
    seen = 0
    while True:
        t0 = time.perf_counter()
        chunk = next(chunks, None)
        seconds["decode"] = seconds.get("decode", 0.0) + time.perf_counter() - t0
        if chunk is None:
            return
        t0 = time.perf_counter()
        g = fields = None
        if grey or flow is not None:
            g = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in chunk.rgb])  # (n, H, W)
        if flow is not None:
            fields = flow(g, prev)  # (p, H, W, 2)
            prev = g[-1]
        seconds["flow"] = seconds.get("flow", 0.0) + time.perf_counter() - t0
        yield StreamChunk(times_s=chunk.times_s, rgb=chunk.rgb, grey=g, flow=fields, first=seen)
        seen += len(chunk.times_s)
