"""Small real H.264 test videos whose frames show their own frame number.

Each frame carries its number as ``BITS`` vertical bars across the full width (bit 9
leftmost; white = 1, black = 0), so a test can read back which frame it got at any
resize. Videos are written with PyAV/libx264 (yuv420p, B-frames on, fixed GOP with
scene-cut detection off so that "mid-GOP" means what it says).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 10  # up to 1024 frames
WHITE, BLACK = 235, 16


def frame_image(number: int, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 RGB showing ``number`` as bars."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    edges = np.linspace(0, width, BITS + 1).round().astype(int)
    for bit in range(BITS):
        on = (number >> (BITS - 1 - bit)) & 1
        img[:, edges[bit]:edges[bit + 1]] = WHITE if on else BLACK
    return img


def read_number(rgb: np.ndarray) -> int:
    """The frame number shown by a decoded (H, W, 3) frame, at any size."""
    height, width = rgb.shape[:2]
    row = rgb[height // 2].astype(np.float32).mean(axis=1)
    centres = ((np.arange(BITS) + 0.5) * width / BITS).astype(int)
    bits = row[centres] > (WHITE + BLACK) / 2
    return int(sum(int(b) << (BITS - 1 - i) for i, b in enumerate(bits)))


def read_numbers(rgb: np.ndarray) -> list[int]:
    return [read_number(f) for f in rgb]


def write_video(path: Path, *, rate: Fraction | int, pts: list[int] | None = None, num_frames: int = 100,
                time_base: Fraction | None = None, size: tuple[int, int] = (160, 90), gop: int = 25,
                faststart: bool = False, bframes: int = 2) -> Path:
    """Write an mp4. Frame i has pts ``pts[i]`` in ``time_base`` (default: i in 1/rate),
    so its time in seconds is ``pts[i] * time_base``."""
    width, height = size
    if pts is None:
        pts = list(range(num_frames))
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}",
                          "preset": "veryfast", "crf": "18"}
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        for number, ts in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(frame_image(number, width, height), format="rgb24")
            frame.pts = ts
            if time_base is not None:
                frame.time_base = time_base
            _encode(container, stream, frame)
        _encode(container, stream, None)
    return path


def _encode(container, stream, frame) -> None:
    """Mux what ``stream`` makes of ``frame`` (None: flush the encoder)."""
    for packet in stream.encode(frame):
        container.mux(packet)


def write_audio_only(path: Path) -> Path:
    """A WAV file: a real media file without a video stream."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        samples = np.zeros((1, 800), dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        _encode(container, stream, frame)
        _encode(container, stream, None)
    return path


def write_blank_video(path: Path, *, size: tuple[int, int], num_frames: int = 3, rate: int = 25) -> Path:
    """An mp4 of ``num_frames`` black frames of ``size`` (width, height) pixels: large
    frame sizes cheaply (4128x4096 takes well under a second and a few KB)."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for number in range(num_frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frame.pts = number
            _encode(container, stream, frame)
        _encode(container, stream, None)
    return path
